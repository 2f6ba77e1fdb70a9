"""Training-step time and memory: exact vs linear backprop.

For three networks -- an MLP with sigmoid, an MLP with GELU and a small CNN
with ReLU -- each with `jit_compile` False and True, times one SGD training
step (`train_on_batch` on a batch already on the device) of four variants
with identical weights:

- `exact`: a plain `keras.Model` (ordinary backprop);
- `linear_model`: `keras_linbp.LinearBackpropModel` over the same layers;
- `linear_layers`: a plain `keras.Model` whose layers use the hand-placed
  `keras_linbp.activations.linbp_*` activations;
- `identity`: the same network with no activation at all (the floor: same
  matmuls / convolutions, no non-linearity).

Method: TensorFlow pinned to one intra-op and one inter-op thread (before
any op runs); every variant traced and warmed up first; then `--repeats`
rounds in which the variants take turns (the order rotates each round), each
timing a block of steps. `ms_per_step` is the median over rounds of the
process CPU time per step (`time.process_time`: on a shared, loaded
machine wall time mostly measures the other processes; with one TF thread
CPU time is the step's own work); each ratio is the median over rounds of
the ratio of two blocks of the same round. Wall-clock medians are written
too (`wall_ms_per_step`), as is the node count of each traced step
(`graph_nodes`: `linear_model` and `linear_layers` trace the same ops).

Memory: the working memory of one training step (TF allocator peak during
the step minus the memory in use just before it, read with
`tf.config.experimental.get_memory_info("CPU:0")` after
`reset_memory_stats`) of `exact` vs `linear_model`, on larger batches (the
GELU MLP: 6 hidden layers of 1024, batch 2048).

    python benchmarks/step_time.py --out results/step_time
    python benchmarks/step_time.py --out /tmp/step_time --quick   # < 2 min
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Before any op runs: one thread each, for repeatable CPU ratios.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
# Every variant is a new model with new traced functions: TF's retracing
# warning would be noise here.
tf.get_logger().setLevel("ERROR")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_linbp import activations as linbp_activations  # noqa: E402
from keras_linbp.models import LinearBackpropModel  # noqa: E402

VARIANTS = ("exact", "linear_model", "linear_layers", "identity")
MODELS = ("mlp_sigmoid", "mlp_gelu", "cnn_relu")
ACTIVATION = {"mlp_sigmoid": "sigmoid", "mlp_gelu": "gelu", "cnn_relu": "relu"}

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
INPUT_FEATURES = 784
CLASSES = 10


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
    rng = np.random.default_rng(seed)
    batch = sizes[batch_key]
    if model_name.startswith("mlp"):
        x = rng.normal(size=(batch, INPUT_FEATURES))
    else:
        side = sizes["cnn_side"]
        x = rng.normal(size=(batch, side, side, 3))
    y = rng.integers(0, CLASSES, size=(batch,))
    return tf.constant(x, tf.float32), tf.constant(y, tf.int64)


def build_variants(model_name, sizes, jit_compile, variants):
    keras.utils.set_random_seed(0)
    models = {}
    weights = None
    for variant in variants:
        models[variant] = build_model(model_name, variant, sizes, jit_compile, weights)
        weights = models[variant].get_weights() if weights is None else weights
    if "linear_model" in models:
        sites = models["linear_model"].linear_sites()
        assert len(sites) == (sizes["mlp_depth"] if model_name.startswith("mlp") else 3), sites
    return models


def time_case(model_name, jit_compile, config):
    sizes = config["time"]
    models = build_variants(model_name, sizes, jit_compile, VARIANTS)
    x, y = make_batch(model_name, sizes, "mlp_batch" if model_name.startswith("mlp") else "cnn_batch")
    # Trace, compile and warm up; size the timing blocks from the slowest.
    slowest = 0.0
    for model in models.values():
        model.train_on_batch(x, y)
        start = time.process_time()
        for _ in range(3):
            model.train_on_batch(x, y)
        slowest = max(slowest, (time.process_time() - start) / 3)
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

    def paired_ratio(numerator, denominator):
        # Median over rounds of the ratio within a round: the two blocks ran
        # side by side, so slow drifts of the machine cancel.
        return round(
            statistics.median(a / b for a, b in zip(cpu[numerator], cpu[denominator])), 4
        )

    # Noise-free evidence next to the timings: the size of each traced step.
    # (The traced train_step is the same whatever `jit_compile`: count once.)
    if model_name not in _GRAPH_NODES:
        _GRAPH_NODES[model_name] = {
            variant: traced_step_nodes(model, x, y) for variant, model in models.items()
        }
    graph_nodes = _GRAPH_NODES[model_name]
    return {
        "model": model_name,
        "jit_compile": jit_compile,
        "ms_per_step": {v: round(statistics.median(t), 4) for v, t in cpu.items()},
        "linear_over_exact": paired_ratio("linear_model", "exact"),
        "model_over_layers": paired_ratio("linear_model", "linear_layers"),
        "linear_over_identity": paired_ratio("linear_model", "identity"),
        "wall_ms_per_step": {v: round(statistics.median(t), 4) for v, t in wall.items()},
        "cpu_ms_range": {v: [round(min(t), 4), round(max(t), 4)] for v, t in cpu.items()},
        "graph_nodes": graph_nodes,
        "steps_per_block": steps,
        "repeats": config["repeats"],
    }


_GRAPH_NODES = {}


def traced_step_nodes(model, x, y):
    """Number of nodes in the graph of one traced `train_step`."""
    step = tf.function(model.train_step, jit_compile=False)
    graph = step.get_concrete_function((x, y)).graph
    return len(graph.as_graph_def().node)


def step_memory_mib(model, x, y):
    """TF allocator peak during one training step, minus memory in use before."""
    gc.collect()
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    model.train_on_batch(x, y)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return (peak - before) / 2**20


def memory_case(model_name, jit_compile, config):
    sizes = config["memory"]
    x, y = make_batch(model_name, sizes, "mlp_batch" if model_name.startswith("mlp") else "cnn_batch")
    peaks = {}
    for variant in ("exact", "linear_model"):
        # One model alive at a time, so nothing else shares the allocator.
        keras.backend.clear_session()
        gc.collect()
        (model,) = build_variants(model_name, sizes, jit_compile, (variant,)).values()
        model.train_on_batch(x, y)  # trace / compile outside the measurement
        peaks[variant] = statistics.median(step_memory_mib(model, x, y) for _ in range(3))
        del model
    return {
        "model": model_name,
        "jit_compile": jit_compile,
        "peak_mib": {"exact": round(peaks["exact"], 2), "linear": round(peaks["linear_model"], 2)},
        "linear_over_exact": round(peaks["linear_model"] / peaks["exact"], 4),
    }


def print_table(results):
    print()
    print(
        f"{'model':<12} {'jit':<5} {'exact':>9} {'lin_model':>9} {'lin_layers':>10} "
        f"{'identity':>9} {'lin/exact':>9} {'model/layers':>12} {'lin/identity':>12}"
    )
    for case in results["cases"]:
        ms = case["ms_per_step"]
        print(
            f"{case['model']:<12} {str(case['jit_compile']):<5} {ms['exact']:>9.3f} "
            f"{ms['linear_model']:>9.3f} {ms['linear_layers']:>10.3f} {ms['identity']:>9.3f} "
            f"{case['linear_over_exact']:>9.3f} {case['model_over_layers']:>12.3f} "
            f"{case['linear_over_identity']:>12.3f}"
        )
    print("(CPU ms per training step, median of interleaved rounds; ratios: median of per-round ratios)")
    print()
    print(f"{'model':<12} {'jit':<5} {'exact MiB':>10} {'linear MiB':>10} {'lin/exact':>9}")
    for case in results["memory"]:
        print(
            f"{case['model']:<12} {str(case['jit_compile']):<5} {case['peak_mib']['exact']:>10.1f} "
            f"{case['peak_mib']['linear']:>10.1f} {case['linear_over_exact']:>9.3f}"
        )
    print("(working memory of one training step)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for results.json")
    parser.add_argument("--quick", action="store_true", help="smaller networks, 5 rounds (< 2 min)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (>= 5)")
    args = parser.parse_args(argv)
    config = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        if args.repeats < 5:
            parser.error("--repeats must be at least 5")
        config["repeats"] = args.repeats

    started = time.perf_counter()
    results = {"cases": [], "memory": []}
    for model_name in MODELS:
        for jit_compile in (False, True):
            results["cases"].append(time_case(model_name, jit_compile, config))
            print(f"timed {model_name} jit_compile={jit_compile}", flush=True)
            keras.backend.clear_session()
    for model_name in MODELS:
        for jit_compile in (False, True):
            results["memory"].append(memory_case(model_name, jit_compile, config))
            print(f"measured memory {model_name} jit_compile={jit_compile}", flush=True)
            keras.backend.clear_session()
    results["config"] = {
        "quick": args.quick,
        "sizes": {"time": config["time"], "memory": config["memory"]},
        "repeats": config["repeats"],
        "threads": {"intra_op": 1, "inter_op": 1},
        "optimizer": "SGD(0.01)",
        "loss": "sparse categorical cross-entropy on logits",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "seconds": round(time.perf_counter() - started, 1),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print_table(results)
    print(f"\nwrote {os.path.join(args.out, 'results.json')} in {results['config']['seconds']} s")
    return results


if __name__ == "__main__":
    main()
