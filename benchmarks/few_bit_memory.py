"""Few-bit and from-output backward: step memory and step time against exact, linear and Keras's remat.

Variants of one model, same weights:

- `exact`: the plain `keras.Model`;
- `linear`: `LinearBackpropModel.from_model(model)` (a site keeps nothing);
- `few_bit_1` .. `few_bit_4`: `from_model(model, backprop="few_bit", bits=b)`
  (a site keeps b-bit packed codes of its input);
- `from_output`: `from_model(model, backprop="from_output")` (exact
  gradients; a site keeps its output, which the next layer keeps anyway,
  and one branch bit per element for gelu / silu);
- `remat_activations`: the plain model built inside
  `keras.RematScope(mode="activations")`, Keras's own answer to activation
  memory (the activations of layers with an `activation=` are recomputed in
  the backward pass).

Models: `GeluMLP` (256 -> 4 x Dense(1024, gelu) -> Dense(10), batch 512),
`GeluMLPDropout` (the same with Dropout(0.1) after each GELU: the output a
from-output site keeps is then not the next Dense's input) and
the keras.applications / keras-hub models of `real_models.py`
(`real_model_builders.py`: random weights, small configs, no download;
keras-hub is the `[hub]` extra).

Memory, each variant in its own process (an allocator's peak depends on
what the process allocated before), the models one after another:
TensorFlow, the allocator peak of one `train_on_batch` minus the memory in
use before it, graph mode (`jit_compile=False`) and XLA (`True`), median of
3 steps after a tracing step; JAX, the temp buffers of Keras's training step
compiled as Keras compiles it; PyTorch, the bytes saved for the backward
pass (`saved_tensors_hooks`, weights excluded). See `step_probes.py`.

Step time (`--time-models`, default GeluMLP): the variants exact, linear,
few_bit_2 and remat_activations in one process, interleaved rounds, process
CPU time per step with the framework pinned to one thread; each ratio is the
median over rounds of the ratio within a round (`measure.py`).

Every variant uses SGD with learning rate 0, so each step does the same
arithmetic on the same weights.

    python benchmarks/few_bit_memory.py --backend tensorflow --out results/few_bit_memory/tensorflow
    python benchmarks/few_bit_memory.py --backend jax --out results/few_bit_memory/jax
    python benchmarks/few_bit_memory.py --backend torch --out results/few_bit_memory/torch
    python benchmarks/few_bit_memory.py --out /tmp/fbm --models GeluMLP --quick   # a minute or two
    python benchmarks/few_bit_memory.py --out /tmp/fbm --smoke   # plumbing only, seconds

`--smoke` (for tests: a tiny GeluMLP, memory in this process) measures
nothing; it writes the same results.json.
"""

import argparse
import gc
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import measure  # noqa: E402  (the method: pinning, interleaving, children, results)

VARIANTS = ("exact", "linear", "few_bit_1", "few_bit_2", "few_bit_3", "few_bit_4",
            "from_output", "remat_activations")
TIMED_VARIANTS = ("exact", "linear", "few_bit_2", "from_output", "remat_activations")
MODELS = ("GeluMLP", "GeluMLPDropout", "GPT2", "BERT", "ViT", "Gemma", "Llama", "EfficientNetB0", "ConvNeXtTiny",
          "MobileNetV2")
HUB_MODELS = ("GPT2", "BERT", "ViT", "Gemma", "Llama")


# GeluMLP's (width, batch) per size: the default, `--quick`, `--smoke`.
GELU_MLP_SIZES = {"full": (1024, 512), "quick": (128, 64), "smoke": (32, 16)}


def gelu_mlp(size="full", dropout=0.0):
    """GeluMLP; with `dropout`, a Dropout after each GELU (GeluMLPDropout:
    the Dense then keeps the dropped tensor, not the GELU's output)."""
    import keras
    import numpy as np

    width, batch = GELU_MLP_SIZES[size]
    inputs = keras.Input((256,))
    hidden = inputs
    for _ in range(4):
        hidden = keras.layers.Dense(width, activation="gelu")(hidden)
        if dropout:
            hidden = keras.layers.Dropout(dropout)(hidden)
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden), name="gelu_mlp")
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.normal(size=(batch, 256)).astype("float32"))
    y = keras.ops.convert_to_tensor(rng.integers(0, 10, size=(batch,)).astype("int64"))
    return model, (x, y)


def build_variant(model_name, variant, jit_compile, size="full"):
    """(compiled model, batch) of one variant."""
    import keras

    import keras_linbp

    def build():
        if model_name == "GeluMLP":
            return gelu_mlp(size)
        if model_name == "GeluMLPDropout":
            return gelu_mlp(size, dropout=0.1)
        import real_model_builders

        return real_model_builders.BUILDERS[model_name]()

    keras.utils.set_random_seed(0)  # the same weights for every variant
    if variant == "remat_activations":
        with keras.RematScope(mode="activations"):
            model, batch = build()
    else:
        model, batch = build()
    if variant == "linear":
        model = keras_linbp.LinearBackpropModel.from_model(model)
    elif variant == "from_output":
        model = keras_linbp.LinearBackpropModel.from_model(model, backprop="from_output")
    elif variant.startswith("few_bit_"):
        bits = int(variant.rsplit("_", 1)[1])
        model = keras_linbp.LinearBackpropModel.from_model(model, backprop="few_bit", bits=bits)
    model.compile(
        keras.optimizers.SGD(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model, batch


def jit_modes():
    # JAX's compiled temp size is the same whatever jit_compile; PyTorch eager.
    return {"tensorflow": (False, True), "jax": (True,), "torch": (False,)}[measure.BACKEND]


def memory_of_variant(variant, models, size):
    """In a fresh process (`--smoke`: in this one): [{model, jit_compile,
    mib}] of one variant."""
    import keras
    import step_probes

    rows = []
    for model_name in models:
        for jit_compile in jit_modes():
            keras.backend.clear_session()
            gc.collect()
            model, (x, y) = build_variant(model_name, variant, jit_compile, size)
            model.train_on_batch(x, y)  # trace / compile outside the measurement
            rows.append({"model": model_name, "jit_compile": jit_compile,
                         **step_probes.step_memory(model, x, y)})
            del model
    return rows


def memory_cases(args):
    """Every variant in its own process, one after another (2 cores here);
    `--smoke`, which measures nothing, in this process."""
    if args.smoke:
        # Seven fresh processes would spend far longer importing the
        # framework than the tiny model takes. What is alive now (the
        # framework's modules) is never garbage: frozen, each probe's
        # gc.collect skips it.
        gc.collect()
        gc.freeze()
        children = {variant: measure.Child(0, memory_of_variant(variant, args.models, args.size), None)
                    for variant in VARIANTS}
    else:
        command = [sys.executable, __file__, "--backend", measure.BACKEND, "--out", "-",
                   "--models", *args.models] + (["--quick"] if args.quick else [])
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        children = measure.run_children(
            {variant: command + ["--child-memory", variant] for variant in VARIANTS},
            parallel=measure.ON_GPU, env=env)
    by_key, errors = {}, []
    for variant, child in children.items():
        if child.result is None:
            errors.append(f"memory of {variant}: child exited with {child.returncode}")
            continue
        for row in child.result:
            by_key.setdefault((row["model"], row["jit_compile"]), {})[variant] = row["mib"]
        print(f"measured memory {variant}", flush=True)
    cases = []
    for (model_name, jit_compile), mib in by_key.items():
        case = {"model": model_name, "jit_compile": jit_compile,
                "mib": {v: round(m, 2) for v, m in mib.items()}}
        for variant in VARIANTS[1:]:
            if variant in mib and "exact" in mib:
                case[f"{variant}_over_exact"] = measure.ratio(mib[variant], mib["exact"])
        if {"few_bit_2", "linear", "remat_activations"} <= set(mib):
            case["few_bit_2_over_linear"] = measure.ratio(mib["few_bit_2"], mib["linear"])
            case["few_bit_2_over_remat"] = measure.ratio(mib["few_bit_2"], mib["remat_activations"])
        if {"from_output", "few_bit_1", "linear"} <= set(mib):
            case["from_output_over_few_bit_1"] = measure.ratio(mib["from_output"], mib["few_bit_1"])
            case["from_output_over_linear"] = measure.ratio(mib["from_output"], mib["linear"])
        cases.append(case)
    return cases, errors


def time_case(model_name, jit_compile, args):
    import keras

    models, batch = {}, None
    for variant in TIMED_VARIANTS:
        models[variant], batch = build_variant(model_name, variant, jit_compile, args.size)
    x, y = batch
    slowest = measure.slowest_step_seconds(models, x, y, warmup_steps=2, timed_steps=3)
    steps = max(2, int(args.block_seconds / max(slowest, 1e-4)))
    cpu, _ = measure.time_interleaved(models, x, y, steps, args.repeats)
    keras.backend.clear_session()
    return {
        "model": model_name, "jit_compile": jit_compile, "clock": "process_cpu",
        "ms_per_step": measure.medians(cpu, 4),
        **{f"{v}_over_exact": measure.paired_ratio(cpu, v, "exact") for v in TIMED_VARIANTS[1:]},
        "steps_per_block": steps, "repeats": args.repeats,
    }


def targets(results):
    """The issue's targets, each with the cases that miss it."""
    memory = results["memory"]
    under_xla = [c for c in memory if c["jit_compile"] and "few_bit_2_over_linear" in c]
    return {
        "few_bit_2 <= 1.35x linear memory (XLA / JAX)": {
            "misses": [c["model"] for c in under_xla if c["few_bit_2_over_linear"] > 1.35],
            "cases": len(under_xla)},
        "few_bit_2 below remat_activations memory": {
            "misses": [f"{c['model']} jit={c['jit_compile']}" for c in memory
                       if c.get("few_bit_2_over_remat") is not None
                       and c["few_bit_2_over_remat"] >= 1.0],
            "cases": sum("few_bit_2_over_remat" in c for c in memory)},
        "from_output <= 1.03x few_bit_1 memory": {
            "misses": [f"{c['model']} jit={c['jit_compile']}" for c in memory
                       if c.get("from_output_over_few_bit_1", 0) > 1.03],
            "cases": sum("from_output_over_few_bit_1" in c for c in memory)},
        "from_output below linear memory": {
            "misses": [f"{c['model']} jit={c['jit_compile']}" for c in memory
                       if c.get("from_output_over_linear", 0) >= 1.0],
            "cases": sum("from_output_over_linear" in c for c in memory)},
        "from_output step time <= 1.05x exact (XLA / JAX), <= 1.10x (TF graph, eager)": {
            "misses": [f"{c['model']} jit={c['jit_compile']}" for c in results["time"]
                       if c["from_output_over_exact"] > (1.05 if c["jit_compile"] else 1.10)],
            "cases": len(results["time"])},
        "few_bit_2 step time <= 1.10x exact": {
            "misses": [f"{c['model']} jit={c['jit_compile']}" for c in results["time"]
                       if c["few_bit_2_over_exact"] > 1.10],
            "cases": len(results["time"])},
    }


def markdown(results):
    lines = [f"Memory ({results['config']['memory_metric']}), MiB and x exact:", "",
             "| model | jit_compile | " + " | ".join(VARIANTS)
             + " | 2 bits / linear | 2 bits / remat | from_output / 1 bit | from_output / linear |",
             "|---" * (len(VARIANTS) + 6) + "|"]
    for case in results["memory"]:
        cells = []
        for variant in VARIANTS:
            mib = case["mib"].get(variant)
            ratio = case.get(f"{variant}_over_exact")
            cells.append("–" if mib is None else f"{mib:.1f}" + ("" if ratio is None else f" ({ratio:.2f}×)"))
        lines.append(f"| {case['model']} | {case['jit_compile']} | " + " | ".join(cells)
                     + f" | {case.get('few_bit_2_over_linear', '–')} | {case.get('few_bit_2_over_remat', '–')}"
                     + f" | {case.get('from_output_over_few_bit_1', '–')} | {case.get('from_output_over_linear', '–')} |")
    if results["time"]:
        lines += ["", "Step time, process CPU, one thread, x exact (median of paired rounds):", "",
                  "| model | jit_compile | exact ms | " + " | ".join(TIMED_VARIANTS[1:]) + " |",
                  "|---" * (len(TIMED_VARIANTS) + 2) + "|"]
        for case in results["time"]:
            lines.append(f"| {case['model']} | {case['jit_compile']} | {case['ms_per_step']['exact']} | "
                         + " | ".join(f"{case[f'{v}_over_exact']}" for v in TIMED_VARIANTS[1:]) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=measure.BACKENDS,
                        default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--out", required=True, help="directory for results.json and table.md")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None,
                        help="default: all (with --smoke: GeluMLP)")
    parser.add_argument("--time-models", nargs="*", choices=MODELS, default=["GeluMLP"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block-seconds", type=float, default=0.4)
    parser.add_argument("--quick", action="store_true",
                        help="a narrow GeluMLP, 3 rounds (each variant's memory in its own process)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny GeluMLP, memory in this process, for tests: seconds, no measurement")
    parser.add_argument("--child-memory", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.smoke:
        parser.error("--quick and --smoke exclude each other")
    args.size = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.models is None:
        args.models = ["GeluMLP"] if args.smoke else list(MODELS)
    if args.quick:
        args.repeats, args.block_seconds = 3, 0.05
    if args.smoke:
        args.repeats, args.block_seconds = 3, 0.005
    return args


def main(argv=None):
    args = parse_args(argv)
    keras = measure.setup_backend(args.backend)
    import importlib.util

    if importlib.util.find_spec("keras_hub") is None:
        skipped = [m for m in args.models if m in HUB_MODELS]
        if skipped:
            print(f"keras-hub is not installed (pip install -e '.[hub]'): {skipped} skipped")
        args.models = [m for m in args.models if m not in HUB_MODELS]
        args.time_models = [m for m in args.time_models if m not in HUB_MODELS]
    if args.child_memory:
        import json

        print(json.dumps(memory_of_variant(args.child_memory, args.models, args.size)))
        return None
    started = time.perf_counter()
    results = {"backend": measure.BACKEND, "memory": [], "time": [], "errors": []}
    for model_name in args.time_models:
        for jit_compile in jit_modes():
            results["time"].append(time_case(model_name, jit_compile, args))
            print(f"timed {model_name} jit_compile={jit_compile}", flush=True)
    results["memory"], results["errors"] = memory_cases(args)
    import step_probes

    results["targets"] = targets(results)
    results["config"] = {
        "backend": measure.BACKEND, "models": list(args.models), "quick": args.quick,
        "smoke": args.smoke, "memory_processes": "this one (--smoke)" if args.smoke else "one per variant",
        "time_models": list(args.time_models), "repeats": args.repeats,
        "block_seconds": args.block_seconds, "threads": measure.thread_config(),
        "device": measure.device_name(), "memory_metric": step_probes.MEMORY_DESCRIPTION[measure.BACKEND],
        "optimizer": "SGD(0.0)", **measure.FRAMEWORK_VERSION, "keras": keras.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "command": measure.repo_command(__file__, argv),
        "seconds": round(time.perf_counter() - started, 1),
    }
    table = markdown(results)
    measure.write_results(args.out, results, table)
    print(table)
    for error in results["errors"]:
        print(error)
    return results


if __name__ == "__main__":
    main()
