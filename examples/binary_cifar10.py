"""Figs. 2-4 of Yazdani (2018): binary VGG / ResNet, linear backprop vs STE.

Trains a binary network (1-bit weights and activations, `keras_linbp.binary`)
with the backward rule through every sign set to linear backprop (`g <- g`)
or to the clipped straight-through estimator (`g <- g * 1[|x| <= 1]`,
BinaryNet / Larq's default), over several seeds (and optionally a grid of
weight decays, as in the paper's Fig. 4), and reports test accuracy.

Architectures (sized for 32x32x3 inputs; `--width` scales every channel
count, so `--width 0.25` is a 4x thinner network):

- `vgg`: the VGG-19 layout -- conv channels 64,64,M,128,128,M,256x4,M,
  512x4,M,512x4,M (M = 2x2 max pool), then a 512-unit binary dense layer
  and the classifier. Every block is `conv -> [pool] -> BatchNorm`; the
  sign sits in the next binary layer's input (BinaryNet order).
- `resnet`: the ResNet-20 layout for CIFAR -- 16/32/64 channels, 3 stages of
  3 basic blocks, global average pooling. Each basic block is
  `BN(binconv(x)) -> BN(binconv(.)) + shortcut(x)`; the shortcut is the
  identity, or a real-valued 1x1 conv + BN where the shape changes.

As is customary for binary networks (BinaryNet, XNOR-Net, Bi-Real Net,
Larq's zoo), the first convolution, the 1x1 downsampling shortcuts and the
final classifier stay real-valued; every other conv / dense layer is a
`BinaryConv2D` / `BinaryDense` with binarized inputs and kernel, latent
weights clipped to [-1, 1]. Optimizer: Adam with decoupled weight decay
(Keras's `weight_decay=`), cross-entropy on logits.

Data:

- `--dataset cifar10` (default): `keras.datasets.cifar10.load_data()`
  (downloads ~170 MB once) or `--data path/to/cifar10.npz` holding arrays
  `x_train, y_train, x_test, y_test` (uint8 images 32x32x3, int labels).
  Without network and without `--data` the script says so and stops.
- `--dataset digits`: scikit-learn's bundled 8x8 digits (no download),
  upscaled 3x to 24x24, zero-padded to 32x32 and repeated to 3 channels,
  split 80/20 (stratified, fixed split): the same pipeline, offline.

Outputs with `--out DIR`: `results.json` = `{"dataset", "arch", "rules":
{"linear": {...}, "ste": {...}}}` with per rule `test_accuracy_mean`,
`test_accuracy_std` (population std over seeds; the accuracy after the
last epoch), `seeds`, `test_accuracy` (per seed), `final_train_loss_mean`
/ `_std`, `weight_decay` (with several weight decays:
the one with the best mean, and every one under `by_weight_decay`), and
`learning_curves.png`. `--logdir DIR` logs Keras's TensorBoard callback and
`keras_linbp.callbacks.SaturationHistograms` (sign-unit saturation on a
fixed probe batch) per run.

Usage:

    python examples/binary_cifar10.py --arch vgg --rule both --epochs 100 \\
        --lr 1e-4 --weight-decay 0 1e-6 1e-4 1e-2 1e-1 --data cifar10.npz --out runs/vgg
    python examples/binary_cifar10.py --dataset digits --arch resnet --out runs/digits
    python examples/binary_cifar10.py --dataset digits --smoke --out /tmp/smoke
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import repo_command, write_results  # noqa: E402  (what a results directory records)

import numpy as np  # noqa: E402
import keras  # noqa: E402

from keras_linbp.binary import BinaryConv2D  # noqa: E402
from keras_linbp.binary import BinaryDense  # noqa: E402

VGG19_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
VGG_DENSE_UNITS = 512
RESNET20_STAGES = [(16, 3), (32, 3), (64, 3)]
RULES = ("linear", "ste")


# --- data --------------------------------------------------------------------

class DataUnavailable(RuntimeError):
    pass


def load_cifar10(path=None):
    if path is not None:
        with np.load(path) as data:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
            if missing:
                raise DataUnavailable(
                    f"{path} lacks arrays {sorted(missing)}; expected x_train, "
                    "y_train, x_test, y_test."
                )
            return tuple(data[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:  # no network, proxy, truncated download, ...
        raise DataUnavailable(
            f"Could not download CIFAR-10 ({type(error).__name__}: {error}).\n"
            "Without network access, either pass the data yourself with\n"
            "  --data path/to/cifar10.npz   (arrays x_train, y_train, x_test, y_test)\n"
            "or run the same pipeline offline on scikit-learn's digits with\n"
            "  --dataset digits"
        ) from error
    return x_train, y_train, x_test, y_test


def load_digits_32x32():
    """sklearn digits as 32x32x3 images: 3x upscale, zero pad, 3 channels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images / 16.0  # (n, 8, 8) in [0, 1]
    images = np.kron(images, np.ones((1, 3, 3)))  # (n, 24, 24)
    images = np.pad(images, ((0, 0), (4, 4), (4, 4)))
    images = np.repeat(images[..., None], 3, axis=-1).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    return x_train, y_train, x_test, y_test


def prepare(x_train, y_train, x_test, y_test):
    """Float images standardized per channel with training statistics."""
    x_train = np.asarray(x_train, "float32")
    x_test = np.asarray(x_test, "float32")
    if x_train.max() > 1.5:  # uint8 images
        x_train, x_test = x_train / 255.0, x_test / 255.0
    mean = x_train.mean(axis=(0, 1, 2))
    std = x_train.std(axis=(0, 1, 2)) + 1e-7
    y_train = np.asarray(y_train).reshape(-1).astype("int32")
    y_test = np.asarray(y_test).reshape(-1).astype("int32")
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


# --- models ------------------------------------------------------------------

def _channels(base, width):
    return max(1, int(round(base * width)))


def build_vgg(rule, width, num_classes, input_shape=(32, 32, 3)):
    inputs = keras.Input(input_shape)
    x = inputs
    first = True
    layout = list(VGG19_LAYOUT)
    for i, item in enumerate(layout):
        if item == "M":
            continue
        channels = _channels(item, width)
        if first:  # real-valued first layer
            x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                                    name="conv_real")(x)
            first = False
        else:
            x = BinaryConv2D(channels, 3, padding="same", use_bias=False, rule=rule,
                             name=f"binconv_{i}")(x)
        if i + 1 < len(layout) and layout[i + 1] == "M":
            x = keras.layers.MaxPooling2D(2)(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn_{i}")(x)
    x = keras.layers.Flatten()(x)
    x = BinaryDense(_channels(VGG_DENSE_UNITS, width), use_bias=False, rule=rule,
                    name="bindense")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn_dense")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)  # real-valued
    return keras.Model(inputs, outputs, name=f"binary_vgg19_{rule}")


def build_resnet(rule, width, num_classes, input_shape=(32, 32, 3)):
    inputs = keras.Input(input_shape)
    channels = _channels(RESNET20_STAGES[0][0], width)
    x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                            name="conv_real")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn_stem")(x)
    for stage, (base, blocks) in enumerate(RESNET20_STAGES):
        channels = _channels(base, width)
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            shortcut = x
            if strides != 1 or x.shape[-1] != channels:
                shortcut = keras.layers.Conv2D(channels, 1, strides=strides, use_bias=False,
                                               name=f"{name}_shortcut")(x)  # real-valued
                shortcut = keras.layers.BatchNormalization(momentum=0.9,
                                                           name=f"{name}_shortcut_bn")(shortcut)
            h = BinaryConv2D(channels, 3, strides=strides, padding="same", use_bias=False,
                             rule=rule, name=f"{name}_binconv1")(x)
            h = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn1")(h)
            h = BinaryConv2D(channels, 3, padding="same", use_bias=False, rule=rule,
                             name=f"{name}_binconv2")(h)
            h = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn2")(h)
            x = keras.layers.Add(name=f"{name}_add")([h, shortcut])
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)  # real-valued
    return keras.Model(inputs, outputs, name=f"binary_resnet20_{rule}")


BUILDERS = {"vgg": build_vgg, "resnet": build_resnet}


# --- training ----------------------------------------------------------------

def train_one(args, data, rule, weight_decay, seed, logdir=None):
    x_train, y_train, x_test, y_test = data
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    model = BUILDERS[args.arch](rule, args.width, num_classes, x_train.shape[1:])
    optimizer = keras.optimizers.Adam(
        learning_rate=args.lr, weight_decay=weight_decay if weight_decay > 0 else None
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=args.jit_compile,
        # A smoke run takes a handful of steps: tracing them would cost more.
        run_eagerly=args.smoke,
    )
    callbacks = []
    if logdir is not None:
        from keras_linbp.callbacks import SaturationHistograms

        callbacks.append(keras.callbacks.TensorBoard(log_dir=logdir))
        callbacks.append(SaturationHistograms(logdir, data=x_test[: args.batch_size]))
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        callbacks=callbacks,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return {
        "seed": seed,
        "weight_decay": weight_decay,
        "test_accuracy": float(test_accuracy),
        "train_seconds": seconds,
        "history": {
            "loss": [float(v) for v in history.history["loss"]],
            "accuracy": [float(v) for v in history.history["accuracy"]],
            "val_accuracy": [float(v) for v in history.history["val_accuracy"]],
        },
    }


def summarize_rule(runs, weight_decays):
    by_weight_decay = {}
    for wd in weight_decays:
        accuracies = [r["test_accuracy"] for r in runs if r["weight_decay"] == wd]
        final_losses = [r["history"]["loss"][-1] for r in runs if r["weight_decay"] == wd]
        by_weight_decay[repr(wd)] = {
            "weight_decay": wd,
            "test_accuracy_mean": float(np.mean(accuracies)),
            "test_accuracy_std": float(np.std(accuracies)),
            "test_accuracy": accuracies,
            "final_train_loss_mean": float(np.mean(final_losses)),
            "final_train_loss_std": float(np.std(final_losses)),
        }
    best = max(by_weight_decay.values(), key=lambda s: s["test_accuracy_mean"])
    return {
        "test_accuracy_mean": best["test_accuracy_mean"],
        "test_accuracy_std": best["test_accuracy_std"],
        "test_accuracy": best["test_accuracy"],
        "final_train_loss_mean": best["final_train_loss_mean"],
        "final_train_loss_std": best["final_train_loss_std"],
        "seeds": sorted({r["seed"] for r in runs}),
        "weight_decay": best["weight_decay"],
        "by_weight_decay": by_weight_decay,
        "runs": runs,
    }


def plot_curves(path, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"linear": "tab:orange", "ste": "tab:blue"}
    styles = ["-", "--", ":", "-."]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for rule, summary in results["rules"].items():
        for k, stats in enumerate(summary["by_weight_decay"].values()):
            wd = stats["weight_decay"]
            runs = [r for r in summary["runs"] if r["weight_decay"] == wd]
            label = f"{rule}" + (f", wd={wd:g}" if len(summary["by_weight_decay"]) > 1 else "")
            for ax, key in ((ax_acc, "val_accuracy"), (ax_loss, "loss")):
                curves = np.array([r["history"][key] for r in runs])
                epochs = np.arange(1, curves.shape[1] + 1)
                mean, std = curves.mean(0), curves.std(0)
                ax.plot(epochs, mean, styles[k % len(styles)], color=colors.get(rule),
                        label=label, marker="o" if len(epochs) == 1 else None)
                ax.fill_between(epochs, mean - std, mean + std, color=colors.get(rule), alpha=0.2)
    n_seeds = len(next(iter(results["rules"].values()))["seeds"])
    seeds_label = f"{n_seeds} seed" + ("s" if n_seeds > 1 else "")
    ax_acc.set_title(f"{results['arch']} on {results['dataset']}: test accuracy "
                     f"(mean ± std, {seeds_label})")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy")
    ax_loss.set_title("training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_yscale("log")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main --------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["cifar10", "digits"], default="cifar10")
    parser.add_argument("--data", default=None,
                        help="cifar10.npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--arch", choices=sorted(BUILDERS), default="vgg")
    parser.add_argument("--rule", choices=["linear", "ste", "both"], default="both")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    parser.add_argument("--weight-decay", type=float, nargs="+", default=[0.0],
                        help="one or more (decoupled) weight decays; a list runs the grid")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0,
                        help="channel width multiplier (0.25: 4x thinner)")
    parser.add_argument("--logdir", default=None,
                        help="TensorBoard + SaturationHistograms log directory")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: width 1/16, 1 epoch, 1 seed, 128/64 samples")
    parser.add_argument("--jit-compile", choices=["auto", "true", "false"], default="false",
                        help="XLA for the train step (Keras's jit_compile; default false: "
                        "on CPU XLA's compile time outweighs its gain for these short runs)")
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument("--out", default=None,
                        help="directory for results.json and learning_curves.png")
    args = parser.parse_args(argv)
    args.jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    if args.smoke:
        args.width = min(args.width, 1 / 16)
        args.epochs = 1
        args.seeds = args.seeds[:1]
        args.batch_size = min(args.batch_size, 64)
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.dataset == "digits":
            data = load_digits_32x32()
        else:
            data = load_cifar10(args.data)
    except DataUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    data = prepare(*data)
    if args.smoke:
        x_train, y_train, x_test, y_test = data
        data = (x_train[:128], y_train[:128], x_test[:64], y_test[:64])
    rules = RULES if args.rule == "both" else (args.rule,)
    print(f"{args.arch} on {args.dataset}: {len(data[0])} train / {len(data[2])} test, "
          f"width {args.width:g}, lr {args.lr:g}, weight decay {args.weight_decay}, "
          f"{args.epochs} epochs, seeds {args.seeds}")

    results = {
        "command": repo_command(__file__, argv),
        "dataset": args.dataset,
        "arch": args.arch,
        "width": args.width,
        "epochs": args.epochs,
        "learning_rate": args.lr,
        "batch_size": args.batch_size,
        "weight_decays": args.weight_decay,
        "real_valued_layers": "first conv, 1x1 shortcut convs, classifier",
        "rules": {},
    }
    for rule in rules:
        runs = []
        for wd in args.weight_decay:
            for seed in args.seeds:
                logdir = None
                if args.logdir:
                    logdir = os.path.join(args.logdir, f"{args.arch}_{rule}_wd{wd:g}_seed{seed}")
                run = train_one(args, data, rule, wd, seed, logdir)
                print(f"  {rule:<6} wd={wd:<8g} seed={seed}: test accuracy "
                      f"{run['test_accuracy']:.4f} ({run['train_seconds']:.0f} s)")
                runs.append(run)
        results["rules"][rule] = summarize_rule(runs, args.weight_decay)

    header = f"{'rule':<7} {'weight decay':>12} {'test accuracy':>17} {'final train loss':>19}"
    print(header)
    print("-" * len(header))
    for rule, summary in results["rules"].items():
        for stats in summary["by_weight_decay"].values():
            print(f"{rule:<7} {stats['weight_decay']:>12g} "
                  f"{stats['test_accuracy_mean']:>8.4f} ± {stats['test_accuracy_std']:.4f}"
                  f"{stats['final_train_loss_mean']:>10.4f} ± {stats['final_train_loss_std']:.4f}")

    if args.out:
        write_results(args.out, results)
        plot_curves(os.path.join(args.out, "learning_curves.png"), results)
        print(f"wrote {args.out}/results.json and {args.out}/learning_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
