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
four processes run at once.

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
    bash benchmarks/gpu_step_time.sh    # on a GPU machine, see the script
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
VARIANTS = ("exact", "linear_model", "linear_layers", "identity")
MODELS = ("mlp_sigmoid", "mlp_gelu", "cnn_relu")
ACTIVATION = {"mlp_sigmoid": "sigmoid", "mlp_gelu": "gelu", "cnn_relu": "relu"}
LABEL = {"mlp_sigmoid": "MLP sigmoid", "mlp_gelu": "MLP GELU", "cnn_relu": "CNN ReLU"}
TARGETS = {"memory_linear_over_identity": 1.05, "time_linear_over_identity": 1.05, "model_over_layers": 1.02}

# name -> sizes; "time" for step timing, "memory" for the memory probe.
FULL = {
    "time": {"mlp_width": 512, "mlp_depth": 4, "mlp_batch": 256, "cnn_side": 32, "cnn_batch": 64},
    "memory": {"mlp_width": 1024, "mlp_depth": 6, "mlp_batch": 2048, "cnn_side": 32, "cnn_batch": 256},
    "repeats": 9,
    "block_seconds": 0.4,
}
QUICK = {
    "time": {"mlp_width": 256, "mlp_depth": 4, "mlp_batch": 128, "cnn_side": 16, "cnn_batch": 32},
    "memory": {"mlp_width": 512, "mlp_depth": 6, "mlp_batch": 1024, "cnn_side": 16, "cnn_batch": 128},
    "repeats": 5,
    "block_seconds": 0.08,
}
# For tests: seconds, not a measurement.
SMOKE = {
    "time": {"mlp_width": 32, "mlp_depth": 2, "mlp_batch": 16, "cnn_side": 8, "cnn_batch": 8},
    "memory": {"mlp_width": 64, "mlp_depth": 2, "mlp_batch": 32, "cnn_side": 8, "cnn_batch": 16},
    "repeats": 5,
    "block_seconds": 0.005,
}
SIZES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}
INPUT_FEATURES = 784
CLASSES = 10
MIB = 2**20

# Set by `setup_backend` (the backend must be chosen before Keras is imported).
BACKEND = None
keras = None
np = None
linbp_activations = None
LinearBackpropModel = None
ON_GPU = False
FRAMEWORK_VERSION = {}


def setup_backend(backend):
    """Pin the framework to one CPU thread, then import Keras on `backend`."""
    global BACKEND, keras, np, linbp_activations, LinearBackpropModel, ON_GPU
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != backend:
            raise RuntimeError(
                f"Keras is already imported with the {current!r} backend; run "
                f"benchmarks/step_time.py --backend {backend} in a fresh process."
            )
    os.environ["KERAS_BACKEND"] = backend
    if backend == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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

    import keras as keras_module
    import numpy as numpy_module

    from keras_linbp import activations as activations_module
    from keras_linbp.models import LinearBackpropModel as model_class

    if keras_module.backend.backend() != backend:
        raise RuntimeError(f"Keras runs on {keras_module.backend.backend()!r}, not {backend!r}")
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
    keras, np = keras_module, numpy_module
    linbp_activations, LinearBackpropModel = activations_module, model_class


def jit_modes(torch_compile=False):
    if BACKEND == "torch":
        return (False, True) if torch_compile else (False,)
    return (False, True)


def device_name():
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


# --- networks -------------------------------------------------------------------


def build_layers(model_name, variant, sizes):
    """(inputs, logits) of one network; the activation depends on `variant`."""
    name = ACTIVATION[model_name]
    if variant == "identity":
        activation = None
    elif variant == "linear_layers":
        activation = linbp_activations.LINBP_FUNCTIONS[name]
    else:
        activation = name
    if model_name.startswith("mlp"):
        inputs = keras.Input((INPUT_FEATURES,))
        h = inputs
        for _ in range(sizes["mlp_depth"]):
            h = keras.layers.Dense(sizes["mlp_width"], activation=activation)(h)
    else:
        side = sizes["cnn_side"]
        inputs = keras.Input((side, side, 3))
        h = keras.layers.Conv2D(16, 3, padding="same", activation=activation)(inputs)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(32, 3, padding="same", activation=activation)(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dense(64, activation=activation)(h)
    return inputs, keras.layers.Dense(CLASSES)(h)


def build_model(model_name, variant, sizes, jit_compile, weights=None):
    inputs, outputs = build_layers(model_name, variant, sizes)
    if variant == "linear_model":
        model = LinearBackpropModel(inputs, outputs, backprop="linear")
    else:
        model = keras.Model(inputs, outputs)
    if weights is not None:
        model.set_weights(weights)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def make_batch(model_name, sizes, batch_key, seed=0):
    """(x, y) already on the device (numpy would be converted every step)."""
    rng = np.random.default_rng(seed)
    batch = sizes[batch_key]
    if model_name.startswith("mlp"):
        x = rng.normal(size=(batch, INPUT_FEATURES))
    else:
        side = sizes["cnn_side"]
        x = rng.normal(size=(batch, side, side, 3))
    y = rng.integers(0, CLASSES, size=(batch,))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.constant(x, tf.float32), tf.constant(y, tf.int64)
    label_dtype = "int32" if BACKEND == "jax" else "int64"
    return keras.ops.convert_to_tensor(x, "float32"), keras.ops.convert_to_tensor(y, label_dtype)


def batch_key(model_name):
    return "mlp_batch" if model_name.startswith("mlp") else "cnn_batch"


def build_variants(model_name, sizes, jit_compile, variants):
    keras.utils.set_random_seed(0)
    models = {}
    weights = None
    for variant in variants:
        models[variant] = build_model(model_name, variant, sizes, jit_compile, weights)
        weights = models[variant].get_weights() if weights is None else weights
    return models


def check_sites(model_name, model, sizes):
    sites = model.linear_sites()
    assert len(sites) == (sizes["mlp_depth"] if model_name.startswith("mlp") else 3), sites


# --- step time ------------------------------------------------------------------


def time_case(model_name, jit_compile, config):
    sizes = config["time"]
    models = build_variants(model_name, sizes, jit_compile, VARIANTS)
    x, y = make_batch(model_name, sizes, batch_key(model_name))
    # Trace, compile and warm up; size the timing blocks from the slowest.
    clock = time.perf_counter if ON_GPU else time.process_time
    slowest = 0.0
    for model in models.values():
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)
        start = clock()
        for _ in range(3):
            model.train_on_batch(x, y)
        slowest = max(slowest, (clock() - start) / 3)
    check_sites(model_name, models["linear_model"], sizes)
    steps = max(2, int(config["block_seconds"] / max(slowest, 1e-4)))
    cpu = {variant: [] for variant in VARIANTS}
    wall = {variant: [] for variant in VARIANTS}
    for round_index in range(config["repeats"]):
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            model = models[variant]
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            for _ in range(steps):
                logs = model.train_on_batch(x, y)
            cpu[variant].append(1000.0 * (time.process_time() - start_cpu) / steps)
            wall[variant].append(1000.0 * (time.perf_counter() - start_wall) / steps)
        assert np.isfinite(logs)
    timed = wall if ON_GPU else cpu

    def paired_ratio(numerator, denominator):
        # Median over rounds of the ratio within a round: the two blocks ran
        # side by side, so slow drifts of the machine cancel.
        return round(
            statistics.median(a / b for a, b in zip(timed[numerator], timed[denominator])), 4
        )

    # Noise-free evidence next to the timings: the size of each step. (The
    # traced step is the same whatever `jit_compile`: count once.)
    key = (model_name, jit_compile) if BACKEND == "torch" else model_name
    if key not in _STEP_SIZE:
        _STEP_SIZE[key] = {
            variant: step_size(model, x, y) for variant, model in models.items()
        }
    result = {
        "model": model_name,
        "jit_compile": jit_compile,
        "clock": "wall" if ON_GPU else "process_cpu",
        "ms_per_step": {v: round(statistics.median(t), 4) for v, t in timed.items()},
        "linear_over_exact": paired_ratio("linear_model", "exact"),
        "model_over_layers": paired_ratio("linear_model", "linear_layers"),
        "linear_over_identity": paired_ratio("linear_model", "identity"),
        "layers_over_identity": paired_ratio("linear_layers", "identity"),
        "wall_ms_per_step": {v: round(statistics.median(t), 4) for v, t in wall.items()},
        "cpu_ms_per_step": {v: round(statistics.median(t), 4) for v, t in cpu.items()},
        "ms_range": {v: [round(min(t), 4), round(max(t), 4)] for v, t in timed.items()},
        "step_size_unit": STEP_SIZE_UNIT[BACKEND],
        "step_size": _STEP_SIZE[key],
        "steps_per_block": steps,
        "repeats": config["repeats"],
    }
    if BACKEND == "tensorflow":
        # The field names of 0.1's results.json.
        result["cpu_ms_range"] = {v: [round(min(t), 4), round(max(t), 4)] for v, t in cpu.items()}
        result["graph_nodes"] = _STEP_SIZE[key]
    return result


_STEP_SIZE = {}
STEP_SIZE_UNIT = {
    "tensorflow": "nodes in the traced train_step graph",
    "jax": "equations in the jaxpr of train_step (sub-jaxprs included)",
    "torch": "autograd nodes reachable from the loss",
}


def step_size(model, x, y):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        step = tf.function(model.train_step, jit_compile=False)
        graph = step.get_concrete_function((x, y)).graph
        return len(graph.as_graph_def().node)
    if BACKEND == "jax":
        import jax

        jaxpr = jax.make_jaxpr(model.train_step)(jax_state(model), (x, y))
        return _count_equations(jaxpr.jaxpr)
    counts = []
    with _spy_on_backward(lambda loss: counts.append(_count_autograd_nodes(loss.grad_fn))):
        model.train_on_batch(x, y)
    assert len(counts) == 1, counts
    return counts[0]


def _count_equations(jaxpr):
    import jax.extend

    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += _count_equations(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += _count_equations(sub)
    return total


def _count_autograd_nodes(root):
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


class _spy_on_backward:
    """Calls `record(loss)` on every `torch.Tensor.backward` in the block
    (Keras's PyTorch train_step calls `loss.backward()`)."""

    def __init__(self, record):
        self.record = record

    def __enter__(self):
        import torch

        self.original = torch.Tensor.backward
        original, record = self.original, self.record

        def backward(tensor, *args, **kwargs):
            record(tensor)
            return original(tensor, *args, **kwargs)

        torch.Tensor.backward = backward

    def __exit__(self, *exc):
        import torch

        torch.Tensor.backward = self.original


def jax_state(model):
    # Keras's JAX trainer state, as `train_on_batch` passes it to the step.
    return model._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
    )


# --- memory ---------------------------------------------------------------------

MEMORY_METRIC = {
    "tensorflow": "tf_allocator_peak",
    "jax": "jax_compiled_temp",
    "torch": "torch_saved_for_backward",
}
MEMORY_DESCRIPTION = {
    "tensorflow": "TF allocator peak during one train_on_batch minus the memory in use before it",
    "jax": "temp_size_in_bytes of jax.jit(model.train_step, donate_argnums=0) compiled for the batch",
    "torch": "bytes saved for backward in one train_on_batch (saved_tensors_hooks; unique storages, weights excluded)",
}


def tf_step_memory_mib(model, x, y):
    """TF allocator peak during one training step, minus memory in use before."""
    import tensorflow as tf

    device = "GPU:0" if ON_GPU else "CPU:0"
    gc.collect()
    before = tf.config.experimental.get_memory_info(device)["current"]
    tf.config.experimental.reset_memory_stats(device)
    model.train_on_batch(x, y)
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    return (peak - before) / MIB


def jax_compiled_temp_mib(model, x, y):
    import jax

    step = jax.jit(model.train_step, donate_argnums=0)
    compiled = step.lower(jax_state(model), (x, y)).compile()
    return compiled.memory_analysis().temp_size_in_bytes / MIB


def torch_saved_for_backward(model, x, y):
    """(MiB of unique non-weight storages, MiB of everything packed, count)."""
    import torch

    weights = {v.value.untyped_storage().data_ptr() for v in model.weights}
    unique, packed = {}, [0, 0]

    def pack(tensor):
        packed[0] += tensor.numel() * tensor.element_size()
        packed[1] += 1
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            unique[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.train_on_batch(x, y)
    return sum(unique.values()) / MIB, packed[0] / MIB, packed[1]


def torch_cuda_step_mib(model, x, y):
    import torch

    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model.train_on_batch(x, y)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / MIB


def _ratio(numerator, denominator):
    # None where the floor is 0 MiB (a smoke run's tiny networks).
    return round(numerator / denominator, 4) if denominator > 0 else None


def _ratios(values):
    return {
        "linear_over_exact": _ratio(values["linear_model"], values["exact"]),
        "linear_over_identity": _ratio(values["linear_model"], values["identity"]),
        "layers_over_identity": _ratio(values["linear_layers"], values["identity"]),
        "model_over_layers": _ratio(values["linear_model"], values["linear_layers"]),
    }


def memory_jit_modes():
    # JAX's compiled temp size does not depend on `jit_compile`: once.
    return {"tensorflow": (False, True), "jax": (True,), "torch": (False,)}[BACKEND]


def memory_of_variant(variant, models, config):
    """Memory of `variant` for every model and `jit_compile`, one model
    alive at a time: [{model, jit_compile, mib, ...}]."""
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
            row = {"model": model_name, "jit_compile": jit_compile}
            if BACKEND == "tensorflow":
                row["mib"] = statistics.median(tf_step_memory_mib(model, x, y) for _ in range(3))
            elif BACKEND == "jax":
                row["mib"] = jax_compiled_temp_mib(model, x, y)
            else:
                row["mib"], row["saved_mib_all"], row["saved_tensors"] = torch_saved_for_backward(
                    model, x, y
                )
                if ON_GPU:
                    try:
                        row["device_mib"] = statistics.median(
                            torch_cuda_step_mib(model, x, y) for _ in range(3)
                        )
                    except Exception as error:  # keep the rest of a long run
                        row["device_error"] = f"CUDA memory of {model_name}: {error!r}"
            rows.append(row)
            del model
    return rows


def child_memory(variant, args, config):
    """In a fresh process: `memory_of_variant` as one JSON line."""
    print(json.dumps(memory_of_variant(variant, args.models, config)))


def memory_cases(args):
    """Memory of every variant, each variant in its own process.

    An allocator's peak depends on what the process allocated before
    (TensorFlow's BFC allocator serves a request from a free chunk up to
    twice its size without splitting it, and counts the whole chunk), so
    measuring the variants one after another in one process lets the exact
    network's large free chunks inflate the peaks of the variants measured
    after it. In its own process every variant has the same history: the
    same sequence of models, its own.
    Returns (memory rows, device memory rows, errors)."""
    command = [sys.executable, os.path.abspath(__file__), "--backend", BACKEND, "--out", "-"]
    command += ["--models", ",".join(args.models)]
    command += ["--smoke"] if args.smoke else ["--quick"] if args.quick else []
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    by_variant, errors = {}, []
    # On a CPU one at a time (2 cores here); with a GPU the four at once
    # (a process's allocator peak is its own; a GPU machine has the cores).
    children, outputs = {}, {}
    for variant in VARIANTS:
        children[variant] = subprocess.Popen(
            command + ["--child-memory", variant], stdout=subprocess.PIPE, text=True, env=env
        )
        if not ON_GPU:
            outputs[variant] = children[variant].communicate()[0]
    for variant, process in children.items():
        stdout = outputs[variant] if variant in outputs else process.communicate()[0]
        lines = stdout.strip().splitlines()
        if process.returncode != 0 or not lines:
            errors.append(f"memory of {variant}: child exited with {process.returncode}")
            continue
        by_variant[variant] = {(row["model"], row["jit_compile"]): row for row in json.loads(lines[-1])}
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
                "metric": MEMORY_METRIC[BACKEND],
                "mib": {variant: round(value, 2) for variant, value in mib.items()},
                **_ratios(mib),
            }
            if BACKEND == "torch":
                case["saved_mib_all"] = {v: round(r["saved_mib_all"], 2) for v, r in rows.items()}
                case["saved_tensors"] = {v: r["saved_tensors"] for v, r in rows.items()}
            if BACKEND == "tensorflow":
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
    mib, raised = {}, {}
    # The parent holds its own device memory: no preallocation in the child.
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    children = {}
    for variant in VARIANTS:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--backend",
            "jax",
            "--out",
            "-",
            "--child-device-memory",
            f"{model_name},{variant},{int(jit_compile)},{size_name}",
        ]
        children[variant] = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    for variant, process in children.items():
        stdout, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{variant}: child exited with {process.returncode}")
        child = json.loads(stdout.strip().splitlines()[-1])
        if "error" in child:
            raise RuntimeError(child["error"])
        mib[variant] = child["mib"]
        raised[variant] = child["peak_raised_by_measured_step"]
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


def child_device_memory(spec):
    """In a fresh process: the JAX device's peak during a step minus the
    memory in use before it. JAX's peak cannot be reset, so the compile and
    warm-up steps come first and `peak_raised_by_measured_step` says whether
    the measured step set the peak (if not, the figure is the earlier
    steps' peak, which an identical step reaches too)."""
    import jax

    model_name, variant, jit_compile, size_name = spec.split(",")
    sizes = SIZES[size_name]["memory"]
    device = jax.devices()[0]
    if not device.memory_stats():
        print(json.dumps({"error": f"{device} has no memory_stats()"}))
        return
    x, y = make_batch(model_name, sizes, batch_key(model_name))
    (model,) = build_variants(model_name, sizes, bool(int(jit_compile)), (variant,)).values()
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    gc.collect()
    stats = device.memory_stats()
    before, peak_before = stats["bytes_in_use"], stats["peak_bytes_in_use"]
    model.train_on_batch(x, y)
    stats = device.memory_stats()
    peak = stats["peak_bytes_in_use"]
    print(json.dumps({"mib": (peak - before) / MIB, "peak_raised_by_measured_step": peak > peak_before}))


# --- targets and tables ---------------------------------------------------------


def targets(results):
    """The targets of issue 11, measured (not tuned)."""
    gelu = [case for case in results["memory"] + results["device_memory"] if case["model"] == "mlp_gelu"]
    rows = []
    for case in gelu:
        rows.append(
            {
                "target": "GELU memory: linear_model <= 1.05x identity",
                "where": f"{case['metric']} jit_compile={case['jit_compile']}",
                "value": case["linear_over_identity"],
                "limit": TARGETS["memory_linear_over_identity"],
            }
        )
    for case in results["cases"]:
        where = f"{case['model']} jit_compile={case['jit_compile']}"
        rows.append(
            {
                "target": "step time: linear_model <= 1.05x identity",
                "where": where,
                "value": case["linear_over_identity"],
                "limit": TARGETS["time_linear_over_identity"],
            }
        )
        rows.append(
            {
                "target": "step time: LinearBackpropModel <= 1.02x hand-placed layers",
                "where": where,
                "value": case["model_over_layers"],
                "limit": TARGETS["model_over_layers"],
            }
        )
    for row in rows:
        row["met"] = row["value"] is not None and row["value"] <= row["limit"]
    return rows


def _fmt(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(results):
    backend = results["backend"]
    config = results["config"]
    lines = [
        f"#### {backend} ({config['device']}; {'wall' if config['on_gpu'] else 'CPU'} ms per step)",
        "",
        "| model | jit | exact ms | linear_model ms | linear_layers ms | identity ms "
        "| linear/exact | model/layers | linear/identity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        ms = case["ms_per_step"]
        lines.append(
            f"| {LABEL[case['model']]} | {case['jit_compile']} | {ms['exact']:.2f} | "
            f"{ms['linear_model']:.2f} | {ms['linear_layers']:.2f} | {ms['identity']:.2f} | "
            f"{case['linear_over_exact']:.3f} | {case['model_over_layers']:.3f} | "
            f"{case['linear_over_identity']:.3f} |"
        )
    lines += [
        "",
        "| model | jit | memory | exact MiB | linear_model MiB | linear_layers MiB | identity MiB "
        "| linear/exact | linear/identity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["memory"] + results["device_memory"]:
        mib = case["mib"]
        lines.append(
            f"| {LABEL[case['model']]} | {case['jit_compile']} | "
            f"{case['metric']}{' (upper bound)' if case.get('upper_bound') else ''} | "
            f"{mib['exact']:.1f} | {mib['linear_model']:.1f} | {mib['linear_layers']:.1f} | "
            f"{mib['identity']:.1f} | {_fmt(case['linear_over_exact'], 2)} | "
            f"{_fmt(case['linear_over_identity'], 3)} |"
        )
    missed = [row for row in results["targets"] if not row["met"]]
    if not results.get("complete", True):
        lines += ["", "(incomplete run: cut short before every case was measured)"]
    lines += [
        "",
        f"Targets: {len(results['targets']) - len(missed)} of {len(results['targets'])} met"
        + ("." if not missed else "; missed:"),
    ]
    for row in missed:
        lines.append(f"- {row['target']}, {row['where']}: {_fmt(row['value'], 3)}")
    for error in results.get("errors", []):
        lines.append(f"- not measured: {error}")
    return "\n".join(lines) + "\n"


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
        "--smoke", action="store_true", help="tiny networks, for tests: seconds, no measurement"
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
    setup_backend(args.backend)
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
    results = {"backend": BACKEND, "cases": [], "memory": [], "device_memory": [], "errors": []}

    def save(complete=False):
        # After every case: a run cut short (a time limit) keeps what it measured.
        return write_results(args, config, results, started, complete)

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
    if BACKEND == "jax" and ON_GPU and "mlp_gelu" in args.models:
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


def write_results(args, config, results, started, complete):
    """results.json (with targets and config) and table.md; returns the table."""
    results["complete"] = complete
    results["targets"] = targets(results)
    threads = {
        "tensorflow": {"intra_op": 1, "inter_op": 1},
        "jax": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
        "torch": {"num_threads": 1, "num_interop_threads": 1},
    }[BACKEND]
    results["config"] = {
        "backend": BACKEND,
        "quick": args.quick,
        "smoke": args.smoke,
        "models": list(args.models),
        "block_seconds": config["block_seconds"],
        "sizes": {"time": config["time"], "memory": config["memory"]},
        "repeats": config["repeats"],
        "threads": threads,
        "on_gpu": ON_GPU,
        "device": device_name(),
        "clock": "wall" if ON_GPU else "process_cpu",
        "memory_metric": MEMORY_DESCRIPTION[BACKEND],
        "optimizer": "SGD(0.01)",
        "loss": "sparse categorical cross-entropy on logits",
        **FRAMEWORK_VERSION,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "seconds": round(time.perf_counter() - started, 1),
    }
    table = markdown(results)
    os.makedirs(args.out, exist_ok=True)
    for name, text in (("results.json", json.dumps(results, indent=2)), ("table.md", table)):
        path = os.path.join(args.out, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return table


if __name__ == "__main__":
    main()
