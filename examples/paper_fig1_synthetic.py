"""Fig. 1 of Yazdani (2018): overfit 5 points with backprop and linear backprop.

An MLP with sigmoid hidden units (1 -> 32 -> 32 -> 32 -> 1 by default, linear
output) is trained to overfit 5 random points (x, y), x, y ~ U(-1, 1), from
`--inits` random initialisations (weights N(0, init_std^2), biases 0). The
same initialisations are trained twice: with exact backprop and with
linear backprop (the hidden sigmoids are `keras_linbp.activations.
linbp_sigmoid`: sigmoid forward, `g <- g` backward). Full-batch Adam on the
MSE.

All initialisations train at once: the weights of the N networks are
stacked into `(N, fan_in, fan_out)` tensors and the whole training loop runs
in one `tf.function`. The loss is the *sum* of the N networks' MSEs, so each
network gets exactly its own gradient, and Adam (elementwise) updates each
one as if it were trained alone.

Reported per rule (`results.json`, `{"inits": N, "rules": {"exact": {...},
"linear": {...}}}`):

- `final_mse_median`, `final_mse_q25`, `final_mse_q75`: quartiles over
  initialisations of the final training MSE; also `final_mse` (every init)
  and `fitted_fraction` (final MSE < 1e-3).
- `saturated_fraction`: over all hidden sigmoid units, all inits and the 5
  training inputs after training, the fraction with `sigmoid'(a) < 0.1 *
  max sigmoid' = 0.025` (i.e. `|a| > 3.6`; threshold 0.1 of the maximum
  derivative, the default of `keras_linbp.callbacks.SaturationHistograms`).

The PNG has three panels: the fits on the 5 points (first inits of each
rule), the distribution of final MSE per rule, and the histogram of hidden
activations after training per rule.

Usage:

    python examples/paper_fig1_synthetic.py --out runs/fig1
    python examples/paper_fig1_synthetic.py --smoke --out /tmp/fig1
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from keras_linbp.activations import linbp_sigmoid  # noqa: E402

SATURATION_THRESHOLD = 0.1  # of max sigmoid' = 0.25
SIGMOID_MAX_DERIVATIVE = 0.25
FITTED_MSE = 1e-3
RULES = ("exact", "linear")


def make_data(seed, num_points=5):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(num_points, 1)).astype("float32")
    y = rng.uniform(-1.0, 1.0, size=(num_points, 1)).astype("float32")
    return x, y


def make_inits(seed, inits, widths, init_std):
    """Weights N(0, init_std^2) and zero biases, stacked over inits."""
    rng = np.random.default_rng(seed + 1)
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        params.append(
            (init_std * rng.standard_normal((inits, fan_in, fan_out))).astype("float32")
        )
        params.append(np.zeros((inits, fan_out), "float32"))
    return params


def forward(params, x, hidden_activation):
    """Batched MLP: x (P, 1) -> predictions (N, P, 1), hidden pre-activations."""
    h = tf.broadcast_to(x[None], (params[0].shape[0],) + tuple(x.shape))
    pre_activations = []
    num_layers = len(params) // 2
    for i in range(num_layers):
        a = tf.einsum("npi,nio->npo", h, params[2 * i]) + params[2 * i + 1][:, None, :]
        if i < num_layers - 1:
            pre_activations.append(a)
            h = hidden_activation(a)
        else:
            h = a
    return h, pre_activations


def log_interval(epochs):
    """Epochs between two points of the recorded MSE curve (~100 points)."""
    return max(1, epochs // 100)


def make_optimizer(name, learning_rate):
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; expected 'adam' or 'sgd'.")


def train(initial_params, x, y, rule, epochs, learning_rate, optimizer_name="adam"):
    """Trains all inits with one rule; returns final params and MSE curve."""
    hidden_activation = linbp_sigmoid if rule == "linear" else keras.activations.sigmoid
    variables = [tf.Variable(p) for p in initial_params]
    optimizer = make_optimizer(optimizer_name, learning_rate)
    optimizer.build(variables)
    x = tf.constant(x)
    y = tf.constant(y)
    log_every = log_interval(epochs)

    @tf.function
    def run():
        curve = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for epoch in tf.range(epochs):
            with tf.GradientTape() as tape:
                predictions, _ = forward(variables, x, hidden_activation)
                mse_per_init = tf.reduce_mean(tf.square(predictions - y[None]), axis=[1, 2])
                loss = tf.reduce_sum(mse_per_init)
            grads = tape.gradient(loss, variables)
            optimizer.apply(grads, variables)
            if epoch % log_every == 0:
                curve = curve.write(curve.size(), mse_per_init)
        return curve.stack()

    curve = run().numpy()
    return [v.numpy() for v in variables], curve


def evaluate(params, x, y):
    predictions, pre_activations = forward(params, tf.constant(x), keras.activations.sigmoid)
    mse = np.mean((predictions.numpy() - y[None]) ** 2, axis=(1, 2))
    a = tf.concat([tf.reshape(p, [-1]) for p in pre_activations], axis=0)
    activations = keras.activations.sigmoid(a).numpy()
    derivative = activations * (1.0 - activations)
    saturated = derivative < SATURATION_THRESHOLD * SIGMOID_MAX_DERIVATIVE
    return mse, activations, float(saturated.mean())


def summarize(mse, saturated_fraction, seconds, curve, log_every):
    # A diverged run (NaN/Inf MSE) is counted, not averaged in.
    finite = mse[np.isfinite(mse)]
    q25, median, q75 = np.percentile(finite, [25, 50, 75]) if finite.size else [np.nan] * 3
    return {
        "final_mse_median": float(median),
        "final_mse_q25": float(q25),
        "final_mse_q75": float(q75),
        "final_mse_mean": float(np.mean(finite)) if finite.size else None,
        "fitted_fraction": float(np.mean(mse < FITTED_MSE)),
        "diverged": int(mse.size - finite.size),
        "saturated_fraction": saturated_fraction,
        "train_seconds": seconds,
        "final_mse": [float(v) if np.isfinite(v) else None for v in mse],
        # Median over inits of the training MSE every `log_every` epochs.
        "mse_curve_epochs": [int(i * log_every) for i in range(len(curve))],
        "mse_curve_median": [float(v) for v in np.nanmedian(curve, axis=1)],
    }


def plot(path, x, y, params_by_rule, activations_by_rule, mse_by_rule, num_curves=8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"exact": "tab:blue", "linear": "tab:orange"}
    labels = {"exact": "backprop (exact)", "linear": "linear backprop"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))

    grid = np.linspace(-1.2, 1.2, 200, dtype="float32")[:, None]
    ax = axes[0]
    for rule in RULES:
        params = [p[:num_curves] for p in params_by_rule[rule]]
        curves, _ = forward(params, tf.constant(grid), keras.activations.sigmoid)
        for i, curve in enumerate(curves.numpy()):
            ax.plot(grid[:, 0], curve[:, 0], color=colors[rule], alpha=0.6, lw=1,
                    label=labels[rule] if i == 0 else None)
    ax.scatter(x[:, 0], y[:, 0], color="black", zorder=5, label="5 training points")
    ax.set_ylim(-2, 2)
    ax.set_title(f"Fits (first {num_curves} inits per rule)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=8)

    ax = axes[1]
    floor = 1e-12
    data = [np.maximum(m[np.isfinite(m)], floor) for m in (mse_by_rule[r] for r in RULES)]
    box = ax.boxplot(data, tick_labels=[labels[r] for r in RULES], showfliers=False,
                     patch_artist=True)
    for patch, rule in zip(box["boxes"], RULES):
        patch.set_facecolor(colors[rule])
        patch.set_alpha(0.4)
    jitter = np.random.default_rng(0)
    for i, (rule, values) in enumerate(zip(RULES, data), start=1):
        ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=10,
                   color=colors[rule], zorder=3)
    ax.set_yscale("log")
    ax.set_ylabel("final training MSE")
    ax.set_title(f"Final MSE over {len(data[0])} inits")

    ax = axes[2]
    bins = np.linspace(0, 1, 41)
    for rule in RULES:
        ax.hist(activations_by_rule[rule], bins=bins, histtype="step", lw=2,
                color=colors[rule], label=labels[rule], density=True)
    ax.set_xlabel("sigmoid activation after training")
    ax.set_ylabel("density")
    ax.set_title("Hidden activations (all units, inits, points)")
    ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inits", type=int, default=50, help="random initialisations")
    parser.add_argument("--epochs", type=int, default=3000, help="full-batch steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 32, 32],
                        help="widths of the sigmoid hidden layers")
    parser.add_argument("--init-std", type=float, default=1.0,
                        help="std of the N(0, std^2) weight initialisation")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                        help="full-batch optimizer")
    parser.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    parser.add_argument("--smoke", action="store_true", help="tiny run (< 20 s)")
    parser.add_argument("--out", default=None, help="directory for results.json and fig1.png")
    args = parser.parse_args(argv)
    if args.smoke:
        args.inits = min(args.inits, 4)
        args.epochs = min(args.epochs, 50)
    return args


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    x, y = make_data(args.seed)
    widths = [1] + list(args.hidden) + [1]
    initial_params = make_inits(args.seed, args.inits, widths, args.init_std)

    results = {
        "inits": args.inits,
        "epochs": args.epochs,
        "seed": args.seed,
        "hidden": list(args.hidden),
        "init_std": args.init_std,
        "learning_rate": args.lr,
        "optimizer": f"{args.optimizer} (full batch)",
        "saturation_definition": (
            f"sigmoid'(a) < {SATURATION_THRESHOLD} * max sigmoid' = "
            f"{SATURATION_THRESHOLD * SIGMOID_MAX_DERIVATIVE}, over hidden units x inits x "
            "the 5 training inputs, after training"
        ),
        "rules": {},
    }
    params_by_rule, activations_by_rule, mse_by_rule, curves = {}, {}, {}, {}
    for rule in RULES:
        start = time.perf_counter()
        params, curve = train(initial_params, x, y, rule, args.epochs, args.lr, args.optimizer)
        seconds = time.perf_counter() - start
        mse, activations, saturated_fraction = evaluate(params, x, y)
        params_by_rule[rule], activations_by_rule[rule] = params, activations
        mse_by_rule[rule], curves[rule] = mse, curve
        results["rules"][rule] = summarize(
            mse, saturated_fraction, seconds, curve, log_interval(args.epochs)
        )

    print(f"{args.inits} inits, {args.epochs} epochs, MLP {widths} (sigmoid hidden)")
    header = f"{'rule':<8} {'MSE q25':>10} {'median':>10} {'q75':>10} {'fitted':>7} {'saturated':>9} {'time s':>7}"
    print(header)
    print("-" * len(header))
    for rule in RULES:
        r = results["rules"][rule]
        print(
            f"{rule:<8} {r['final_mse_q25']:>10.2e} {r['final_mse_median']:>10.2e} "
            f"{r['final_mse_q75']:>10.2e} {r['fitted_fraction']:>7.0%} "
            f"{r['saturated_fraction']:>9.1%} {r['train_seconds']:>7.1f}"
        )

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        plot(os.path.join(args.out, "fig1.png"), x, y, params_by_rule,
             activations_by_rule, mse_by_rule)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.out}/results.json and {args.out}/fig1.png")
    return results


if __name__ == "__main__":
    main()
