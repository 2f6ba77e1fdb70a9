"""Linear backprop through time: an LSTM on a generated memory task.

The task (generated, no download): sequences of 30 steps of 8 Gaussian
features; the label is which of the first 3 features has the largest sum
over the first 15 steps, so the network must carry information across
time. An `LSTM(32)` and a `Dense(3)` head, batch 64, 8 epochs, 1536
training / 512 validation sequences, 3 seeds; for each seed every rule
starts from the same weights. Rules:

- `exact`: the plain `keras.Model`;
- `linear, slope 1`: `LinearBackpropModel.from_model(model,
  include_recurrent=True)`: the cell's tanh (`activation`) and its sigmoid
  gates (`recurrent_activation`) backpropagate `g <- g` (recurrent cells
  keep exact backprop unless `include_recurrent=True`);
- `linear, "auto"`: per-site slopes `sqrt(mean f'(a)^2)`;
- `linear, "auto", gates exact`: only the cell's tanh linear.

Optimizers: SGD(0.1, momentum 0.9) and Adam(3e-3). Writes
`DIR/results.json` and `DIR/table.md`.

    python examples/recurrent_nets.py --out results/recurrent
    python examples/recurrent_nets.py --out /tmp/recurrent_smoke --smoke
"""

import argparse
import math
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import repo_command, write_results  # noqa: E402  (what a results directory records)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_linbp  # noqa: E402

STEPS, FEATURES, UNITS, BATCH_SIZE = 30, 8, 32, 64
OPTIMIZERS = {
    "SGD": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "Adam": lambda: keras.optimizers.Adam(3e-3),
}
# (label, slope or None for the plain model, keep the gates exact)
RULES = (
    ("exact", None, False),
    ("linear, slope 1", 1.0, False),
    ('linear, "auto"', "auto", False),
    ('linear, "auto", gates exact', "auto", True),
)


def make_data(n_train=1536, n_val=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_val, STEPS, FEATURES)).astype("float32")
    y = np.argmax(x[:, : STEPS // 2, :3].sum(axis=1), axis=1).astype("int32")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def build(seed):
    """The LSTM model; its weights depend only on `seed`."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((STEPS, FEATURES))
    hidden = keras.layers.LSTM(UNITS, name="lstm")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))


def _finite_or_none(value):
    return float(value) if math.isfinite(value) else None


def train_one(seed, slope, gates_exact, optimizer, data, epochs):
    x_train, y_train, x_val, y_val = data
    model = build(seed)  # the same weights for every rule of a seed
    if slope is not None:
        sites = None
        if gates_exact:
            sites = [
                site.path for site in keras_linbp.sites.find_activation_sites(model)
                if site.attribute != "recurrent_activation"
            ]
        model = keras_linbp.LinearBackpropModel.from_model(
            model, slope=slope, sites=sites, include_recurrent=True
        )
    model.compile(
        OPTIMIZERS[optimizer](),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    keras.utils.set_random_seed(seed)
    history = model.fit(
        x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    losses = [_finite_or_none(v) for v in history.history["loss"]]
    losses += [None] * (epochs - len(losses))
    _, accuracy = model.evaluate(x_val, y_val, batch_size=256, verbose=0)
    return {"seed": seed, "loss_per_epoch": losses, "diverged": None in losses,
            "val_accuracy": float(accuracy)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--smoke", action="store_true",
                        help="1 seed, 2 epochs, 256 sequences, SGD only")
    args = parser.parse_args(argv)
    seeds, epochs = (1, 2) if args.smoke else (3, 8)
    optimizers = ["SGD"] if args.smoke else list(OPTIMIZERS)
    data = make_data(*((192, 64) if args.smoke else (1536, 512)))
    start = time.perf_counter()
    runs = []
    for optimizer in optimizers:
        for label, slope, gates_exact in RULES:
            records = [train_one(s, slope, gates_exact, optimizer, data, epochs) for s in range(seeds)]
            for r in records:
                print(f"{optimizer} {label} seed {r['seed']}: loss "
                      + ", ".join("NaN" if v is None else f"{v:.3f}" for v in r["loss_per_epoch"])
                      + f"; val accuracy {r['val_accuracy']:.3f}", flush=True)
            accuracies = [r["val_accuracy"] for r in records]
            runs.append({
                "optimizer": optimizer, "rule": label, "slope": slope, "gates_exact": gates_exact,
                "val_accuracy_mean": float(np.mean(accuracies)),
                "val_accuracy_std": float(np.std(accuracies)),
                "diverged_seeds": [r["seed"] for r in records if r["diverged"]],
                "seeds": records,
            })
    lines = ["| optimizer | rule | final loss per seed | validation accuracy | diverged seeds |",
             "|---|---|---|---|---|"]
    for run in runs:
        finals = ", ".join("NaN" if r["loss_per_epoch"][-1] is None else f"{r['loss_per_epoch'][-1]:.3f}"
                           for r in run["seeds"])
        lines.append(f"| {run['optimizer']} | {run['rule']} | {finals} | "
                     f"{run['val_accuracy_mean']:.3f} ± {run['val_accuracy_std']:.3f} | "
                     f"{len(run['diverged_seeds'])} of {len(run['seeds'])} |")
    table = "\n".join(lines)
    result = {
        "command": repo_command(__file__, argv),
        "task": f"LSTM({UNITS}) + Dense(3); {STEPS} steps x {FEATURES} Gaussian features; label = "
                "argmax over the first 3 features of their sum over the first half",
        "epochs": epochs, "batch_size": BATCH_SIZE,
        "optimizers": {"SGD": "SGD(0.1, momentum=0.9)", "Adam": "Adam(3e-3)"},
        "runs": runs, "wall_seconds": time.perf_counter() - start,
    }
    write_results(args.out, result, table)
    print(table)
    return result


if __name__ == "__main__":
    main()
