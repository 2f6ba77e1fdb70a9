"""Epoch time with and without the inspection callbacks.

The model: scikit-learn's digits (1437 train / 360 validation images of
8x8), an MLP 64-128-128-10 with tanh and a softmax output (wider than the
quickstart's 64-64-64-10), Adam, batch 32, `validation_data` given (so the
callbacks probe its first batch).

Method: one persistent model per configuration; rounds of `fit(epochs=E)`
interleaved across the configurations, the order rotated every round
(A B C D, B C D A, ...), so drifts in machine load hit all alike. A second
plain configuration (`baseline_repeat`) measures the noise floor. The
framework runs on one thread (TensorFlow: one intra-op and one inter-op
thread; JAX: single-threaded XLA CPU; PyTorch: one thread), as in
`benchmarks/step_time.py`, with `benchmarks/measure.py`'s `setup_backend`.
The epoch time is measured from `on_epoch_begin` to the end of
`on_epoch_end` of the last callback (so it includes the probe and the
validation pass), in wall time and in CPU time of the process (the
latter barely moved by other load on a shared machine; it does not count
the image render process, timed separately). The first round is warm-up (it traces the train,
test and probe functions); steady-state ratios are medians over the
other rounds (also as the median of per-round paired ratios). The one-off
cost of tracing the probe function is reported separately, as the
first-epoch ratio. Because the machine may be shared,
the probe function is also timed directly (median of repeated calls) and
given as a fraction of the baseline epoch; the matplotlib render of the
image summary (done in a separate low-priority process) is timed too.

    python benchmarks/callback_overhead.py --out results/callback_overhead
    python benchmarks/callback_overhead.py --backend jax --out results/callback_overhead_jax
    python benchmarks/callback_overhead.py --backend torch --out results/callback_overhead_torch
    python benchmarks/callback_overhead.py --quick --out /tmp/callback_overhead   # plumbing only, seconds

`--quick` (for tests): 256 training and 64 validation images, 2 rounds of
one epoch, 3 probe repeats, 2 renders; no measurement, the same results.json.

On JAX and PyTorch the callbacks probe eagerly (`jax.grad` / `torch.autograd`,
statistics in numpy) and TensorFlow only writes the summaries.
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import measure  # noqa: E402  (the method: thread pinning, rotation, results.json)

# Set by `setup` (the Keras backend must be chosen before Keras is imported).
tf = keras = keras_linbp = GradientFlow = SaturationHistograms = None


def setup(backend):
    """One framework thread (`measure.setup_backend`), then the imports.
    TensorFlow (which writes the summaries) gets one thread too."""
    global tf, keras, keras_linbp, GradientFlow, SaturationHistograms
    measure.setup_backend(backend)
    import tensorflow as tf_module

    if backend != "tensorflow":
        try:
            tf_module.config.threading.set_intra_op_parallelism_threads(1)
            tf_module.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already initialised
            pass
    import keras as keras_module

    import keras_linbp as linbp_module
    from keras_linbp.callbacks import GradientFlow as gradient_flow
    from keras_linbp.callbacks import SaturationHistograms as saturation

    tf, keras, keras_linbp = tf_module, keras_module, linbp_module
    GradientFlow, SaturationHistograms = gradient_flow, saturation


class EpochTimer:
    """Wall and CPU time of each epoch; must be the LAST callback. A
    `keras.callbacks.Callback` (made by `epoch_timer()` once Keras is
    imported)."""

    def __init__(self):
        super().__init__()
        self.times = []
        self.cpu_times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)
        # CPU time of this process (all its threads, not the render child):
        # far less sensitive than wall time to other load on the machine.
        self.cpu_times.append(time.process_time() - self._cpu_start)


def epoch_timer():
    return type("EpochTimer", (EpochTimer, keras.callbacks.Callback), {})()


def load_digits():
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)


def describe_model(model):
    """`digits MLP 64-128-128-10 tanh`, read from the built model."""
    sizes = [model.inputs[0].shape[-1]] + [layer.units for layer in model.layers]
    return "digits MLP " + "-".join(str(size) for size in sizes) + " tanh"


def build_model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="tanh"),
            keras.layers.Dense(128, activation="tanh"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for results.json")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs-per-round", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--probe-repeats", type=int, default=50)
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default="tensorflow")
    parser.add_argument("--quick", action="store_true",
                        help="256 images, 2 rounds of 1 epoch, for tests: seconds, no measurement")
    args = parser.parse_args(argv)
    renders = 5
    if args.quick:
        # Two rounds: the first is warm-up, the second the steady state.
        args.rounds, args.epochs_per_round, args.probe_repeats, renders = 2, 1, 3, 2
    setup(args.backend)
    os.makedirs(args.out, exist_ok=True)

    x_train, x_val, y_train, y_val = load_digits()
    if args.quick:
        x_train, x_val, y_train, y_val = x_train[:256], x_val[:64], y_train[:256], y_val[:64]
    log_root = tempfile.mkdtemp(prefix="callback_overhead_")
    configurations = {
        "baseline": lambda d: [],
        # A second, identical baseline: its ratio is the noise floor (A/A).
        "baseline_repeat": lambda d: [],
        "saturation": lambda d: [SaturationHistograms(d, freq=1)],
        "saturation_no_image": lambda d: [SaturationHistograms(d, freq=1, image=False)],
        "gradient_flow": lambda d: [GradientFlow(d, freq=1)],
    }
    runs = {}
    for index, (name, make_callbacks) in enumerate(configurations.items()):
        log_dir = os.path.join(log_root, name)
        runs[name] = {
            "model": build_model(seed=index),
            "callbacks": make_callbacks(log_dir),
            "epoch_times": [],  # per round: list of epoch times
            "cpu_times": [],
        }

    names = list(runs)
    for round_index in range(args.rounds):
        # Rotate the order each round: no configuration always runs first.
        for name in measure.rotation(names, round_index):
            run = runs[name]
            timer = epoch_timer()
            run["model"].fit(
                x_train,
                y_train,
                batch_size=args.batch_size,
                epochs=args.epochs_per_round,
                validation_data=(x_val, y_val),
                callbacks=run["callbacks"] + [timer],
                verbose=0,
            )
            run["epoch_times"].append(timer.times)
            run["cpu_times"].append(timer.cpu_times)

    def steady(name):
        return [t for times in runs[name]["epoch_times"][1:] for t in times]

    baseline = statistics.median(steady("baseline"))
    first_baseline = runs["baseline"]["epoch_times"][0][0]
    results = {
        "benchmark": "callback_overhead",
        "model": "%s, Adam, batch %d" % (
            describe_model(runs["baseline"]["model"]), args.batch_size
        ),
        "method": (
            "interleaved rounds of fit(epochs=%d), %d rounds, first round is "
            "warm-up; median epoch time; one framework thread"
            % (args.epochs_per_round, args.rounds)
        ),
        "backend": args.backend,
        "command": measure.repo_command(__file__, argv),
        "quick": args.quick,
        "train_size": len(x_train),
        "validation_size": len(x_val),
        "steps_per_epoch": int(np.ceil(len(x_train) / args.batch_size)),
        "baseline_epoch_seconds": baseline,
        "configurations": {},
        "versions": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "keras_linbp": keras_linbp.__version__,
        },
    }
    for name in configurations:
        median = statistics.median(steady(name))
        first = runs[name]["epoch_times"][0][0]
        # Paired by round: each round's median epoch over the same round's
        # baseline median, then the median over rounds (robust to drifts
        # in machine load between rounds).
        paired = [
            statistics.median(times) / statistics.median(base_times)
            for times, base_times in zip(
                runs[name]["epoch_times"][1:], runs["baseline"]["epoch_times"][1:]
            )
        ]
        cpu = [t for times in runs[name]["cpu_times"][1:] for t in times]
        base_cpu = [t for times in runs["baseline"]["cpu_times"][1:] for t in times]
        results["configurations"][name] = {
            "median_epoch_cpu_seconds": statistics.median(cpu),
            "cpu_ratio_to_baseline": statistics.median(cpu) / statistics.median(base_cpu),
            "median_epoch_seconds": median,
            "ratio_to_baseline": median / baseline,
            "paired_ratio_to_baseline": statistics.median(paired),
            # The first epoch of the first fit: traces train/test functions
            # and (with a callback) the probe function.
            "first_epoch_seconds": first,
            "first_epoch_ratio_to_baseline": first / first_baseline,
            "epoch_samples": len(steady(name)),
        }
    # Direct, less noisy: the probe's own cost (median of repeated probes,
    # each a call of the traced probe function) and the image render.
    step = tf.constant(0, tf.int64)
    for name in ("saturation_no_image", "gradient_flow"):
        callback = runs[name]["callbacks"][0]
        seconds = []
        for _ in range(args.probe_repeats):
            start = time.perf_counter()
            callback._probe(step)
            seconds.append(time.perf_counter() - start)
        probe = statistics.median(seconds)
        results["configurations"][name]["probe_seconds"] = probe
        results["configurations"][name]["probe_fraction_of_baseline_epoch"] = probe / baseline
    from keras_linbp import plotting

    histograms = {
        f"dense_{i}": (np.random.default_rng(i).integers(0, 50, 50), [-1.0, 1.0])
        for i in range(3)
    }
    seconds = []
    for _ in range(renders):
        start = time.perf_counter()
        plotting.activation_histogram_grid_png(histograms, step=0)
        seconds.append(time.perf_counter() - start)
    results["image_render_seconds"] = statistics.median(seconds)
    configurations_out = results["configurations"]
    results["ratio"] = configurations_out["saturation"]["paired_ratio_to_baseline"]
    results["ratio_no_image"] = configurations_out["saturation_no_image"]["paired_ratio_to_baseline"]
    results["ratio_gradient_flow"] = configurations_out["gradient_flow"]["paired_ratio_to_baseline"]
    results["noise_floor_ratio"] = configurations_out["baseline_repeat"]["paired_ratio_to_baseline"]
    results["cpu_ratio"] = configurations_out["saturation"]["cpu_ratio_to_baseline"]
    results["cpu_ratio_no_image"] = configurations_out["saturation_no_image"]["cpu_ratio_to_baseline"]
    results["cpu_ratio_gradient_flow"] = configurations_out["gradient_flow"]["cpu_ratio_to_baseline"]
    results["target_ratio"] = 1.03
    measure.write_results(args.out, results)
    for name, row in results["configurations"].items():
        probe = row.get("probe_seconds")
        print(
            f"{name:22s} median epoch {row['median_epoch_seconds'] * 1e3:7.1f} ms  "
            f"ratio {row['ratio_to_baseline']:.3f}  "
            f"paired {row['paired_ratio_to_baseline']:.3f}  "
            f"cpu {row['cpu_ratio_to_baseline']:.3f}  "
            f"first epoch ratio {row['first_epoch_ratio_to_baseline']:.2f}"
            + (f"  probe {probe * 1e3:.2f} ms" if probe else "")
        )
    print(f"image render (separate process) {results['image_render_seconds'] * 1e3:.0f} ms")
    return results


if __name__ == "__main__":
    main()
