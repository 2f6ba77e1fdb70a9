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

`--sweep` asks where the picture holds: it trains the same task over a grid
of init std {0.3, 1, 3} x depth {1, 3, 5 sigmoid hidden layers of width 32}
x optimizer {SGD: lr 0.01, 0.1; Adam: lr 1e-3, 1e-2} (`--sweep-*` options
change the grid), both rules from the same inits in every cell, and writes
`results.json` = `{"command", "inits", "epochs", "seed", "width",
"fitted_mse", "cells": [{"init_std", "depth", "optimizer", "lr", "exact":
{...}, "linear": {...}, "log10_median_ratio"}], "table"}` and
`sweep_heatmap.png` (log10 of median linear MSE / median exact MSE per cell,
annotated with each rule's fitted fraction). Per rule and cell:
`final_mse_median` (over inits; a diverged init counts as an infinite MSE,
so the median is infinite when more than half diverge), `final_mse_q25`,
`final_mse_q75`, `fitted_fraction` (final MSE < 1e-3), `diverged`,
`saturated_fraction` (as above, over the finite inits) and `train_seconds`.

Usage:

    python examples/paper_fig1_synthetic.py --out runs/fig1
    python examples/paper_fig1_synthetic.py --smoke --out /tmp/fig1
    python examples/paper_fig1_synthetic.py --sweep --out runs/fig1_sweep
    python examples/paper_fig1_synthetic.py --sweep --smoke --out /tmp/fig1_sweep
"""

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import repo_command, write_results  # noqa: E402  (what a results directory records)

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


# --- sweep -------------------------------------------------------------------

SWEEP_INIT_STDS = (0.3, 1.0, 3.0)
SWEEP_DEPTHS = (1, 3, 5)
SWEEP_LEARNING_RATES = {"sgd": (0.01, 0.1), "adam": (1e-3, 1e-2)}


def pin_threads(threads):
    """One intra-op and one inter-op thread (shared, noisy CPUs); no-op once TF runs."""
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TF already initialised (e.g. inside pytest)
        pass


def quantile_with_divergence(mse, q):
    """Linear-interpolated quantile where a diverged (non-finite) MSE counts as +inf.

    Equals `np.percentile(mse, 100 * q)` when every value is finite; returns
    `math.inf` when the quantile reaches a diverged init.
    """
    values = np.sort(np.where(np.isfinite(mse), mse, np.inf))
    position = q * (len(values) - 1)
    lo, hi = math.floor(position), math.ceil(position)
    if np.isinf(values[hi]):
        return math.inf if (hi != lo and position > lo) or np.isinf(values[lo]) else float(values[lo])
    return float(values[lo] + (values[hi] - values[lo]) * (position - lo))


def _finite_or_none(value):
    return float(value) if np.isfinite(value) else None


def sweep_cell_summary(mse, saturated_fraction, seconds):
    """Per rule and cell; infinite quantiles (diverged inits) are stored as None."""
    return {
        "final_mse_median": _finite_or_none(quantile_with_divergence(mse, 0.5)),
        "final_mse_q25": _finite_or_none(quantile_with_divergence(mse, 0.25)),
        "final_mse_q75": _finite_or_none(quantile_with_divergence(mse, 0.75)),
        "fitted_fraction": float(np.mean(mse < FITTED_MSE)),
        "diverged": int(np.sum(~np.isfinite(mse))),
        "saturated_fraction": saturated_fraction,
        "train_seconds": seconds,
    }


def log10_median_ratio(cell):
    """log10(median linear MSE / median exact MSE); +inf / -inf / None (both diverged)."""
    exact, linear = cell["exact"]["final_mse_median"], cell["linear"]["final_mse_median"]
    if exact is None and linear is None:
        return None
    if linear is None:
        return math.inf
    if exact is None:
        return -math.inf
    floor = 1e-30  # an MSE of exactly 0 (float32 underflow) would make the ratio undefined
    return float(np.log10(max(linear, floor) / max(exact, floor)))


def sweep_grid(args):
    return [
        (init_std, depth, optimizer, lr)
        for init_std in args.sweep_init_std
        for depth in args.sweep_depth
        for optimizer, lrs in (("sgd", args.sweep_sgd_lr), ("adam", args.sweep_adam_lr))
        for lr in lrs
    ]


def run_sweep(args):
    x, y = make_data(args.seed)
    cells = []
    grid = sweep_grid(args)
    for k, (init_std, depth, optimizer, lr) in enumerate(grid, start=1):
        widths = [1] + [args.sweep_width] * depth + [1]
        initial_params = make_inits(args.seed, args.inits, widths, init_std)
        cell = {"init_std": init_std, "depth": depth, "optimizer": optimizer, "lr": lr}
        for rule in RULES:
            start = time.perf_counter()
            params, _ = train(initial_params, x, y, rule, args.epochs, lr, optimizer)
            seconds = time.perf_counter() - start
            mse, _, _ = evaluate(params, x, y)
            # Saturation over the inits that did not diverge (NaN weights have no activations).
            ok = np.isfinite(mse)
            saturated = evaluate([p[ok] for p in params], x, y)[2] if ok.any() else None
            cell[rule] = sweep_cell_summary(mse, saturated, seconds)
        ratio = log10_median_ratio(cell)
        cell["log10_median_ratio"] = None if ratio is None or not np.isfinite(ratio) else ratio
        cell["ratio_note"] = (
            None if ratio is None or np.isfinite(ratio)
            else ("linear diverged (median)" if ratio > 0 else "exact diverged (median)")
        ) if ratio is not None else "both diverged (median)"
        cells.append(cell)
        print(f"[{k}/{len(grid)}] {_cell_line(cell)}", flush=True)
    return cells


def _fmt_mse(value):
    return "diverged" if value is None else f"{value:.1e}"


def _fmt_ratio(cell):
    if cell["log10_median_ratio"] is not None:
        return f"{cell['log10_median_ratio']:+.2f}"
    return cell["ratio_note"]


def _cell_line(cell):
    e, l = cell["exact"], cell["linear"]
    return (f"std {cell['init_std']:g} depth {cell['depth']} {cell['optimizer']} lr {cell['lr']:g}: "
            f"exact {_fmt_mse(e['final_mse_median'])} ({e['fitted_fraction']:.0%} fitted, "
            f"{e['diverged']} diverged), linear {_fmt_mse(l['final_mse_median'])} "
            f"({l['fitted_fraction']:.0%} fitted, {l['diverged']} diverged), "
            f"log10 ratio {_fmt_ratio(cell)}")


def sweep_table(cells, inits):
    lines = [
        "| init std | hidden layers | optimizer | lr | exact: median MSE | exact: fitted | "
        "linear: median MSE | linear: fitted | log10(linear / exact) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        e, l = c["exact"], c["linear"]

        def fitted(r):
            text = f"{r['fitted_fraction']:.0%}"
            return text + (f" ({r['diverged']}/{inits} div.)" if r["diverged"] else "")

        lines.append(
            f"| {c['init_std']:g} | {c['depth']} | {'SGD' if c['optimizer'] == 'sgd' else 'Adam'} "
            f"| {c['lr']:g} | {_fmt_mse(e['final_mse_median'])} | {fitted(e)} "
            f"| {_fmt_mse(l['final_mse_median'])} | {fitted(l)} | {_fmt_ratio(c)} |"
        )
    return "\n".join(lines)


def linear_wins(cells):
    """Cells where linear backprop beats exact: lower median MSE, or more inits fitted."""
    lower_median = [c for c in cells
                    if (c["log10_median_ratio"] is not None and c["log10_median_ratio"] < 0)
                    or c["ratio_note"] == "exact diverged (median)"]
    more_fitted = [c for c in cells
                   if c["linear"]["fitted_fraction"] > c["exact"]["fitted_fraction"]]
    key = lambda c: {k: c[k] for k in ("init_std", "depth", "optimizer", "lr")}  # noqa: E731
    return {
        "lower_median_mse": [key(c) for c in lower_median],
        "more_inits_fitted": [key(c) for c in more_fitted],
    }


def plot_sweep(path, cells, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(s, d) for s in args.sweep_init_std for d in args.sweep_depth]
    columns = [(o, lr) for o, lrs in (("sgd", args.sweep_sgd_lr), ("adam", args.sweep_adam_lr))
               for lr in lrs]
    by_key = {(c["init_std"], c["depth"], c["optimizer"], c["lr"]): c for c in cells}
    values = np.full((len(rows), len(columns)), np.nan)
    for i, (s, d) in enumerate(rows):
        for j, (o, lr) in enumerate(columns):
            ratio = by_key[(s, d, o, lr)]["log10_median_ratio"]
            values[i, j] = np.nan if ratio is None else ratio
    limit = max(1.0, np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0)
    fig, ax = plt.subplots(figsize=(2.1 * len(columns) + 2.5, 0.62 * len(rows) + 1.8))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit,
                      aspect="auto")
    for i, (s, d) in enumerate(rows):
        for j, (o, lr) in enumerate(columns):
            c = by_key[(s, d, o, lr)]
            head = _fmt_ratio(c).replace(" (median)", "")
            text = (f"{head}\nfit E {c['exact']['fitted_fraction']:.0%} "
                    f"L {c['linear']['fitted_fraction']:.0%}")
            dark = np.isfinite(values[i, j]) and abs(values[i, j]) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(columns)),
                  [f"{'SGD' if o == 'sgd' else 'Adam'} lr {lr:g}" for o, lr in columns])
    ax.set_yticks(range(len(rows)), [f"std {s:g}, {d} hidden" for s, d in rows])
    ax.set_title(f"log10(median linear MSE / median exact MSE), {args.inits} inits, "
                 f"{args.epochs} steps\n< 0 (blue): linear backprop fits better; "
                 "grey: median diverged; fit E/L: fraction of inits with MSE < "
                 f"{FITTED_MSE:g}", fontsize=9)
    fig.colorbar(image, ax=ax, label="log10(linear / exact)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_sweep(args, argv):
    # Per-step retracing warnings: each cell builds its own training function on purpose.
    tf.get_logger().setLevel("ERROR")
    start = time.perf_counter()
    cells = run_sweep(args)
    seconds = time.perf_counter() - start
    table = sweep_table(cells, args.inits)
    results = {
        "command": repo_command(__file__, argv),
        "inits": args.inits,
        "epochs": args.epochs,
        "seed": args.seed,
        "width": args.sweep_width,
        "hidden_activation": "sigmoid",
        "fitted_mse": FITTED_MSE,
        "median_definition": (
            "over inits, a diverged (non-finite) final MSE counted as +inf; None in this "
            "file = infinite (more than half diverged)"
        ),
        "grid": {
            "init_std": list(args.sweep_init_std),
            "depth": list(args.sweep_depth),
            "sgd_lr": list(args.sweep_sgd_lr),
            "adam_lr": list(args.sweep_adam_lr),
        },
        "threads": args.threads,
        "total_seconds": seconds,
        "cells": cells,
        "linear_wins": linear_wins(cells),
        "table": table,
    }
    print()
    print(table)
    wins = results["linear_wins"]
    print(f"\nlinear backprop: lower median MSE in {len(wins['lower_median_mse'])} of "
          f"{len(cells)} cells, more inits fitted in {len(wins['more_inits_fitted'])}; "
          f"{seconds:.0f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        plot_sweep(os.path.join(args.out, "sweep_heatmap.png"), cells, args)
        write_results(args.out, results)
        print(f"wrote {args.out}/results.json and {args.out}/sweep_heatmap.png")
    return results


# --- main --------------------------------------------------------------------

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
    parser.add_argument("--sweep", action="store_true",
                        help="grid of init std x depth x optimizer x lr (see the docstring)")
    parser.add_argument("--sweep-init-std", type=float, nargs="+", default=list(SWEEP_INIT_STDS))
    parser.add_argument("--sweep-depth", type=int, nargs="+", default=list(SWEEP_DEPTHS),
                        help="numbers of sigmoid hidden layers")
    parser.add_argument("--sweep-width", type=int, default=32, help="width of every hidden layer")
    parser.add_argument("--sweep-sgd-lr", type=float, nargs="+",
                        default=list(SWEEP_LEARNING_RATES["sgd"]))
    parser.add_argument("--sweep-adam-lr", type=float, nargs="+",
                        default=list(SWEEP_LEARNING_RATES["adam"]))
    parser.add_argument("--threads", type=int, default=1,
                        help="TF intra-op and inter-op threads (0: TF's default)")
    parser.add_argument("--out", default=None,
                        help="directory for results.json and fig1.png (sweep_heatmap.png)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.inits = min(args.inits, 4)
        args.epochs = min(args.epochs, 50)
        if args.sweep:  # 2 x 2 x (1 + 1) = 8 cells
            args.sweep_init_std = args.sweep_init_std[:1] + args.sweep_init_std[-1:]
            args.sweep_depth = args.sweep_depth[:2]
            args.sweep_width = min(args.sweep_width, 8)
            args.sweep_sgd_lr = args.sweep_sgd_lr[:1]
            args.sweep_adam_lr = args.sweep_adam_lr[:1]
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    pin_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    if args.sweep:
        return main_sweep(args, argv)
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
        write_results(args.out, results)
        print(f"wrote {args.out}/results.json and {args.out}/fig1.png")
    return results


if __name__ == "__main__":
    main()
