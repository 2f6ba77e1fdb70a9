"""The memory cases of `step_time.py`: every variant in its own process.

`memory_cases` runs `step_time.py --child-memory VARIANT` once per variant
and assembles the rows of results.json's `memory` (and, with a GPU,
`device_memory`); `jax_device_memory_case` runs `--child-device-memory`.
The probes themselves are `step_probes.py`'s.
"""

import gc
import json
import os
import sys

import measure
import step_probes
from step_time_networks import SIZES, VARIANTS, batch_key, build_variants, check_sites, make_batch

# The children run the benchmark's own command line.
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "step_time.py")


def _ratios(values):
    return {
        "linear_over_exact": measure.ratio(values["linear_model"], values["exact"]),
        "linear_over_identity": measure.ratio(values["linear_model"], values["identity"]),
        "layers_over_identity": measure.ratio(values["linear_layers"], values["identity"]),
        "model_over_layers": measure.ratio(values["linear_model"], values["linear_layers"]),
    }


def memory_jit_modes():
    # JAX's compiled temp size does not depend on `jit_compile`: once.
    return {"tensorflow": (False, True), "jax": (True,), "torch": (False,)}[measure.BACKEND]


def memory_of_variant(variant, models, config):
    """Memory of `variant` for every model and `jit_compile`, one model
    alive at a time: [{model, jit_compile, mib, ...}]."""
    import keras

    sizes = config["memory"]
    rows = []
    for model_name in models:
        x, y = make_batch(model_name, sizes, batch_key(model_name))
        for jit_compile in memory_jit_modes():
            keras.backend.clear_session()
            gc.collect()
            (model,) = build_variants(model_name, sizes, jit_compile, (variant,)).values()
            model.train_on_batch(x, y)  # trace / compile outside the measurement
            if variant == "linear_model":
                check_sites(model_name, model, sizes)
            rows.append({"model": model_name, "jit_compile": jit_compile,
                         **step_probes.step_memory(model, x, y)})
            del model
    return rows


def _child_command(*options):
    """This script in a fresh process, on this backend, writing nowhere."""
    command = [sys.executable, SCRIPT, "--backend", measure.BACKEND]
    return command + ["--out", "-", *options]


def memory_cases(args):
    """Memory of every variant, each variant in its own process.

    An allocator's peak depends on what the process allocated before
    (TensorFlow's BFC allocator serves a request from a free chunk up to
    twice its size without splitting it, and counts the whole chunk), so
    measuring the variants one after another in one process lets the exact
    network's large free chunks inflate the peaks of the variants measured
    after it. In its own process every variant has the same history: the
    same sequence of models, its own. (`--smoke`: all in this process.)
    Returns (memory rows, device memory rows, errors)."""
    if args.smoke:
        # `--smoke` measures nothing (it checks the plumbing in seconds): the
        # variants one after another in this process, not four fresh
        # processes, each of which would spend longer importing its
        # framework than the tiny networks take. Same rows, same results.json.
        # What is alive now (the framework's modules: ~400k objects) is
        # never garbage: frozen, each probe's gc.collect skips it (0.2 s each).
        gc.collect()
        gc.freeze()
        children = {
            variant: measure.Child(0, memory_of_variant(variant, args.models, SIZES["smoke"]), None)
            for variant in VARIANTS
        }
    else:
        size = ["--quick"] if args.quick else []
        command = _child_command("--models", ",".join(args.models), *size)
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        # On a CPU one at a time (2 cores here); with a GPU the four at once
        # (a process's allocator peak is its own; a GPU machine has the cores).
        children = measure.run_children(
            {variant: command + ["--child-memory", variant] for variant in VARIANTS},
            parallel=measure.ON_GPU,
            env=env,
        )
    by_variant, errors = {}, []
    for variant, child in children.items():
        if child.result is None:
            errors.append(f"memory of {variant}: child exited with {child.returncode}")
            continue
        by_variant[variant] = {(row["model"], row["jit_compile"]): row for row in child.result}
        print(f"measured memory {variant}", flush=True)
    memory, device_memory = [], []
    if len(by_variant) < len(VARIANTS):
        return memory, device_memory, errors
    for model_name in args.models:
        for jit_compile in memory_jit_modes():
            rows = {variant: by_variant[variant][(model_name, jit_compile)] for variant in VARIANTS}
            mib = {variant: row["mib"] for variant, row in rows.items()}
            case = {
                "model": model_name,
                "jit_compile": jit_compile,
                "metric": step_probes.MEMORY_METRIC[measure.BACKEND],
                "mib": {variant: round(value, 2) for variant, value in mib.items()},
                **_ratios(mib),
            }
            if measure.BACKEND == "torch":
                case["saved_mib_all"] = {v: round(r["saved_mib_all"], 2) for v, r in rows.items()}
                case["saved_tensors"] = {v: r["saved_tensors"] for v, r in rows.items()}
            if measure.BACKEND == "tensorflow":
                # The field names of 0.1's results.json.
                case["peak_mib"] = {"exact": case["mib"]["exact"], "linear": case["mib"]["linear_model"]}
            memory.append(case)
            device_errors = [row["device_error"] for row in rows.values() if "device_error" in row]
            errors += device_errors
            if not device_errors and all("device_mib" in row for row in rows.values()):
                device_mib = {variant: row["device_mib"] for variant, row in rows.items()}
                device_memory.append(
                    {
                        "model": model_name,
                        "jit_compile": jit_compile,
                        "metric": "torch_cuda_max_memory_allocated",
                        "mib": {variant: round(value, 2) for variant, value in device_mib.items()},
                        **_ratios(device_mib),
                    }
                )
    return memory, device_memory, errors


def jax_device_memory_case(model_name, jit_compile, size_name):
    """JAX device peak of one step per variant, each in a fresh process (the
    four at once: each process has its own allocator and its own peak)."""
    spec = f"{model_name},{{}},{int(jit_compile)},{size_name}"
    # The parent holds its own device memory: no preallocation in the child.
    children = measure.run_children(
        {v: _child_command("--child-device-memory", spec.format(v)) for v in VARIANTS},
        parallel=True,
        env=dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false"),
    )
    mib, raised = {}, {}
    for variant, child in children.items():
        if child.result is None:
            raise RuntimeError(f"{variant}: child exited with {child.returncode}")
        if "error" in child.result:
            raise RuntimeError(child.result["error"])
        mib[variant] = child.result["mib"]
        raised[variant] = child.result["peak_raised_by_measured_step"]
    return {
        "model": model_name,
        "jit_compile": jit_compile,
        "metric": "jax_device_peak_bytes_in_use",
        "mib": {variant: round(value, 2) for variant, value in mib.items()},
        **_ratios(mib),
        "peak_raised_by_measured_step": raised,
        # Not raised: the figure is the peak of the earlier steps (the
        # compiling one included) minus the memory in use before the
        # measured step, an upper bound of the measured step's own.
        "upper_bound": not all(raised.values()),
    }


def child_memory(variant, args, config):
    """In a fresh process: `memory_of_variant` as one JSON line."""
    print(json.dumps(memory_of_variant(variant, args.models, config)))


def child_device_memory(spec):
    """In a fresh process: `step_probes.jax_device_step_mib` as one JSON line."""
    model_name, variant, jit_compile, size_name = spec.split(",")
    sizes = SIZES[size_name]["memory"]
    x, y = make_batch(model_name, sizes, batch_key(model_name))
    (model,) = build_variants(model_name, sizes, bool(int(jit_compile)), (variant,)).values()
    print(json.dumps(step_probes.jax_device_step_mib(model, x, y)))
