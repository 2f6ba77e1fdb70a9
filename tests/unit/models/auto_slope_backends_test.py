"""slope="auto" on every backend: calibration through recurrent layers,
recalibration without retracing the training step, `recalibrate=` checks.

References: numpy derivatives of pre-activations recorded by plain Python
activations in an unrolled copy of the network; Keras's own training step
(`train_on_batch`, SGD) on a copy whose activations are the pass-through
`a * s + stop_gradient(f(a) - a * s)` (forward `f`, gradient `s`).
"""

import os

import numpy as np
import pytest

import keras

import keras_linbp
from keras_linbp.models import LinearBackpropModel

pytestmark = pytest.mark.all_backends

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# Recurrent cells keep exact backprop unless asked for.
RECURRENT = {"include_recurrent": True}


def _pass_through(f, slope):
    def g(a):
        return a * slope + keras.ops.stop_gradient(f(a) - a * slope)

    return g


def _assert_weights_close(got, expected, rtol=1e-5, atol=1e-6):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


def _sgd_step(reference, weights, x, y, lr):
    """`reference`'s weights after Keras's own SGD(`lr`) step from `weights`."""
    reference.set_weights(weights)
    reference.compile(keras.optimizers.SGD(lr), LOSS)
    reference.train_on_batch(x, y)
    return reference.get_weights()


# --- calibration through recurrent layers -------------------------------------


def _recording(store, key, f):
    def record(a):
        store.setdefault(key, []).append(keras.ops.convert_to_numpy(a).astype(np.float64))
        return f(a)

    # Bidirectional copies its forward layer through its config, which
    # names the function: one name per recorder, found in `store`'s scope.
    record.__name__ = "record_" + "_".join(key)
    store.setdefault("functions", {})[record.__name__] = record
    return record


def _sigmoid_derivative(a):
    s = 1 / (1 + np.exp(-a))
    return s * (1 - s)


def _tanh_derivative(a):
    return 1 - np.tanh(a) ** 2


DERIVATIVES = {"activation": _tanh_derivative, "recurrent_activation": _sigmoid_derivative}


def _cell(kind, store=None, direction="forward", **kwargs):
    """An RNN layer of `kind`; with `store`, unrolled, its activations
    recording their inputs under `(direction, attribute)`."""
    if store is not None:
        kwargs["unroll"] = True
        kwargs["activation"] = _recording(store, (direction, "activation"), keras.activations.tanh)
        if kind != "SimpleRNN":
            kwargs["recurrent_activation"] = _recording(
                store, (direction, "recurrent_activation"), keras.activations.sigmoid
            )
    return getattr(keras.layers, kind)(4, **kwargs)


def _recurrent_net(kind, store=None):
    if kind == "Bidirectional" and store is None:
        layer = keras.layers.Bidirectional(_cell("LSTM"))  # "backward_..." made by Keras
    elif kind == "Bidirectional":
        forward = _cell("LSTM", store, "forward")
        backward = _cell("LSTM", store, "backward", go_backwards=True)
        functions = store.pop("functions")
        with keras.saving.custom_object_scope(functions):
            layer = keras.layers.Bidirectional(forward, backward_layer=backward)
    else:
        layer = _cell(kind, store)
    if store is not None:
        store.pop("functions", None)
    return keras.Sequential([keras.Input((5, 3)), layer, keras.layers.Dense(2)])


def _site_key(path):
    # A layer with one activation attribute names no attribute (SimpleRNN).
    attribute = path.rsplit(":", 1)[1] if ":" in path else "activation"
    return ("backward" if "/backward_" in path else "forward", attribute)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN", "Bidirectional"])
def test_calibrate_slopes_through_recurrent_layers_equals_numpy(kind):
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype("float32")
    model = _recurrent_net(kind)
    got = keras_linbp.calibrate_slopes(model, x, **RECURRENT)
    store = {}
    recording = _recurrent_net(kind, store)
    recording.set_weights(model.get_weights())
    recording(x, training=True)
    expected = {
        key: np.sqrt(np.mean(np.concatenate([DERIVATIVES[key[1]](a).ravel() for a in values]) ** 2))
        for key, values in store.items()
    }
    assert sorted(_site_key(path) for path in got) == sorted(expected)
    for path, value in got.items():
        np.testing.assert_allclose(value, expected[_site_key(path)], rtol=1e-5)


def _lstm_net(slopes=None):
    keras.utils.set_random_seed(0)
    kwargs = {}
    if slopes is not None:
        by_attribute = {path.rsplit(":", 1)[1]: slope for path, slope in slopes.items()}
        kwargs["activation"] = _pass_through(keras.activations.tanh, by_attribute["activation"])
        kwargs["recurrent_activation"] = _pass_through(
            keras.activations.sigmoid, by_attribute["recurrent_activation"]
        )
    return keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, **kwargs), keras.layers.Dense(2)])


def test_auto_slopes_fit_an_lstm_as_the_pass_through_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5, 3)).astype("float32")
    y = rng.integers(0, 2, size=16)
    model = _lstm_net()
    initial = model.get_weights()
    linear = LinearBackpropModel.from_model(model, slope="auto", recalibrate="fit", **RECURRENT)
    linear.compile(keras.optimizers.SGD(0.5), LOSS)
    linear.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert len(linear.calibrated_slopes) == 2  # the cell's activation and its gates
    expected = _sgd_step(_lstm_net(linear.calibrated_slopes), initial, x, y, 0.5)
    _assert_weights_close(linear.get_weights(), expected, rtol=1e-4)


# --- recalibration reads new slopes, the step is traced once --------------------


def _mlp(slopes=None):
    keras.utils.set_random_seed(0)
    slopes = slopes or {}

    def activation(name, f):
        return _pass_through(f, slopes[name]) if name in slopes else f

    inputs = keras.Input((5,))
    h = keras.layers.Dense(8, activation=activation("r", keras.activations.relu), name="r")(inputs)
    h = keras.layers.Dense(8, activation=activation("s", keras.activations.sigmoid), name="s")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, size=n)


class _Record(keras.callbacks.Callback):
    """What each epoch starts with (after the model's own recalibration,
    which `fit` puts first) and which train function each step runs."""

    def __init__(self):
        super().__init__()
        self.epochs = []
        self.train_functions = set()

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append((dict(self.model.calibrated_slopes), self.model.get_weights()))

    def on_train_batch_begin(self, batch, logs=None):
        self.train_functions.add(id(self.model.train_function))


def test_recalibrating_each_epoch_reads_the_new_slopes_in_one_trace(monkeypatch):
    x, y = _data()
    linear = LinearBackpropModel.from_model(_mlp(), slope="auto")  # recalibrate="epoch"
    linear.compile(keras.optimizers.SGD(0.5), LOSS)
    # TensorFlow and JAX run train_step's Python body once per trace
    # (PyTorch once per step: there the train function's identity counts).
    traces = []
    train_step = type(linear).train_step

    def counted(self, *args, **kwargs):
        traces.append(1)
        return train_step(self, *args, **kwargs)

    monkeypatch.setattr(type(linear), "train_step", counted)
    record = _Record()
    linear.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False, callbacks=[record])
    linear.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False, callbacks=[record])
    assert len(record.train_functions) == 1
    if keras.backend.backend() != "torch":
        assert len(traces) == 1
    else:
        assert len(traces) == 5  # one per step
    first_slopes = record.epochs[0][0]
    slopes, weights = record.epochs[-1]
    # The weights moved, so did the slopes: a step with stale ones differs.
    assert max(abs(slopes[path] - first_slopes[path]) for path in slopes) > 1e-3
    expected = _sgd_step(_mlp(slopes), weights, x, y, 0.5)
    _assert_weights_close(linear.get_weights(), expected)


def test_slopes_assigned_mid_epoch_drive_the_next_step():
    x, y = _data()
    slopes = {"r": 0.3, "s": 0.7}
    linear = LinearBackpropModel.from_model(_mlp(), slope="auto", recalibrate="never")
    linear.calibrate_slopes(x)
    calibrated = dict(linear.calibrated_slopes)
    initial = linear.get_weights()

    class Assign(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                self.model.calibrated_slopes = slopes

    linear.compile(keras.optimizers.SGD(0.5), LOSS)
    linear.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[Assign()])
    weights = _sgd_step(_mlp(calibrated), initial, x[:16], y[:16], 0.5)
    expected = _sgd_step(_mlp(slopes), weights, x[16:], y[16:], 0.5)
    _assert_weights_close(linear.get_weights(), expected)


def test_saved_auto_slopes_drive_the_loaded_models_step_and_are_no_weights(tmp_path):
    x, y = _data()
    plain = _mlp()
    linear = LinearBackpropModel.from_model(plain, slope="auto", recalibrate="never")
    slopes = linear.calibrate_slopes(x)
    # The slopes are state, not weights: the weight lists are the plain model's.
    assert len(linear.get_weights()) == len(plain.get_weights())
    linear.set_weights(plain.get_weights())
    path = os.path.join(tmp_path, "auto.keras")
    linear.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.slope == "auto" and loaded.recalibrate == "never"
    assert loaded.calibrated_slopes == pytest.approx(slopes)
    _assert_weights_close(loaded.get_weights(), plain.get_weights(), rtol=0, atol=0)
    loaded.compile(keras.optimizers.SGD(0.5), LOSS)
    loaded.train_on_batch(x, y)
    expected = _sgd_step(_mlp(slopes), plain.get_weights(), x, y, 0.5)
    _assert_weights_close(loaded.get_weights(), expected)


# --- `recalibrate=` needs slope="auto" -------------------------------------------


def test_recalibrate_with_a_numeric_slope_is_an_error():
    with pytest.raises(ValueError, match=r"`recalibrate='fit'` applies only with `slope=\"auto\"`"):
        LinearBackpropModel.from_model(_mlp(), slope=0.5, recalibrate="fit")
    with pytest.raises(ValueError, match="recalibrate"):
        LinearBackpropModel.from_model(_mlp(), recalibrate="never")  # slope 1.0
    with pytest.raises(ValueError, match="recalibrate"):
        LinearBackpropModel.from_model(_mlp(), slope="auto", recalibrate="daily")
    # The default is no request: accepted with any slope.
    linear = LinearBackpropModel.from_model(_mlp(), slope=0.5, recalibrate="epoch")
    with pytest.raises(ValueError, match="recalibrate"):
        linear.recalibrate = "fit"
    linear.slope = "auto"
    linear.recalibrate = "fit"
    assert linear.recalibrate == "fit"


def test_a_model_whose_slope_changed_after_auto_round_trips(tmp_path):
    linear = LinearBackpropModel.from_model(_mlp(), slope="auto", recalibrate="fit")
    linear.slope = 0.5
    path = os.path.join(tmp_path, "changed.keras")
    linear.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.slope == 0.5 and loaded.recalibrate == "fit"
