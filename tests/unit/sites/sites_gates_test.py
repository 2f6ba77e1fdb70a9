"""Multiplicative gates (squeeze-and-excitation) keep exact backprop by
default; `include_gates=True` linearizes them. Calibration refuses
non-finite slopes."""

import warnings

import numpy as np
import pytest

import keras

import keras_linbp
from keras_linbp import sites as linbp_sites
from keras_linbp.calibration import NonFiniteSlopesError
from keras_linbp.models import LinearBackpropModel

pytestmark = pytest.mark.all_backends
sg = keras.ops.stop_gradient


def _se_model(seed=0, hand=None):
    """conv -> hidden sigmoid -> squeeze-and-excitation (sigmoid gate via a
    Multiply layer) -> a second gate written as `*` -> logits.

    `hand` maps "hidden" / "squeeze" / "gate" / "gate2" to a hand-written activation
    replacing that layer's sigmoid (the reference models)."""
    hand = hand or {}
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation=hand.get("hidden", "sigmoid"),
                            name="hidden")(inputs)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    s = keras.layers.Conv2D(2, 1, activation=hand.get("squeeze", "relu"), name="squeeze")(s)
    s = keras.layers.Conv2D(4, 1, activation=hand.get("gate", "sigmoid"), name="gate")(s)
    h = keras.layers.Multiply(name="excite")([h, s])
    t = keras.layers.Dense(4, activation=hand.get("gate2", "sigmoid"), name="gate2")(h)
    h = h * t
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(h))
    return keras.Model(inputs, outputs)


def _linear(f):
    def g(x):
        return f(sg(x)) + (x - sg(x))

    return g


_linear_sigmoid = _linear(keras.activations.sigmoid)
_linear_relu = _linear(keras.activations.relu)


def _data(n=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, size=n)


def _one_step(model, x, y):
    model.compile(
        keras.optimizers.SGD(0.5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return [np.asarray(w) for w in model.get_weights()]


def test_gates_are_found_in_the_functional_graph():
    model = _se_model()
    found = {s.path: s.is_gate for s in linbp_sites.find_activation_sites(model)}
    # Used only as a factor (a Multiply layer, the `*` op): gates. The hidden
    # sigmoid is the tensor the gate scales (it also feeds the pooling).
    assert found == {"hidden": False, "squeeze": False, "gate": True, "gate2": True}


def test_gates_stay_exact_by_default_and_linear_with_include_gates():
    x, y = _data()
    hidden = {"hidden": _linear_sigmoid, "squeeze": _linear_relu}
    exact_gates = _one_step(_se_model(hand=hidden), x, y)
    all_linear = _one_step(
        _se_model(hand={**hidden, "gate": _linear_sigmoid, "gate2": _linear_sigmoid}), x, y
    )
    default = LinearBackpropModel.from_model(_se_model())
    assert [s.path for s in default.linear_sites()] == ["hidden", "squeeze"]
    got = _one_step(default, x, y)
    for a, b in zip(got, exact_gates):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with_gates = LinearBackpropModel.from_model(_se_model(), include_gates=True)
    got = _one_step(with_gates, x, y)
    for a, b in zip(got, all_linear):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The two references differ, so the comparison tells the rules apart.
    assert any(not np.allclose(a, b) for a, b in zip(exact_gates, all_linear))


def test_summary_says_a_gate_is_exact_and_config_keeps_the_option():
    model = LinearBackpropModel.from_model(_se_model())
    lines = []
    model.linbp_summary(print_fn=lines.append)
    gate_line = next(line for line in lines if " gate " in line and "Conv2D" in line)
    assert "exact" in gate_line and "gate" in gate_line.split("exact", 1)[1]
    restored = LinearBackpropModel.from_config(
        LinearBackpropModel.from_model(_se_model(), include_gates=True).get_config()
    )
    assert restored.include_gates is True


def test_calibration_names_the_sites_with_non_finite_slopes():
    model = _se_model()
    x, _ = _data()
    kernel = model.get_layer("hidden").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(NonFiniteSlopesError, match="non-finite local derivatives.*hidden"):
        keras_linbp.calibrate_slopes(model, x)


def test_recalibration_on_diverged_weights_warns_and_keeps_the_slopes():
    x, y = _data()
    model = LinearBackpropModel.from_model(_se_model(), slope="auto")

    class Poison(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.slopes = dict(self.model.calibrated_slopes)
            kernel = self.model.get_layer("hidden").kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    poison = Poison()
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, verbose=0, callbacks=[poison])
    assert any("recalibrating the slopes failed" in str(w.message) for w in caught)
    assert model.calibrated_slopes == poison.slopes
