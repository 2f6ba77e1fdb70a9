"""Few-bit tables fit to each site's inputs vs the N(0, 1) tables: does it train better?

`keras_linbp.few_bit_table` is optimal for an N(0, 1) input; a site in a
deep network sees another distribution. `keras_linbp.tables.fitted_table`
fits the table to observed inputs instead (as `slope="auto"` fits one
slope). This study measures whether that is worth building into the model:

- `exact`: the plain model;
- `few-bit b`: every hidden activation with the few-bit rule and its
  N(0, 1) table (what `backprop="few_bit", bits=b` uses);
- `few-bit b, fitted`: each layer's table fit to that layer's
  pre-activations over the whole training set, at initialisation (fixed
  for the run).

Cases: `mlp_gelu_sgd` and `mlp_silu_sgd` of `examples/few_bit.py` (digits,
8 hidden Dense(64) layers, SGD(0.05), batch 32, 40 epochs), the activation
a layer of its own after each Dense, so the pre-activations can be read.
Every rule of a seed starts from the same weights. Median test accuracy
over seeds; also the mean squared error of each table on its layer's
pre-activations at initialisation (`table_mse`, mean over layers).
Writes `DIR/results.json` and `DIR/table.md`.

    python examples/few_bit_calibration.py --out results/few_bit_calibration
    python examples/few_bit_calibration.py --out /tmp/fbc --quick     # under a minute
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import repo_command, write_results  # noqa: E402  (what a results directory records)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_linbp import _backend  # noqa: E402  (the rule primitive, for a table per layer)
from keras_linbp import _few_bit  # noqa: E402  (the packed-codes backward of a table)
from keras_linbp import tables  # noqa: E402
from keras_linbp._derivatives import DERIVATIVES  # noqa: E402  (numpy f', for the tables' error)

import few_bit  # noqa: E402  (the cases' data and settings)

DEPTH, WIDTH = 8, 64
CASES = {"mlp_gelu_sgd": "gelu", "mlp_silu_sgd": "silu"}
BITS = (1, 2)


class TableActivation(keras.layers.Layer):
    """`activation` forward; backward by the few-bit rule of one table
    (None: exact backprop)."""

    def __init__(self, activation, table=None, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.rule = None if table is None else _few_bit.FewBitRule(*map(tuple, table))

    def call(self, x):
        if self.rule is None:
            return self.activation(x)
        return _backend.apply_rule(self.activation, x, (), {}, self.rule)


def build(activation, layer_tables):
    """The MLP; `layer_tables`: one (bounds, levels) or None per hidden layer."""
    inputs = keras.Input((64,))
    hidden = inputs
    for table in layer_tables:
        hidden = TableActivation(activation, table)(keras.layers.Dense(WIDTH)(hidden))
    return keras.Model(inputs, keras.layers.Dense(10)(hidden))


def pre_activations(model, x):
    """Each hidden layer's input to its activation, as numpy arrays."""
    dense = [layer.input for layer in model.layers if isinstance(layer, TableActivation)]
    return [keras.ops.convert_to_numpy(a) for a in keras.Model(model.inputs, dense).predict(x, verbose=0)]


def table_mse(activation, samples, table):
    derivative = DERIVATIVES[tables.table_name(activation)][0](samples.ravel())
    bounds, levels = table
    return float(np.mean((derivative - levels[np.searchsorted(bounds, samples.ravel(), side="right")]) ** 2))


def rule_tables(activation, bits, fitted, observed):
    if bits is None:
        return [None] * DEPTH
    if fitted:
        return [tables.fitted_table(activation, bits, a) for a in observed]
    return [tables.few_bit_table(activation, bits)] * DEPTH


def train(activation, layer_tables, seed, data, epochs):
    x, y, x_test, y_test = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build(activation, layer_tables)
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    keras.utils.set_random_seed(seed)
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
                        callbacks=[keras.callbacks.TerminateOnNaN()])
    losses = history.history["loss"]
    diverged = len(losses) < epochs or not np.all(np.isfinite(losses))
    accuracy = 0.0 if diverged else float(model.evaluate(x_test, y_test, batch_size=256, verbose=0)[1])
    return {"seed": seed, "test_accuracy": accuracy, "diverged": diverged,
            "final_loss": float(losses[-1]) if np.isfinite(losses[-1]) else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the GELU case, 1 seed, 1 epoch, 256 images")
    args = parser.parse_args(argv)
    seeds, epochs = (1, 1) if args.quick else (args.seeds, 40)
    cases = dict(list(CASES.items())[:1]) if args.quick else CASES
    x, y, x_test, y_test = few_bit.digits()
    data = (x[:256], y[:256], x_test[:128], y_test[:128]) if args.quick else (x, y, x_test, y_test)
    rules = [("exact", None, False)] + [(f"few-bit {b}{', fitted' if f else ''}", b, f)
                                        for b in BITS for f in (False, True)]
    start, runs = time.perf_counter(), []
    for case, activation in cases.items():
        observed_by_seed = {}  # each seed's pre-activations at initialisation, read once
        for seed in range(seeds):
            keras.utils.set_random_seed(seed)
            observed_by_seed[seed] = pre_activations(build(activation, [None] * DEPTH), data[0])
        for label, bits, fitted in rules:
            records, errors = [], []
            for seed, observed in observed_by_seed.items():
                layer_tables = rule_tables(activation, bits, fitted, observed)
                if bits is not None:
                    errors.append(float(np.mean([table_mse(activation, a, t) for a, t in zip(observed, layer_tables)])))
                records.append(train(activation, layer_tables, seed, data, epochs))
            accuracies = [r["test_accuracy"] for r in records]
            runs.append({"case": case, "rule": label, "bits": bits, "fitted": fitted,
                         "test_accuracy_median": float(np.median(accuracies)),
                         "test_accuracy_per_seed": accuracies,
                         "diverged_seeds": [r["seed"] for r in records if r["diverged"]],
                         "table_mse": float(np.mean(errors)) if errors else None, "seeds": records})
            print(f"{case:14s} {label:18s} accuracy {runs[-1]['test_accuracy_median']:.3f} "
                  f"(seeds {', '.join(f'{a:.3f}' for a in accuracies)})", flush=True)
    table = markdown_table(runs, rules, cases)
    write_results(args.out, {"command": repo_command(__file__, argv), "backend": keras.backend.backend(),
                             "keras": keras.__version__, "seeds": seeds, "epochs": epochs, "runs": runs,
                             "wall_seconds": time.perf_counter() - start}, table)
    print(table)
    return runs


def markdown_table(runs, rules, cases):
    """One row per case: median test accuracy per rule, and the tables' error."""
    def mse(run):
        return "" if run["table_mse"] is None else f" (mse {run['table_mse']:.1e})"

    return few_bit.markdown_table(runs, list(cases), [label for label, _, _ in rules], mse)


if __name__ == "__main__":
    main()
