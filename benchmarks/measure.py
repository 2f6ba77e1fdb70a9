"""The measurement method of the benchmarks, apart from what they measure.

`step_time.py`, `real_models.py` and `callback_overhead.py` measure their
own cases (networks, variants, callbacks) with what is here:

- `setup_backend`: the Keras backend chosen and its framework pinned to one
  CPU thread before any op runs (these CPUs are shared and noisy: with the
  default thread pools the same comparison swung between 0.6x and 1.9x);
- interleaved timing: variants take turns in rounds whose order rotates
  (`rotation`), each timing a block of steps (`time_interleaved`); ratios
  are medians over rounds of the ratio of two blocks of the same round
  (`paired_ratio`), so slow drifts of the machine cancel;
- what one training step costs, per backend: its size and its memory
  (`step_probes.py`, which reads the backend chosen here);
- `run_children`: one variant per fresh process (an allocator's peak
  depends on what its process allocated before);
- `write_results`: `results.json` (and `table.md`) in `--out DIR`, replaced
  whole, so a run cut short never leaves half a file, and `repo_command`,
  the command line it records (both from `examples/_command.py`).

Nothing here imports Keras or a framework before `setup_backend` runs.
"""

import collections
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# The command line every results.json records (one helper for the examples
# and the benchmarks: repository-relative paths, no build-machine ones).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from _command import repo_command, write_results  # noqa: E402,F401

BACKENDS = ("tensorflow", "jax", "torch")

# Set by `setup_backend` (the backend must be chosen before Keras is imported).
BACKEND = None
ON_GPU = False
FRAMEWORK_VERSION = {}


def setup_backend(backend):
    """Pins `backend`'s framework to one CPU thread, then imports Keras on it.

    Args:
        backend: `"tensorflow"`, `"jax"` or `"torch"`.

    Returns:
        The `keras` module.

    Raises:
        RuntimeError: Keras is already imported on another backend.
        ValueError: `backend` is not one of `BACKENDS`.
    """
    global BACKEND, ON_GPU
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != backend:
            raise RuntimeError(
                f"Keras is already imported with the {current!r} backend; run "
                f"{os.path.relpath(sys.argv[0])} --backend {backend} in a fresh process."
            )
    os.environ["KERAS_BACKEND"] = backend
    if backend == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # The peak-memory probe reads the CPU allocator's stats, which only
        # TensorFlow's BFC allocator keeps (TF 2.21 on CPU does not use it by default).
        os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
        import tensorflow as tf

        # Before any op runs: one thread each, for repeatable CPU ratios.
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        # Every variant is a new model with new traced functions: TF's
        # retracing warning would be noise here.
        tf.get_logger().setLevel("ERROR")
        ON_GPU = bool(tf.config.list_physical_devices("GPU"))
        FRAMEWORK_VERSION["tensorflow"] = tf.__version__
    elif backend == "jax":
        # Before JAX initialises its CPU client: one thread.
        flags = os.environ.get("XLA_FLAGS", "")
        for flag in ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"):
            if flag not in flags:
                flags = f"{flags} {flag}".strip()
        os.environ["XLA_FLAGS"] = flags
        import jax

        ON_GPU = jax.devices()[0].platform != "cpu"
        FRAMEWORK_VERSION["jax"] = jax.__version__
    elif backend == "torch":
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        ON_GPU = torch.cuda.is_available()
        FRAMEWORK_VERSION["torch"] = torch.__version__
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")

    import keras

    if keras.backend.backend() != backend:
        raise RuntimeError(f"Keras runs on {keras.backend.backend()!r}, not {backend!r}")
    if backend != "tensorflow":
        # `keras.utils.set_random_seed` imports TensorFlow whenever it is
        # installed (to seed tf.random for tf.data). Tell Keras's lazy
        # module it is absent, as on a machine with only JAX or PyTorch, so
        # TensorFlow's threads and memory stay out of these measurements.
        try:
            from keras.src.utils import module_utils

            module_utils.tensorflow._available = False
        except (ImportError, AttributeError):  # pragma: no cover - other Keras versions
            pass
    BACKEND = backend
    return keras


def thread_config():
    """The thread settings `setup_backend` made, for a results.json."""
    return {
        "tensorflow": {"intra_op": 1, "inter_op": 1},
        "jax": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
        "torch": {"num_threads": 1, "num_interop_threads": 1},
    }[BACKEND]


def device_name():
    """The device the steps run on, in words (`"CPU"` without a GPU)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else "CPU"
    if BACKEND == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"


# --- interleaved timing -----------------------------------------------------------


def rotation(names, round_index):
    """`names` in the order of round `round_index`: A B C, B C A, C A B, ...

    No variant always runs first, so drifts in machine load hit all alike.
    """
    names = list(names)
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def slowest_step_seconds(models, x, y, warmup_steps, timed_steps, clock=time.process_time):
    """Seconds of the slowest model's step after `warmup_steps` (tracing,
    compiling); sizes the timed blocks."""
    slowest = 0.0
    for model in models.values():
        for _ in range(warmup_steps):
            model.train_on_batch(x, y)
        start = clock()
        for _ in range(timed_steps):
            model.train_on_batch(x, y)
        slowest = max(slowest, (clock() - start) / timed_steps)
    return slowest


def time_interleaved(models, x, y, steps, repeats):
    """Milliseconds per step of blocks of `steps` steps, `repeats` rounds.

    Args:
        models: `{name: compiled model}`, each trained on `(x, y)`.
        steps: training steps in one timed block.
        repeats: rounds; in each, every model times one block, in the
            order of `rotation`.

    Returns:
        `(cpu, wall)`: `{name: [ms per step, one per round]}` of process CPU
        time (with one thread, the step's own work, barely moved by other
        load) and of wall time (what a GPU run must use).

    Raises:
        FloatingPointError: a block ended on a non-finite loss.
    """
    cpu = {name: [] for name in models}
    wall = {name: [] for name in models}
    for round_index in range(repeats):
        for name in rotation(models, round_index):
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            for _ in range(steps):
                logs = models[name].train_on_batch(x, y)
            cpu[name].append(1000.0 * (time.process_time() - start_cpu) / steps)
            wall[name].append(1000.0 * (time.perf_counter() - start_wall) / steps)
            if not np.all(np.isfinite(logs)):
                raise FloatingPointError(f"{name}: non-finite loss {logs}")
    return cpu, wall


def paired_ratio(samples, numerator, denominator):
    """Median over rounds of `numerator / denominator` within each round:
    the two blocks ran side by side, so slow drifts of the machine cancel."""
    pairs = zip(samples[numerator], samples[denominator])
    return round(statistics.median(a / b for a, b in pairs), 4)


def medians(samples, digits):
    """`{name: median of its samples}`, rounded to `digits`."""
    return {name: round(statistics.median(values), digits) for name, values in samples.items()}


def ranges(samples, digits=4):
    """`{name: [min, max] of its samples}`, rounded to `digits`."""
    return {name: [round(min(v), digits), round(max(v), digits)] for name, v in samples.items()}


def ratio(numerator, denominator):
    """`numerator / denominator` to 4 digits; None where the denominator is
    0 (an allocator that counts in coarse chunks can read 0 for a tiny step)."""
    return round(numerator / denominator, 4) if denominator > 0 else None


# --- one variant per process ------------------------------------------------------------

Child = collections.namedtuple("Child", ["returncode", "result", "stderr"])


def run_children(commands, parallel, env=None, keep_stderr=False):
    """Runs each command in a fresh process; each prints one JSON line last.

    An allocator's peak depends on what its process allocated before: in
    its own process every variant has the same history.

    Args:
        commands: `{key: argv}`.
        parallel: run them at once (each process's allocator peak is its
            own; nothing is timed meanwhile), else one after another.
        env: the children's environment (default: this one's).
        keep_stderr: capture the children's stderr (else it is shared).

    Returns:
        `{key: Child(returncode, result, stderr)}`, in the order of
        `commands`; `result` is the last stdout line as JSON, None where
        the child failed or printed nothing.
    """
    stderr = subprocess.PIPE if keep_stderr else None
    processes, outputs = {}, {}
    for key, command in commands.items():
        processes[key] = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        if not parallel:
            outputs[key] = processes[key].communicate()
    children = {}
    for key, process in processes.items():
        stdout, errors = outputs[key] if key in outputs else process.communicate()
        lines = stdout.strip().splitlines()
        result = json.loads(lines[-1]) if process.returncode == 0 and lines else None
        children[key] = Child(process.returncode, result, errors)
    return children


# --- results ---------------------------------------------------------------------------
