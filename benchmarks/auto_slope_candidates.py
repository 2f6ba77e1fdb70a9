"""Which per-site slope statistic should `slope="auto"` use?

For keras.applications MobileNetV2 (alpha 0.35), ResNet50 and
EfficientNetB0 (random weights, 32x32x3 inputs built from scikit-learn's
digits, 10 classes, logits head) this measures, at initialisation, the
global norm of the weight gradient of one batch under

- exact backprop,
- linear backprop at slope 1,
- linear backprop with per-site slopes from each candidate statistic of
  `keras_linbp.calibrate_slopes` (`"rms"`: sqrt(mean f'(a)^2), `"mean"`:
  mean f'(a)),

and writes the ratios linear / exact to `results.json`. A ratio near 1
means the linear rule's gradient has exact backprop's scale.

    python benchmarks/auto_slope_candidates.py --out results/auto_slope_candidates
    python benchmarks/auto_slope_candidates.py --quick --out /tmp/auto_slope   # seconds

`--quick` (for tests): MobileNetV2 only, one seed, a batch of 8.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_linbp  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from measure import repo_command, write_results  # noqa: E402  (results.json, as every benchmark writes it)

MODELS = {
    "MobileNetV2": lambda: keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
    ),
    "ResNet50": lambda: keras.applications.ResNet50(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None
    ),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None
    ),
}


def digits_32(n):
    """`n` scikit-learn digits as 32x32x3 images in [0, 1], and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images[:n].astype("float32") / 16.0
    x = tf.image.resize(x[..., None], (32, 32)).numpy()
    return np.repeat(x, 3, axis=-1), digits.target[:n]


def gradient_norm(model, x, y, **linearize_options):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        if linearize_options:
            with keras_linbp.linearize(model, **linearize_options):
                loss = loss_fn(y, model(x, training=True))
        else:
            loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return float(tf.linalg.global_norm([g for g in grads if g is not None]))


def measure(name, x, y, seed):
    keras.utils.set_random_seed(seed)
    model = MODELS[name]()
    saved = [v.numpy() for v in model.non_trainable_variables]

    def restore():
        for v, value in zip(model.non_trainable_variables, saved):
            v.assign(value)

    row = {"model": name, "seed": seed}
    row["exact"] = gradient_norm(model, x, y)
    restore()
    row["linear_slope_1"] = gradient_norm(model, x, y, slope=1.0)
    restore()
    for statistic in ("rms", "mean"):
        slopes = keras_linbp.calibrate_slopes(model, x, statistic=statistic)
        row[f"linear_auto_{statistic}"] = gradient_norm(model, x, y, slope=slopes)
        row[f"median_slope_{statistic}"] = float(np.median(list(slopes.values())))
        restore()
    row["linear_sites"] = len(slopes)
    for key in ("linear_slope_1", "linear_auto_rms", "linear_auto_mean"):
        row[f"{key}_over_exact"] = row[key] / row["exact"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=None,
                        help="default: all (with --quick: MobileNetV2)")
    parser.add_argument("--seeds", type=int, default=None, help="default 2 (with --quick: 1)")
    parser.add_argument("--batch", type=int, default=None, help="default 64 (with --quick: 8)")
    parser.add_argument("--quick", action="store_true",
                        help="MobileNetV2, 1 seed, batch 8, for tests: seconds")
    args = parser.parse_args(argv)
    if args.models is None:
        args.models = ["MobileNetV2"] if args.quick else list(MODELS)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 2
    if args.batch is None:
        args.batch = 8 if args.quick else 64
    x, y = digits_32(args.batch)
    rows = []
    for name in args.models:
        for seed in range(args.seeds):
            start = time.time()
            row = measure(name, x, y, seed)
            rows.append(row)
            print(
                f"{name} seed {seed}: exact {row['exact']:.3g}, slope 1 "
                f"{row['linear_slope_1']:.3g} ({row['linear_slope_1_over_exact']:.3g}x), "
                f"rms {row['linear_auto_rms']:.3g} ({row['linear_auto_rms_over_exact']:.3g}x), "
                f"mean {row['linear_auto_mean']:.3g} ({row['linear_auto_mean_over_exact']:.3g}x) "
                f"[{time.time() - start:.0f} s]",
                flush=True,
            )
    result = {
        "command": repo_command(__file__, argv),
        "batch": args.batch,
        "quick": args.quick,
        "rows": rows,
    }
    write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
