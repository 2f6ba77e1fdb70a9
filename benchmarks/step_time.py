"""Training-step time and memory: exact vs linear backprop, on every Keras backend.

For three networks -- an MLP with sigmoid, an MLP with GELU and a small CNN
with ReLU -- each with `jit_compile` False and True where the backend has it,
times one SGD training step (`train_on_batch` on a batch already on the
device) of four variants with identical weights:

- `exact`: a plain `keras.Model` (ordinary backprop);
- `linear_model`: `keras_linbp.LinearBackpropModel` over the same layers;
- `linear_layers`: a plain `keras.Model` whose layers use the hand-placed
  `keras_linbp.activations.linbp_*` activations;
- `identity`: the same network with no activation at all (the floor: same
  matmuls / convolutions, no non-linearity).

`--backend {tensorflow,jax,torch}` picks the Keras backend (default:
`KERAS_BACKEND`, else tensorflow); it is set before Keras is imported, and
the JAX and PyTorch runs never import TensorFlow, so they run where only
JAX or only PyTorch is installed. `jit_compile`: TensorFlow False (graph) /
True (XLA); JAX False (eager) / True (`jax.jit`); PyTorch False (eager)
only, plus True (`torch.compile`) with `--torch-compile`.

Method: the framework pinned to one CPU thread before any op runs
(TensorFlow: one intra-op and one inter-op thread; JAX:
`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`;
PyTorch: `torch.set_num_threads(1)`, `torch.set_num_interop_threads(1)`);
every variant traced / compiled and warmed up first; then `--repeats`
rounds in which the variants take turns (the order rotates each round), each
timing a block of steps. On CPU `ms_per_step` is the median over rounds of
the process CPU time per step (`time.process_time`: on a shared, loaded
machine wall time mostly measures the other processes; with one thread CPU
time is the step's own work); on a GPU it is wall time (`train_on_batch`
returns host numbers, so every step is synchronised). Each ratio is the
median over rounds of the ratio of two blocks of the same round. Wall-clock
medians are written too (`wall_ms_per_step`), as is a noise-free size of
each step (`step_size`): TensorFlow, nodes in the traced `train_step`
graph; JAX, equations in the jaxpr of `train_step` (sub-jaxprs included);
PyTorch, autograd nodes reachable from the loss of one `train_on_batch`.

Memory of one training step, all four variants, on larger batches (the
MLPs: 6 hidden layers of 1024, batch 2048; the CNN: batch 256), one model
alive at a time and each variant in its own process: an allocator's peak
depends on what the process allocated before (TensorFlow's, measured after
the exact network, read up to 40 % higher), and in its own process every
variant has the same history (the same sequence of models). With a GPU the
four processes run at once. (`--smoke`, which measures nothing, runs them
in this process.)

- TensorFlow (`tf_allocator_peak`): TF allocator peak during the step minus
  the memory in use just before it (`tf.config.experimental.get_memory_info`
  after `reset_memory_stats`).
- JAX (`jax_compiled_temp`): temp buffer size of Keras's own training step
  compiled as Keras compiles it (`jax.jit(model.train_step,
  donate_argnums=0).lower(state, data).compile().memory_analysis()
  .temp_size_in_bytes`); the same whatever `jit_compile`, so written once,
  under `jit_compile: true`.
- PyTorch (`torch_saved_for_backward`): bytes of the tensors saved for the
  backward pass during one `train_on_batch`
  (`torch.autograd.graph.saved_tensors_hooks`), each storage counted once and
  the model's weights left out (they are alive anyway); `saved_mib_all`
  adds every saved tensor as packed, weights and repeats included.
- With a GPU (`device_memory`): PyTorch `torch.cuda.max_memory_allocated`
  (reset before the step) minus the memory allocated before it, every
  model; JAX the device's `memory_stats()["peak_bytes_in_use"]` minus
  `bytes_in_use` before the measured step (after two warm-up steps), the
  GELU MLP, each variant and `jit_compile` in its own process (JAX cannot
  reset the peak). When the measured step does not raise the peak
  (`peak_raised_by_measured_step`), the figure is the earlier steps' peak,
  compilation included: an upper bound (`upper_bound: true`).

Where it lives: the method (thread pinning, interleaved rounds, medians, one
variant per process, results.json) in `benchmarks/measure.py`, the step size
and memory probes in `step_probes.py`; the cases in `step_time_networks.py`
(networks, variants, sizes) and `step_time_memory.py` (the memory cases);
the targets and tables in `step_time_report.py`; the command line here.

`results.json` has `backend`, `cases` (timing), `memory`, `device_memory`
(GPU only), `targets` (GELU memory linear <= 1.05x identity; step time
linear <= 1.05x identity; LinearBackpropModel <= 1.02x hand-placed layers),
`errors` (device measurements that failed; the run goes on), `complete`
and `config`; `table.md` beside it has the markdown tables. Both are
rewritten after every case, so a run cut short keeps what it measured.

    python benchmarks/step_time.py --out results/step_time
    python benchmarks/step_time.py --backend jax --out results/step_time_jax
    python benchmarks/step_time.py --backend torch --out results/step_time_torch
    python benchmarks/step_time.py --backend jax --out /tmp/st --quick    # ratios +-10 %
    python benchmarks/step_time.py --backend torch --out /tmp/st --smoke  # plumbing only
    python benchmarks/step_time.py --out /tmp/st --smoke --models mlp_gelu  # seconds
    bash benchmarks/gpu_step_time.sh    # on a GPU machine, see the script
"""

import argparse
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import measure  # noqa: E402  (the method: pinning, interleaving, children, results)
import step_probes  # noqa: E402  (the size and memory of one step)
from measure import BACKENDS  # noqa: E402
from step_time_networks import (  # noqa: E402  (the networks and their variants)
    MODELS,
    SIZES,
    VARIANTS,
    batch_key,
    build_variants,
    check_sites,
    make_batch,
)
from step_time_memory import (  # noqa: E402  (each variant in its own process)
    child_device_memory,
    child_memory,
    jax_device_memory_case,
    memory_cases,
)
from step_time_report import markdown, targets  # noqa: E402


def jit_modes(torch_compile=False):
    if measure.BACKEND == "torch":
        return (False, True) if torch_compile else (False,)
    return (False, True)


# --- step time ------------------------------------------------------------------


def time_case(model_name, jit_compile, config):
    sizes = config["time"]
    models = build_variants(model_name, sizes, jit_compile, VARIANTS)
    x, y = make_batch(model_name, sizes, batch_key(model_name))
    # Trace, compile and warm up; size the timing blocks from the slowest.
    clock = time.perf_counter if measure.ON_GPU else time.process_time
    slowest = measure.slowest_step_seconds(models, x, y, warmup_steps=2, timed_steps=3, clock=clock)
    check_sites(model_name, models["linear_model"], sizes)
    steps = max(2, int(config["block_seconds"] / max(slowest, 1e-4)))
    cpu, wall = measure.time_interleaved(models, x, y, steps, config["repeats"])
    timed = wall if measure.ON_GPU else cpu

    # Noise-free evidence next to the timings: the size of each step. (The
    # traced step is the same whatever `jit_compile`: count once.)
    key = (model_name, jit_compile) if measure.BACKEND == "torch" else model_name
    if key not in _STEP_SIZE:
        _STEP_SIZE[key] = {
            variant: step_probes.step_size(model, x, y) for variant, model in models.items()
        }
    result = {
        "model": model_name,
        "jit_compile": jit_compile,
        "clock": "wall" if measure.ON_GPU else "process_cpu",
        "ms_per_step": measure.medians(timed, 4),
        "linear_over_exact": measure.paired_ratio(timed, "linear_model", "exact"),
        "model_over_layers": measure.paired_ratio(timed, "linear_model", "linear_layers"),
        "linear_over_identity": measure.paired_ratio(timed, "linear_model", "identity"),
        "layers_over_identity": measure.paired_ratio(timed, "linear_layers", "identity"),
        "wall_ms_per_step": measure.medians(wall, 4),
        "cpu_ms_per_step": measure.medians(cpu, 4),
        "ms_range": measure.ranges(timed),
        "step_size_unit": step_probes.STEP_SIZE_UNIT[measure.BACKEND],
        "step_size": _STEP_SIZE[key],
        "steps_per_block": steps,
        "repeats": config["repeats"],
    }
    if measure.BACKEND == "tensorflow":
        # The field names of 0.1's results.json.
        result["cpu_ms_range"] = measure.ranges(cpu)
        result["graph_nodes"] = _STEP_SIZE[key]
    return result


_STEP_SIZE = {}


# --- main -----------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        help="Keras backend (default: KERAS_BACKEND, else tensorflow)",
    )
    parser.add_argument("--out", required=True, help="directory for results.json and table.md")
    parser.add_argument("--quick", action="store_true", help="smaller networks, 5 rounds")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny networks, memory in this process, for tests: seconds, no measurement",
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (>= 5)")
    parser.add_argument(
        "--block-seconds", type=float, default=None, help="length of one timed block (default 0.4)"
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated subset of {','.join(MODELS)} (default: all)",
    )
    parser.add_argument(
        "--torch-compile",
        action="store_true",
        help="PyTorch: also time jit_compile=True (torch.compile)",
    )
    parser.add_argument("--child-device-memory", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 5:
        parser.error("--repeats must be at least 5")
    if args.quick and args.smoke:
        parser.error("--quick and --smoke exclude each other")
    args.models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or not args.models:
        parser.error(f"--models: unknown {unknown}; choose from {','.join(MODELS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    keras = measure.setup_backend(args.backend)
    if args.child_device_memory:
        return child_device_memory(args.child_device_memory)
    size_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    config = dict(SIZES[size_name])
    if args.child_memory:
        return child_memory(args.child_memory, args, config)
    if args.repeats is not None:
        config["repeats"] = args.repeats
    if args.block_seconds is not None:
        config["block_seconds"] = args.block_seconds

    started = time.perf_counter()
    results = {"backend": measure.BACKEND, "cases": [], "memory": [], "device_memory": [], "errors": []}

    def save(complete=False):
        # After every case: a run cut short (a time limit) keeps what it measured.
        return save_results(args, argv, config, results, started, complete)

    for model_name in args.models:
        for jit_compile in jit_modes(args.torch_compile):
            results["cases"].append(time_case(model_name, jit_compile, config))
            print(f"timed {model_name} jit_compile={jit_compile}", flush=True)
            keras.backend.clear_session()
            save()
    keras.backend.clear_session()
    memory, device_memory, errors = memory_cases(args)
    results["memory"] += memory
    results["device_memory"] += device_memory
    results["errors"] += errors
    for error in errors:
        print(error, flush=True)
    save()
    if measure.BACKEND == "jax" and measure.ON_GPU and "mlp_gelu" in args.models:
        for jit_compile in (False, True):
            try:
                case = jax_device_memory_case("mlp_gelu", jit_compile, size_name)
            except Exception as error:  # keep the rest of a long run
                results["errors"].append(f"JAX device memory, jit_compile={jit_compile}: {error!r}")
                print(results["errors"][-1], flush=True)
                continue
            results["device_memory"].append(case)
            print(f"measured device memory mlp_gelu jit_compile={jit_compile}", flush=True)
            save()
    table = save(complete=True)
    print()
    print(table)
    print(f"wrote {os.path.join(args.out, 'results.json')} in {results['config']['seconds']} s")
    return results


def save_results(args, argv, config, results, started, complete):
    """results.json (with targets and config) and table.md; returns the table.

    `argv` is what `main` was given (None: `sys.argv[1:]`), the command line
    the results record."""
    import keras

    results["complete"] = complete
    results["targets"] = targets(results)
    results["config"] = {
        "backend": measure.BACKEND,
        "quick": args.quick,
        "smoke": args.smoke,
        "models": list(args.models),
        "block_seconds": config["block_seconds"],
        "sizes": {"time": config["time"], "memory": config["memory"]},
        "repeats": config["repeats"],
        "threads": measure.thread_config(),
        "on_gpu": measure.ON_GPU,
        "device": measure.device_name(),
        "clock": "wall" if measure.ON_GPU else "process_cpu",
        "memory_metric": step_probes.MEMORY_DESCRIPTION[measure.BACKEND],
        "optimizer": "SGD(0.01)",
        "loss": "sparse categorical cross-entropy on logits",
        **measure.FRAMEWORK_VERSION,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "memory_processes": "this one (--smoke)" if args.smoke else "one per variant",
        "command": measure.repo_command(__file__, argv),
        "seconds": round(time.perf_counter() - started, 1),
    }
    table = markdown(results)
    measure.write_results(args.out, results, table)
    return table


if __name__ == "__main__":
    main()
