"""LinBP transfer attack (Guo et al., NeurIPS 2020) on scikit-learn's digits.

"Backpropagating Linearly Improves Transferability of Adversarial Examples":
craft adversarial examples on a *source* network with input gradients in
which the ReLU derivative is skipped (`g <- g`) from some depth on, and they
fool a different *target* network more often than examples crafted with
ordinary backprop.

Here: two different small ReLU CNNs (source and target: different
architectures, different seeds) are trained on the digits (8x8, scaled to
[0, 1]) with ordinary backprop. I-FGSM examples are crafted on the source at
a fixed L-infinity budget `eps` (step `eps / 10`, `--iterations` steps,
projected onto the eps-ball and clipped to [0, 1]) with input gradients from

- exact backprop, and
- `keras_linbp.linearize(source, from_depth=k)` for every k = 1 .. number of
  activation sites of the source (k = 1: every ReLU linear; the largest k:
  only the last one),

see `input_gradient`. Reported per setting, over the test examples that
both networks classify correctly: the white-box success (the source
misclassifies the adversarial example) and the transfer success (the target
does). Everything is repeated for `--seeds` source/target pairs; the tables
show the mean over pairs. Writes `DIR/results.json` and
`DIR/transfer_vs_depth.png`.

    python examples/linbp_attack.py --out results/linbp_attack
    python examples/linbp_attack.py --out /tmp/linbp_attack --smoke   # seconds

The digits data (1797 images) ships with scikit-learn: no download.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import repo_command, write_results  # noqa: E402  (what a results directory records)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise SystemExit(
        f"{__file__} takes input gradients with tf.GradientTape: "
        f"run it with KERAS_BACKEND=tensorflow (now {keras.backend.backend()!r})."
    )

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_linbp  # noqa: E402

EPS = 0.1  # L-infinity budget in [0, 1] pixel units (1.6 of the 16 gray levels)
ITERATIONS = 20
EPOCHS = 40
BATCH_SIZE = 32


def load_data(seed=0):
    """Digits as (N, 8, 8, 1) floats in [0, 1], split 75 / 25 (stratified)."""
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def build_source():
    """The source CNN: four ReLU sites (three convolutions, one dense)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_1")(inputs)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_2")(h)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv_3")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(128, activation="relu", name="dense")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name="source")


def build_target():
    """The target CNN: another architecture (5x5 and strided convolutions,
    global average pooling)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(24, 5, padding="same", activation="relu", name="conv_a")(inputs)
    h = keras.layers.Conv2D(48, 3, strides=2, padding="same", activation="relu", name="conv_b")(h)
    h = keras.layers.Conv2D(96, 3, padding="same", activation="relu", name="conv_c")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Dense(64, activation="relu", name="dense")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name="target")


def train(build, x_train, y_train, epochs, seed):
    """Builds (initial weights from `seed`) and trains a model with ordinary
    (exact) backprop and Adam."""
    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    return model


def predict(model, x):
    return np.argmax(model(x, training=False), axis=-1)


def input_gradient(model, x, y, from_depth=None):
    """Gradient of the summed cross-entropy of `model` w.r.t. the input `x`.

    `from_depth=None`: ordinary backprop. Otherwise LinBP: the forward pass
    is unchanged, and backward through every activation site at depth >=
    `from_depth` (1-based, forward order) the gradient is passed on
    unchanged instead of being multiplied by the ReLU derivative.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        if from_depth is None:
            logits = model(x, training=False)
        else:
            with keras_linbp.linearize(model, from_depth=from_depth):
                logits = model(x, training=False)
        loss = tf.reduce_sum(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        )
    return tape.gradient(loss, x)


def i_fgsm(model, x, y, eps, iterations, from_depth=None):
    """Iterative FGSM: `iterations` signed-gradient steps of `eps / 10`,
    each projected onto the L-infinity eps-ball around `x` and onto [0, 1]."""
    step = eps / 10.0
    x = tf.convert_to_tensor(x)
    x_adv = x
    for _ in range(iterations):
        grad = input_gradient(model, x_adv, y, from_depth)
        x_adv = x_adv + step * tf.sign(grad)
        x_adv = tf.clip_by_value(x_adv, x - eps, x + eps)
        x_adv = tf.clip_by_value(x_adv, 0.0, 1.0)
    return x_adv.numpy()


def number_of_sites(model):
    """Activation sites of `model`, the depths `from_depth` counts."""
    return len(keras_linbp.LinearBackpropModel.from_model(model).activation_sites())


def attack_pair(seed, data, args):
    """Trains one source/target pair; success rates of every gradient rule."""
    x_train, x_test, y_train, y_test = data
    source = train(build_source, x_train, y_train, args.epochs, seed=seed)
    target = train(build_target, x_train, y_train, args.epochs, seed=seed + 1000)
    source_clean, target_clean = predict(source, x_test), predict(target, x_test)
    both_correct = (source_clean == y_test) & (target_clean == y_test)
    x, y = x_test[both_correct], y_test[both_correct]
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]

    def success(x_adv):
        return {
            "white_box_success": float(np.mean(predict(source, x_adv) != y)),
            "transfer_success": float(np.mean(predict(target, x_adv) != y)),
        }

    depths = number_of_sites(source)
    exact_gradient = input_gradient(source, x, y).numpy()
    exact = success(i_fgsm(source, x, y, args.eps, args.iterations))
    linbp = []
    for from_depth in range(1, depths + 1):
        # Guard against a silent no-op: the linear rule must change the gradient.
        linear_gradient = input_gradient(source, x, y, from_depth).numpy()
        if np.allclose(linear_gradient, exact_gradient):
            raise AssertionError(f"linearize(from_depth={from_depth}) left the gradient exact")
        x_adv = i_fgsm(source, x, y, args.eps, args.iterations, from_depth)
        linbp.append({"from_depth": from_depth, **success(x_adv)})
    return {
        "seed": seed,
        "source_test_accuracy": float(np.mean(source_clean == y_test)),
        "target_test_accuracy": float(np.mean(target_clean == y_test)),
        "attacked_examples": int(len(y)),
        "activation_sites": depths,
        "exact": exact,
        "linbp": linbp,
    }


def _mean(values):
    return round(statistics.fmean(values), 4)


def _std(values):
    return round(statistics.stdev(values), 4) if len(values) > 1 else 0.0


def summarize(pairs):
    """Mean (and standard deviation) over source/target pairs."""
    keys = ("white_box_success", "transfer_success")
    exact = {}
    for key in keys:
        values = [p["exact"][key] for p in pairs]
        exact[key], exact[f"{key}_std"] = _mean(values), _std(values)
    linbp = []
    for index, row in enumerate(pairs[0]["linbp"]):
        entry = {"from_depth": row["from_depth"]}
        for key in keys:
            values = [p["linbp"][index][key] for p in pairs]
            entry[key], entry[f"{key}_std"] = _mean(values), _std(values)
        # Paired: the same source, target and examples with both gradients.
        gains = [p["linbp"][index]["transfer_success"] - p["exact"]["transfer_success"]
                 for p in pairs]
        entry["transfer_gain_over_exact"] = _mean(gains)
        entry["transfer_gain_per_pair"] = [round(g, 4) for g in gains]
        linbp.append(entry)
    return exact, linbp


def _depths(rows):
    return ", ".join(str(row["from_depth"]) for row in rows)


def _verdict(exact, linbp, best):
    """Who won, calling a winner only where every source/target pair agrees."""
    per_pair = ", ".join(f"{gain:+.1%}" for gain in best["transfer_gain_per_pair"])
    always_better = [r for r in linbp if all(g > 0 for g in r["transfer_gain_per_pair"])]
    always_worse = [r for r in linbp if all(g < 0 for g in r["transfer_gain_per_pair"])]
    mixed = [r for r in linbp if r not in always_better and r not in always_worse]
    if always_better:
        top = max(always_better, key=lambda row: row["transfer_success"])
        return (
            f"LinBP won: `from_depth={top['from_depth']}` transfers to the target "
            f"{top['transfer_success']:.1%} of the time vs {exact['transfer_success']:.1%} "
            "with exact gradients, more in every pair"
        )
    if best["transfer_success"] < exact["transfer_success"]:
        text = (
            f"Exact backprop won: {exact['transfer_success']:.1%} transfer success vs at most "
            f"{best['transfer_success']:.1%} with LinBP (`from_depth={best['from_depth']}`)"
        )
        if always_worse:
            text += f"; from_depth {_depths(always_worse)} transfer less in every pair"
        if mixed:
            text += f"; from_depth {_depths(mixed)} less on average but not in every pair"
        return text + f" (best LinBP per pair: {per_pair})"
    return (
        f"No clear winner: the best LinBP setting (`from_depth={best['from_depth']}`) "
        f"transfers {best['transfer_success']:.1%} vs {exact['transfer_success']:.1%} "
        f"with exact gradients, but not more in every pair ({per_pair})"
    )


def markdown_table(results):
    exact = results["exact"]
    best = max(results["linbp"], key=lambda row: row["transfer_success"])
    lines = [
        "| input gradient | white-box success (source) | transfer success (target) "
        "| transfer − exact, per pair |",
        "|---|---:|---:|---|",
        f"| exact backprop | {exact['white_box_success']:.1%} "
        f"| {exact['transfer_success']:.1%} | |",
    ]
    for row in results["linbp"]:
        marker = " **(best)**" if row is best else ""
        per_pair = ", ".join(f"{gain:+.1%}" for gain in row["transfer_gain_per_pair"])
        lines.append(
            f"| LinBP `from_depth={row['from_depth']}`{marker} | {row['white_box_success']:.1%} "
            f"| {row['transfer_success']:.1%} | {per_pair} |"
        )
    verdict = _verdict(exact, results["linbp"], best)
    n = results["seeds"]
    lines.append("")
    lines.append(
        f"{verdict} (mean over {n} source/target pair{'s' if n != 1 else ''}, L∞ eps = "
        f"{results['eps']:g}, {results['iterations']} I-FGSM steps of eps/10)."
    )
    return "\n".join(lines), verdict


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = [row["from_depth"] for row in results["linbp"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, color, label in (
        ("transfer_success", "C0", "transfer (target)"),
        ("white_box_success", "C1", "white box (source)"),
    ):
        ax.errorbar(
            depths,
            [row[key] for row in results["linbp"]],
            yerr=[row[f"{key}_std"] for row in results["linbp"]],
            color=color, marker="o", capsize=3, label=f"LinBP, {label}",
        )
        ax.axhline(results["exact"][key], color=color, linestyle="--", label=f"exact, {label}")
    ax.set_xlabel("from_depth (first linearized ReLU site)")
    ax.set_ylabel("attack success rate")
    ax.set_xticks(depths)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"I-FGSM on digits, L∞ eps = {results['eps']:g}")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for results.json and the PNG")
    parser.add_argument(
        "--smoke", action="store_true", help="1 pair, 2 epochs, 3 steps, 64 examples (seconds)"
    )
    parser.add_argument("--eps", type=float, default=EPS, help="L-infinity budget in [0, 1]")
    parser.add_argument("--iterations", type=int, default=ITERATIONS, help="I-FGSM steps of eps/10")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, default=3, help="source/target pairs")
    parser.add_argument("--limit", type=int, default=0, help="attack at most this many examples")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.iterations, args.seeds, args.limit = 2, 3, 1, 64
    else:
        # Reproducible runs: TF's multi-threaded CPU kernels may otherwise sum
        # in another order each run. Process-wide and irreversible, so not in
        # the smoke mode, which tests run inside their own process.
        tf.config.experimental.enable_op_determinism()

    started = time.perf_counter()
    data = load_data(seed=0)
    pairs = []
    for seed in range(args.seeds):
        pairs.append(attack_pair(seed, data, args))
        print(f"pair {seed}: exact {pairs[-1]['exact']}", flush=True)
    exact, linbp = summarize(pairs)
    results = {
        "eps": args.eps,
        "step": args.eps / 10.0,
        "iterations": args.iterations,
        "seeds": args.seeds,
        "exact": exact,
        "linbp": linbp,
        "pairs": pairs,
        "epochs": args.epochs,
        "success_definition": "fraction misclassified among test examples that both "
        "networks classify correctly before the attack",
        "command": repo_command(__file__, argv),
    }
    table, verdict = markdown_table(results)
    results["verdict"] = verdict
    results["markdown_table"] = table
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, results)
    plot(results, os.path.join(args.out, "transfer_vs_depth.png"))
    print()
    print(table)
    print(f"\n{results['command']}\nwrote {args.out}/results.json and transfer_vs_depth.png "
          f"in {results['seconds']} s")
    return results


if __name__ == "__main__":
    main()
