"""Few-bit backward vs exact and linear backprop, where linear backprop loses and where it ties.

Each rule starts from the same weights for a seed, and is trained the same way:

- `exact`: the plain `keras.Model`;
- `linear`: `LinearBackpropModel.from_model(model)` (`g <- g` at every site);
- `linear, "auto"`: per-site slopes `sqrt(mean f'(a)^2)` calibrated in `fit`;
- `few-bit b` (b = 1..4): `from_model(model, backprop="few_bit", bits=b)`: the
  backward multiplies by the optimal piecewise-constant f' with 2^b levels
  (`keras_linbp.few_bit_table`), keeping a b-bit code per element. (b = 0,
  linear backprop with one constant slope, is left out: it is the linear
  rule with another slope, as `"auto"` is.)

Cases (generated or bundled data, no download):

- `mlp_gelu_sgd` / `mlp_silu_sgd`: scikit-learn's digits (1,347 train / 450
  test), 8 hidden Dense(64) layers, SGD(0.05), batch 32, 40 epochs -- deep, plain SGD:
  where linear backprop collapses;
- `mlp_gelu_adam`: the same data, 4 hidden layers, Adam(1e-3), 10 epochs --
  where the rules should tie;
- `gpt2_pointer_sgd`: a keras-hub `GPT2Backbone` (4 layers, hidden 32, 2
  heads, GELU feed-forward 128; built from its class, random weights) on a
  generated pointer task (8 tokens from 8; the last token is a position;
  the label is the token at that position; 4,096 train / 1,024 test), the
  last position's output -> Dense(8), SGD(0.1, momentum 0.9), 12 epochs,
  batch 64; skipped without keras-hub;
- `lstm_memory_sgd`: the LSTM task of `examples/recurrent_nets.py`, SGD(0.1,
  momentum 0.9), 8 epochs, recurrent sites included (`include_recurrent=True`);
- `efficientnet_sgd`: the EfficientNetB0 / SGD case of `examples/deep_nets.py`
  (keras.applications, random weights, digits as 32x32x3, 768 training
  images, SGD(0.01, momentum 0.9), batch 64, 3 epochs, squeeze-and-excitation
  gates exact), scored after its BN-statistics refresh.

The metric is test accuracy after the last epoch; `diverged` counts seeds
whose loss went NaN. Writes `DIR/results.json` and `DIR/table.md`.

    python examples/few_bit.py --out results/few_bit
    python examples/few_bit.py --out /tmp/few_bit_quick --quick      # seconds
    python examples/few_bit.py --out /tmp/fb --cases mlp_gelu_sgd --seeds 1
"""

import argparse
import collections
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

import deep_nets  # noqa: E402  (efficientnet_sgd: its model, data and BN-statistics refresh)
import recurrent_nets  # noqa: E402  (lstm_memory_sgd: its task)

# (label, LinearBackpropModel.from_model keyword arguments; None: the plain model)
RULES = (
    ("exact", None),
    ("linear", {}),
    ('linear, "auto"', {"slope": "auto"}),
    *((f"few-bit {bits}", {"backprop": "few_bit", "bits": bits}) for bits in range(1, 5)),
)


def digits(seed=0):
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1]: 1,347 train / 450 test."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int32")
    return x[:1347], y[:1347], x[1347:], y[1347:]


def pointer_task(n, length=8, vocabulary=8, seed=0):
    """Token sequences whose last token is a position; the label is the token there."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocabulary, size=(n, length)).astype("int32")
    tokens[:, -1] = rng.integers(0, length - 1, size=n)
    labels = tokens[np.arange(n), tokens[:, -1]].astype("int32")
    return tokens, labels


def mlp(depth, activation):
    def build():
        inputs = keras.Input((64,))
        hidden = inputs
        for _ in range(depth):
            hidden = keras.layers.Dense(64, activation=activation)(hidden)
        return keras.Model(inputs, keras.layers.Dense(10)(hidden))
    return build


def gpt2_pointer():
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=8, num_layers=4, num_heads=2, hidden_dim=32,
        intermediate_dim=128, max_sequence_length=8, dropout=0.0,
    )
    token_ids = keras.Input((8,), dtype="int32", name="token_ids")
    sequence = backbone({"token_ids": token_ids, "padding_mask": keras.ops.ones_like(token_ids)})
    last = keras.layers.Lambda(lambda s: s[:, -1, :], name="last_position")(sequence)
    return keras.Model(token_ids, keras.layers.Dense(8, name="head")(last))


def lstm():
    inputs = keras.Input((30, 8))
    hidden = keras.layers.LSTM(32, name="lstm")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))


# One case: `build()` the model, `data()` -> (x, y, x_test, y_test),
# `optimizer()`, extra `from_model` options, and `after_fit(model, x)` run
# before the test evaluation (None: nothing).
Case = collections.namedtuple(
    "Case", "build data optimizer epochs batch_size options after_fit", defaults=(None,))


def _cases(quick):
    """{name: Case}."""
    small = quick

    def digits_data():
        x, y, xt, yt = digits()
        return (x[:256], y[:256], xt[:128], yt[:128]) if small else (x, y, xt, yt)

    def pointer_data():
        x, y = pointer_task(512 if small else 4096, seed=0)
        xt, yt = pointer_task(256 if small else 1024, seed=1)
        return x, y, xt, yt

    def memory_data():
        return recurrent_nets.make_data(*((192, 64) if small else (1536, 512)))

    def efficientnet_data():  # digits as 32x32x3 images
        x, x_test, y, y_test = deep_nets.load_data(*((128, 128) if small else (deep_nets.TRAIN_SIZE, None)))
        return x, y, x_test, y_test

    sgd = lambda: keras.optimizers.SGD(0.05)  # noqa: E731
    momentum_sgd = lambda rate: lambda: keras.optimizers.SGD(rate, momentum=0.9)  # noqa: E731
    return {
        "mlp_gelu_sgd": Case(mlp(8, "gelu"), digits_data, sgd, 2 if quick else 40, 32, {}),
        "mlp_silu_sgd": Case(mlp(8, "silu"), digits_data, sgd, 2 if quick else 40, 32, {}),
        "mlp_gelu_adam": Case(mlp(4, "gelu"), digits_data, lambda: keras.optimizers.Adam(1e-3),
                              2 if quick else 10, 32, {}),
        "gpt2_pointer_sgd": Case(gpt2_pointer, pointer_data, momentum_sgd(0.1), 1 if quick else 12, 64, {}),
        "lstm_memory_sgd": Case(lstm, memory_data, momentum_sgd(0.1), 1 if quick else 8, 64,
                                {"include_recurrent": True}),
        "efficientnet_sgd": Case(deep_nets.MODELS["EfficientNetB0"], efficientnet_data, momentum_sgd(0.01),
                                 1 if quick else 3, 64, {}, deep_nets.refresh_batch_norm_statistics),
    }


def _finite_or_none(value):
    return float(value) if math.isfinite(value) else None


def train_one(case, seed, rule_options):
    build, data, optimizer, epochs, batch_size, extra, after_fit = case
    x, y, x_test, y_test = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build()  # the same weights for every rule of a seed
    if rule_options is not None:
        model = keras_linbp.LinearBackpropModel.from_model(model, **extra, **rule_options)
    model.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    keras.utils.set_random_seed(seed)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                        callbacks=[keras.callbacks.TerminateOnNaN()])
    losses = [_finite_or_none(v) for v in history.history["loss"]]
    diverged = None in losses or len(losses) < epochs
    accuracy = 0.0
    if not diverged:
        if after_fit is not None:
            after_fit(model, x)
        accuracy = float(model.evaluate(x_test, y_test, batch_size=256, verbose=0)[1])
    return {"seed": seed, "final_loss": losses[-1], "diverged": diverged, "test_accuracy": accuracy}


def _hub_available():
    import importlib.util

    return importlib.util.find_spec("keras_hub") is not None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--cases", nargs="+", choices=list(_cases(False)), default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 1-2 epochs, small data: a smoke run of every case")
    args = parser.parse_args(argv)
    cases = _cases(args.quick)
    names = args.cases or list(cases)
    if "gpt2_pointer_sgd" in names and not _hub_available():
        print("keras-hub is not installed (pip install -e '.[hub]'): gpt2_pointer_sgd skipped")
        names = [n for n in names if n != "gpt2_pointer_sgd"]
    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    runs = []
    for name in names:
        case = cases[name]._replace(data=cases[name].data())
        for label, options in RULES:
            records = [train_one(case, seed, options) for seed in range(seeds)]
            accuracies = [r["test_accuracy"] for r in records]
            run = {"case": name, "rule": label, "options": options,
                   "test_accuracy_median": float(np.median(accuracies)),
                   "test_accuracy_per_seed": accuracies,
                   "diverged_seeds": [r["seed"] for r in records if r["diverged"]],
                   "seeds": records}
            runs.append(run)
            print(f"{name:18s} {label:16s} accuracy {run['test_accuracy_median']:.3f} "
                  f"(seeds {', '.join(f'{a:.3f}' for a in accuracies)}), "
                  f"diverged {len(run['diverged_seeds'])} of {seeds}", flush=True)
    table = markdown_table(runs, names)
    result = {
        "command": repo_command(__file__, argv),
        "backend": keras.backend.backend(), "keras": keras.__version__,
        "cases": names, "seeds": seeds, "rules": [label for label, _ in RULES],
        "runs": runs, "wall_seconds": time.perf_counter() - start,
    }
    write_results(args.out, result, table)
    print(table)
    return result


def markdown_table(runs, names, labels=None, note=None):
    """One row per case, one column per rule (default `RULES`' labels):
    median test accuracy (diverged seeds), then `note(run)` if given."""
    labels = labels or [label for label, _ in RULES]
    lines = ["| case | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name in names:
        cells = []
        for label in labels:
            run = next(r for r in runs if r["case"] == name and r["rule"] == label)
            cell = f"{run['test_accuracy_median']:.3f}"
            if run["diverged_seeds"]:
                cell += f" ({len(run['diverged_seeds'])} NaN)"
            cells.append(cell + (note(run) if note else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
