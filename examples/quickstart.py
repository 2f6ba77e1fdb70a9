"""Exact backprop vs linear backprop on scikit-learn's digits.

Trains the same small MLP of standard Keras layers twice from the same
initial weights: once as a plain `keras.Model` (ordinary backprop), once
wrapped in `keras_linbp.LinearBackpropModel.from_model` (linear backprop:
forward `tanh` as usual, backward `g <- g` through every hidden activation;
the logits layer has no activation). Prints final train loss, test
accuracy and seconds per epoch for each rule; `--out DIR` writes
`DIR/results.json`.

    python examples/quickstart.py --epochs 30 --out results/quickstart

The digits data (1797 8x8 images) ships with scikit-learn: no download.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import repo_command, write_results  # noqa: E402  (what a results directory records)

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_linbp  # noqa: E402

HIDDEN_UNITS = (64, 64)
BATCH_SIZE = 32
LEARNING_RATE = 0.05
MOMENTUM = 0.9


def load_data(seed):
    """Digits scaled to [0, 1], split 75 / 25 (stratified)."""
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def build_mlp(hidden_activation, num_features=64, num_classes=10):
    """An MLP with `hidden_activation` on every hidden layer; logits out."""
    inputs = keras.Input((num_features,))
    x = inputs
    for index, units in enumerate(HIDDEN_UNITS):
        x = keras.layers.Dense(units, activation=hidden_activation, name=f"hidden_{index}")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs)


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def train(model, data, epochs, seed):
    """Trains `model`; returns final train loss, test accuracy, s/epoch."""
    x_train, x_test, y_train, y_test = data
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # The same batch order for both rules.
    keras.utils.set_random_seed(seed)
    timer = EpochTimer()
    history = model.fit(
        x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, callbacks=[timer], verbose=0
    )
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    # The median skips the first epoch's one-off tracing cost.
    return {
        "final_train_loss": float(history.history["loss"][-1]),
        "test_accuracy": float(test_accuracy),
        "seconds_per_epoch": float(statistics.median(timer.seconds)),
    }


def format_table(rules):
    lines = [
        f"{'rule':<8} {'final train loss':>16} {'test accuracy':>14} {'s/epoch':>9}",
    ]
    for name, result in rules.items():
        lines.append(
            f"{name:<8} {result['final_train_loss']:>16.4f} "
            f"{result['test_accuracy']:>14.4f} {result['seconds_per_epoch']:>9.3f}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="directory for results.json")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    data = load_data(args.seed)

    # Two copies of one plain Keras MLP, starting from the same weights.
    exact_model = build_mlp("tanh")
    plain_copy = build_mlp("tanh")
    plain_copy.set_weights(exact_model.get_weights())
    # The only change linear backprop needs: wrap the model.
    linear_model = keras_linbp.LinearBackpropModel.from_model(plain_copy)
    linear_model.linbp_summary()
    print()

    rules = {
        "exact": train(exact_model, data, args.epochs, args.seed),
        "linear": train(linear_model, data, args.epochs, args.seed),
    }
    results = {
        "command": repo_command(__file__, argv),
        "dataset": "digits",
        "model": {"hidden_units": list(HIDDEN_UNITS), "hidden_activation": "tanh"},
        "optimizer": {"name": "SGD", "learning_rate": LEARNING_RATE, "momentum": MOMENTUM},
        "batch_size": BATCH_SIZE,
        "epochs": args.epochs,
        "seed": args.seed,
        "train_size": int(len(data[0])),
        "test_size": int(len(data[1])),
        "rules": rules,
    }
    print(format_table(rules))
    if args.out is not None:
        write_results(args.out, results)
        print(f"wrote {args.out / 'results.json'}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
