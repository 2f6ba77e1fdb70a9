"""Fig. 4 of Yazdani (2018): does linear backprop keep learning at small learning rates?

The paper reports that on CIFAR-10 a binary VGG trained with linear backprop
reaches ~72 % test accuracy at lr 1e-5 where the straight-through estimator
stalls at ~46 %. This script asks the same question on scikit-learn's digits
(the 32x32x3 pipeline of `examples/binary_cifar10.py --dataset digits`:
3x upscale, zero pad, 3 channels, fixed stratified 80/20 split, per-channel
standardization), over a grid of learning rates, two optimizers and seeds.

Architectures (`--arch`):

- `binary_vgg`: `examples/binary_cifar10.py`'s binary VGG-19 layout
  (`build_vgg`, imported from that file; channels x `--vgg-width`, default
  1/8: 8..64 channels, 64-unit binary dense layer) on that file's 32x32x3
  digits pipeline (3x upscale, zero pad). 1-bit weights and activations,
  real-valued first conv and classifier. Rules: `ste` (the baseline: the
  clipped straight-through estimator `g <- g * 1[|x| <= 1]` through every
  sign, BinaryNet / Larq's default), `linear` (`g <- g` through every sign:
  `build_vgg("linear")`; the binary layers fix their own rule, so no wrapper
  is needed or would change it), `auto` (`LinearBackpropModel.from_model(
  build_vgg("linear"), slope="auto")`: skipped, and listed under `"skipped"`
  with the reason, when the wrapper has no site to calibrate -- as with
  keras_linbp 0.2, where binary signs fix their own rule).
- `resnet20`: a real-valued ResNet-20 (He et al. 2016, CIFAR layout: 16/32/64
  channels x `--resnet-width`, default 1/4: 4/8/16; 3 stages of 3 basic
  blocks `relu(bn(conv(relu(bn(conv(x))))) + shortcut)`, 1x1 conv + BN
  shortcuts where the shape changes, global average pooling) with
  `keras.layers.Activation("relu")` sites, on digits upscaled 2x to 16x16x3
  (`--resnet-image-size 32` for the 32x32 pipeline: 4x the cost). Rules:
  `exact` (the baseline: ordinary backprop), `linear`
  (`LinearBackpropModel.from_model(model, slope=1.0)`: every ReLU
  backpropagates `g <- g`), `auto` (`from_model(model, slope="auto",
  recalibrate=--auto-recalibrate)`). The builder is written here because
  `binary_cifar10.build_resnet` only builds binary layers; it reuses that
  file's stage layout and width rounding.

`--rules baseline linear auto` (default: all three) chooses rules; `baseline`
is `ste` for `binary_vgg` and `exact` for `resnet20`.

Optimizers: Adam and SGD with momentum 0.9, each at every `--lrs` (default
1e-5, 1e-4, 1e-3, 1e-2); cross-entropy on logits; `--epochs` (default 3)
epochs of batch `--batch-size` (default 16: 270 steps over the 1,437
training images); seeds `--seeds` (default 0 1 2); test accuracy on the 360
held-out images after the last epoch. Every rule starts from the same
initial weights for a given seed and sees the same batch order: the
comparison is paired.

Runs of one (arch, rule, optimizer) share one compiled model: before each
(seed, lr) the weights are set to that seed's initialization, the
optimizer's variables are zeroed (iterations, moments) and its learning rate
set. Tracing the training step costs 10-40 s on one shared CPU core, more
than a short run's training; `test_reset_equals_fresh_model` in
`tests/examples/lr_robustness_test.py` checks that a reset run trains exactly as a
fresh model. `slope="auto"` bakes its slopes into the traced step, so each
recalibration that changes them retraces: with `--auto-recalibrate fit`
(default here) the slopes are calibrated once at the start of each run, on
the initial weights; `epoch` (the library's default) recalibrates, and
retraces, every epoch.

Outputs with `--out DIR`: `results.json` = `{"command", "runs": [{"arch",
"rule", "optimizer", "lr", "slope", "test_accuracy_mean",
"test_accuracy_std" (population std over seeds), "test_accuracy" (per
seed), "final_train_loss" (per seed; None if not finite), "diverged" (seeds
whose loss became non-finite), "seeds", "train_seconds", "epochs",
"batch_size", "width", "train_size", "image_shape"; for `auto` also
"recalibrate", "calibrated_slope_range"}], "skipped", "settings", "tables",
"total_seconds"}`, `heatmap_<arch>.png` (rules x lr, one panel per
optimizer, mean test accuracy) and the markdown tables (also printed).
`--append` keeps the runs of an existing `results.json` in DIR that this
invocation does not redo and appends this command to its `command`;
`--replot` only redraws DIR's heatmaps and tables from its `results.json`.

Usage:

    python examples/lr_robustness.py --out results/lr_robustness
    python examples/lr_robustness.py --rules auto --append --out results/lr_robustness
    python examples/lr_robustness.py --smoke --out /tmp/lr_robustness
"""

import argparse
import importlib.util
import json
import math
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import repo_command, write_results  # noqa: E402  (what a results directory records)

import numpy as np  # noqa: E402
import keras  # noqa: E402

import keras_linbp  # noqa: E402


def _load_example(name):
    """examples/<name>.py as a module (examples/ is not a package)."""
    path = pathlib.Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


binary_cifar10 = _load_example("binary_cifar10")
# One intra-op and one inter-op thread (shared, noisy CPUs), as the sweep.
pin_threads = _load_example("paper_fig1_synthetic").pin_threads

ARCHS = ("binary_vgg", "resnet20")
RULES = ("baseline", "linear", "auto")
BASELINE = {"binary_vgg": "ste", "resnet20": "exact"}
OPTIMIZERS = ("adam", "sgd")
LEARNING_RATES = (1e-5, 1e-4, 1e-3, 1e-2)
SGD_MOMENTUM = 0.9
AUTO_NO_SITES = (
    'LinearBackpropModel.from_model(model, slope="auto").linear_sites() is empty: the '
    "model's only activation sites fix their own backward rule (the binary layers' "
    "BinarySign), so `auto` would train exactly as `linear`"
)
PAPER = "Yazdani 2018, Fig. 4: CIFAR-10 binary VGG, lr 1e-5, ~72 % (linear) vs ~46 % (STE)"


# --- models ------------------------------------------------------------------

def build_resnet20(width, num_classes, input_shape=(32, 32, 3)):
    """Real-valued ResNet-20 (CIFAR layout) with `Activation("relu")` sites."""
    channels_of = binary_cifar10._channels
    inputs = keras.Input(input_shape)
    channels = channels_of(binary_cifar10.RESNET20_STAGES[0][0], width)
    x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name="conv_stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn_stem")(x)
    x = keras.layers.Activation("relu", name="relu_stem")(x)
    for stage, (base, blocks) in enumerate(binary_cifar10.RESNET20_STAGES):
        channels = channels_of(base, width)
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            shortcut = x
            if strides != 1 or x.shape[-1] != channels:
                shortcut = keras.layers.Conv2D(channels, 1, strides=strides, use_bias=False,
                                               name=f"{name}_shortcut")(x)
                shortcut = keras.layers.BatchNormalization(momentum=0.9,
                                                           name=f"{name}_shortcut_bn")(shortcut)
            h = keras.layers.Conv2D(channels, 3, strides=strides, padding="same",
                                    use_bias=False, name=f"{name}_conv1")(x)
            h = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn1")(h)
            h = keras.layers.Activation("relu", name=f"{name}_relu1")(h)
            h = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                                    name=f"{name}_conv2")(h)
            h = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn2")(h)
            x = keras.layers.Add(name=f"{name}_add")([h, shortcut])
            x = keras.layers.Activation("relu", name=f"{name}_relu2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="resnet20")


# --- data --------------------------------------------------------------------

def load_digits(image_size):
    """sklearn digits as `image_size`-square 3-channel images, standardized.

    32: `binary_cifar10.load_digits_32x32` (3x upscale, zero pad to 32x32).
    16: 2x upscale, no pad. The 80/20 split is the same (stratified,
    `random_state=0` on the same sample order).
    """
    if image_size == 32:
        return binary_cifar10.prepare(*binary_cifar10.load_digits_32x32())
    if image_size != 16:
        raise ValueError(f"image_size must be 16 or 32, got {image_size}.")
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = np.kron(digits.images / 16.0, np.ones((1, 2, 2)))
    images = np.repeat(images[..., None], 3, axis=-1).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    return binary_cifar10.prepare(x_train, y_train, x_test, y_test)


# --- models (continued) ------------------------------------------------------

def build_base_model(arch, rule, width, num_classes, input_shape):
    """The plain Keras model of `arch`; for `binary_vgg` its signs use `ste` or `linear`."""
    if arch == "binary_vgg":
        sign_rule = "ste" if rule == "baseline" else "linear"
        return binary_cifar10.build_vgg(sign_rule, width, num_classes, input_shape)
    if arch == "resnet20":
        return build_resnet20(width, num_classes, input_shape)
    raise ValueError(f"Unknown arch {arch!r}; expected one of {ARCHS}.")


def rule_name(arch, rule):
    return BASELINE[arch] if rule == "baseline" else rule


def rule_slope(rule):
    return {"baseline": None, "linear": 1.0, "auto": "auto"}[rule]


def build_training_model(arch, rule, width, num_classes, input_shape, recalibrate="fit"):
    """The model `fit` trains.

    The baseline is the plain model. For `binary_vgg` the linear rule lives in
    the binary layers themselves (`BinarySign("linear")`, a site that fixes its
    own rule and that no `LinearBackpropModel` option changes), so its `linear`
    model is the plain binary model too. `auto` (both archs) and `linear`
    (`resnet20`) wrap the model with `LinearBackpropModel.from_model(model,
    slope=...)`.
    """
    model = build_base_model(arch, rule, width, num_classes, input_shape)
    if rule == "baseline" or (arch == "binary_vgg" and rule == "linear"):
        return model
    if rule == "auto":
        return keras_linbp.LinearBackpropModel.from_model(
            model, slope="auto", recalibrate=recalibrate
        )
    return keras_linbp.LinearBackpropModel.from_model(model, slope=rule_slope(rule))


def auto_slope_supported():
    """Whether this keras_linbp accepts `slope="auto"` (it is new in 0.2)."""
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(1)(keras.layers.Dense(2, activation="relu")(inputs))
    try:
        keras_linbp.LinearBackpropModel(inputs, outputs, slope="auto")
    except (TypeError, ValueError):
        return False
    return True


def make_optimizer(name, learning_rate):
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=SGD_MOMENTUM)
    raise ValueError(f"Unknown optimizer {name!r}; expected one of {OPTIMIZERS}.")


def initial_weights(arch, width, num_classes, input_shape, seed):
    """The weights a model of `arch` gets with `seed` (the same for every rule)."""
    keras.utils.set_random_seed(seed)
    model = build_base_model(arch, "baseline", width, num_classes, input_shape)
    return [np.array(w) for w in model.get_weights()]


def reset(model, weights, learning_rate):
    """Sets the model's weights and a fresh optimizer state with `learning_rate`."""
    model.set_weights(weights)
    for variable in model.optimizer.variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    model.optimizer.learning_rate = learning_rate


# --- training ----------------------------------------------------------------

def accuracy(model, x, y, batch_size=256):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def train_group(args, data, arch, rule, optimizer_name, weights_by_seed):
    """All (seed, lr) runs of one compiled model; returns one summary per lr.

    Seeds outermost: with `slope="auto"` and `recalibrate="fit"` the slopes
    calibrated at the start of a run depend only on the initial weights, so
    the runs of one seed reuse one trace of the training step.
    """
    x_train, y_train, x_test, y_test = data
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    keras.utils.clear_session()
    model = build_training_model(arch, rule, args.width[arch], num_classes, x_train.shape[1:],
                                 recalibrate=args.auto_recalibrate)
    model.compile(
        optimizer=make_optimizer(optimizer_name, args.lrs[0]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=args.smoke,
    )
    per_lr = {lr: {"accuracies": [], "losses": [], "seconds": 0.0, "slopes": []}
              for lr in args.lrs}
    for seed in args.seeds:
        for lr in args.lrs:
            reset(model, weights_by_seed[seed], lr)
            keras.utils.set_random_seed(seed)  # the same batch order for every rule
            start = time.perf_counter()
            history = model.fit(x_train, y_train, batch_size=args.batch_size,
                                epochs=args.epochs, verbose=0)
            record = per_lr[lr]
            record["seconds"] += time.perf_counter() - start
            loss = history.history["loss"][-1]
            record["losses"].append(float(loss) if math.isfinite(loss) else None)
            record["accuracies"].append(accuracy(model, x_test, y_test))
            if rule == "auto":
                record["slopes"] += list((model.calibrated_slopes or {}).values())
    summaries = []
    for lr in args.lrs:
        record = per_lr[lr]
        accuracies, losses = record["accuracies"], record["losses"]
        summary = {
            "arch": arch,
            "rule": rule_name(arch, rule),
            "optimizer": optimizer_name,
            "lr": lr,
            "slope": rule_slope(rule),
            "test_accuracy_mean": float(np.mean(accuracies)),
            "test_accuracy_std": float(np.std(accuracies)),
            "test_accuracy": accuracies,
            "final_train_loss": losses,
            "diverged": sum(loss is None for loss in losses),
            "seeds": list(args.seeds),
            "train_seconds": record["seconds"],
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "width": args.width[arch],
            "train_size": len(x_train),
            "image_shape": list(x_train.shape[1:]),
        }
        if rule == "auto":
            summary["recalibrate"] = args.auto_recalibrate
            # The slopes in force at the end of each seed's run, over sites and seeds.
            summary["calibrated_slope_range"] = (
                [min(record["slopes"]), max(record["slopes"])] if record["slopes"] else None
            )
        print(f"  {arch:<10} {summary['rule']:<6} {optimizer_name:<4} lr {lr:<6g} "
              f"test accuracy {summary['test_accuracy_mean']:.3f} ± "
              f"{summary['test_accuracy_std']:.3f}  losses "
              f"{[None if l is None else round(l, 3) for l in losses]}  "
              f"({record['seconds']:.0f} s)", flush=True)
        summaries.append(summary)
    return summaries


# --- reporting ---------------------------------------------------------------

RULE_ORDER = ("ste", "exact", "linear", "auto")


def _rule_key(rule):
    return RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER)


def markdown_table(runs, arch):
    runs = [r for r in runs if r["arch"] == arch]
    lrs = sorted({r["lr"] for r in runs})
    by_key = {(r["rule"], r["optimizer"], r["lr"]): r for r in runs}
    lines = ["| optimizer | rule | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
             "|---|---|" + "---:|" * len(lrs)]
    for optimizer in OPTIMIZERS:
        for rule in sorted({r["rule"] for r in runs}, key=_rule_key):
            cells = []
            for lr in lrs:
                r = by_key.get((rule, optimizer, lr))
                if r is None:
                    cells.append("–")
                    continue
                text = (f"{100 * r['test_accuracy_mean']:.1f} ± "
                        f"{100 * r['test_accuracy_std']:.1f}")
                if r["diverged"]:
                    text += f" ({r['diverged']} div.)"
                cells.append(text)
            label = "Adam" if optimizer == "adam" else f"SGD (momentum {SGD_MOMENTUM:g})"
            lines.append(f"| {label} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_heatmap(path, runs, arch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r["arch"] == arch]
    lrs = sorted({r["lr"] for r in runs})
    rules = sorted({r["rule"] for r in runs}, key=_rule_key)
    by_key = {(r["rule"], r["optimizer"], r["lr"]): r for r in runs}
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.0 + 0.7 * len(rules)), squeeze=False)
    for ax, optimizer in zip(axes[0], OPTIMIZERS):
        values = np.full((len(rules), len(lrs)), np.nan)
        for i, rule in enumerate(rules):
            for j, lr in enumerate(lrs):
                r = by_key.get((rule, optimizer, lr))
                if r is not None:
                    values[i, j] = r["test_accuracy_mean"]
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0,
                          aspect="auto")
        for i, rule in enumerate(rules):
            for j, lr in enumerate(lrs):
                r = by_key.get((rule, optimizer, lr))
                if r is None:
                    continue
                text = f"{100 * r['test_accuracy_mean']:.0f}±{100 * r['test_accuracy_std']:.0f}"
                if r["diverged"]:
                    text += f"\n{r['diverged']} div."
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_yticks(range(len(rules)), rules)
        ax.set_xlabel("learning rate")
        optimizer_label = "Adam" if optimizer == "adam" else f"SGD, momentum {SGD_MOMENTUM:g}"
        ax.set_title(f"{arch} on digits, {optimizer_label}: test accuracy (%)", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), label="test accuracy (mean over seeds)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- main --------------------------------------------------------------------

def replot(out):
    """Redraws the heatmaps and tables of `out`/results.json (no training)."""
    path = os.path.join(out, "results.json")
    with open(path) as f:
        results = json.load(f)
    archs = [a for a in ARCHS if any(r["arch"] == a for r in results["runs"])]
    results["tables"] = {arch: markdown_table(results["runs"], arch) for arch in archs}
    for arch in archs:
        plot_heatmap(os.path.join(out, f"heatmap_{arch}.png"), results["runs"], arch)
        print(f"\n{arch}\n\n{results['tables'][arch]}")
    write_results(out, results)
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES),
                        help="baseline = ste (binary_vgg) / exact (resnet20)")
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LEARNING_RATES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vgg-width", type=float, default=1 / 8,
                        help="channel width multiplier of binary_vgg (1: VGG-19's 64..512)")
    parser.add_argument("--resnet-width", type=float, default=0.25,
                        help="channel width multiplier of resnet20 (1: 16/32/64)")
    parser.add_argument("--resnet-image-size", type=int, choices=[16, 32], default=16,
                        help="resnet20 input: 16 (2x upscale) or 32 (binary_cifar10's "
                        "32x32 pipeline); binary_vgg needs 32 (five 2x2 pools)")
    parser.add_argument("--auto-recalibrate", choices=["fit", "epoch"], default="fit",
                        help='when slope="auto" recalibrates (LinearBackpropModel '
                        "recalibrate=); 'epoch' retraces the training step every epoch")
    parser.add_argument("--threads", type=int, default=1,
                        help="TF intra-op and inter-op threads (0: TF's default)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: 64/32 samples, 1 epoch, 1 seed, 2 lrs, eager")
    parser.add_argument("--append", action="store_true",
                        help="keep the other runs of DIR/results.json and add these")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw DIR's heatmaps and tables from its results.json")
    parser.add_argument("--out", default=None, help="directory for results.json and heatmaps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 1
        args.seeds = args.seeds[:1]
        args.lrs = [args.lrs[0], args.lrs[-1]]
        args.vgg_width = min(args.vgg_width, 1 / 16)
        args.batch_size = 32
        args.resnet_width = min(args.resnet_width, 1 / 8)
    args.width = {"binary_vgg": args.vgg_width, "resnet20": args.resnet_width}
    args.image_size = {"binary_vgg": 32, "resnet20": args.resnet_image_size}
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.replot:
        return replot(args.out)
    pin_threads(args.threads)
    if "auto" in args.rules and not auto_slope_supported():
        print(f"error: this keras_linbp ({keras_linbp.__version__}) does not accept "
              'slope="auto"; run the other rules with `--rules baseline linear`.',
              file=sys.stderr)
        return 2
    print(f"digits; archs {args.arch}, rules {args.rules}, optimizers {args.optimizers}, "
          f"lrs {args.lrs}, seeds {args.seeds}, {args.epochs} epochs of batch "
          f"{args.batch_size}", flush=True)
    start = time.perf_counter()
    runs, data_sizes, skipped = [], {}, []
    for arch in args.arch:
        data = load_digits(args.image_size[arch])
        if args.smoke:
            x_train, y_train, x_test, y_test = data
            data = (x_train[:64], y_train[:64], x_test[:32], y_test[:32])
        x_train, y_train, x_test, y_test = data
        data_sizes[arch] = {"train": len(x_train), "test": len(x_test),
                            "image_shape": list(x_train.shape[1:])}
        num_classes = int(max(y_train.max(), y_test.max()) + 1)
        print(f"{arch}: width {args.width[arch]:g}, {len(x_train)} train / {len(x_test)} test "
              f"images {x_train.shape[1:]}", flush=True)
        weights_by_seed = {
            seed: initial_weights(arch, args.width[arch], num_classes, x_train.shape[1:], seed)
            for seed in args.seeds
        }
        for rule in args.rules:
            if rule == "auto" and not build_training_model(
                arch, rule, args.width[arch], num_classes, x_train.shape[1:]
            ).linear_sites():
                skipped.append({"arch": arch, "rule": "auto", "reason": AUTO_NO_SITES})
                print(f"  {arch:<10} auto: skipped ({AUTO_NO_SITES})")
                continue
            for optimizer_name in args.optimizers:
                runs += train_group(args, data, arch, rule, optimizer_name, weights_by_seed)
    seconds = time.perf_counter() - start

    command = repo_command(__file__, argv)
    results_path = os.path.join(args.out, "results.json") if args.out else None
    if args.append and results_path and os.path.exists(results_path):
        with open(results_path) as f:
            previous = json.load(f)
        redone = {(r["arch"], r["rule"], r["optimizer"], r["lr"]) for r in runs}
        runs = [r for r in previous["runs"]
                if (r["arch"], r["rule"], r["optimizer"], r["lr"]) not in redone] + runs
        command = previous["command"] + " && " + command
        seconds += previous.get("total_seconds", 0.0)
        data_sizes = {**previous["settings"]["data"], **data_sizes}
        skipped = [s for s in previous.get("skipped", []) if s not in skipped] + skipped

    archs = [a for a in ARCHS if any(r["arch"] == a for r in runs)]
    tables = {arch: markdown_table(runs, arch) for arch in archs}
    results = {
        "command": command,
        "paper": PAPER,
        "settings": {
            "dataset": ("sklearn digits, 80/20 stratified split, per-channel standardization; "
                        "binary_vgg: 3x upscale + zero pad to 32x32x3 (binary_cifar10's "
                        "pipeline); resnet20: 2x upscale to 16x16x3 or the 32x32 pipeline "
                        "(see each run's image_shape); epochs, batch size and width: per run"),
            "data": data_sizes,
            "sgd_momentum": SGD_MOMENTUM,
            "threads": args.threads,
            "baseline": BASELINE,
        },
        "total_seconds": seconds,
        "runs": runs,
        "skipped": skipped,
        "tables": tables,
    }
    for arch in archs:
        print(f"\n{arch} (test accuracy %, mean ± std over seeds {args.seeds})\n")
        print(tables[arch])
    print(f"\n{seconds:.0f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for arch in archs:
            plot_heatmap(os.path.join(args.out, f"heatmap_{arch}.png"), runs, arch)
        write_results(args.out, results)
        print(f"wrote {results_path} and heatmap_<arch>.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
