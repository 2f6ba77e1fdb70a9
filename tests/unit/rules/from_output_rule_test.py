"""`keras_linbp.from_output` and `backprop="from_output"`: the exact
gradient, recovered from the activation's output, on every backend.

References: the backend's autodiff of Keras's own activation (a site), and
one SGD step of the plain Keras model (a model).
"""

import keras
import numpy as np
import pytest

import keras_linbp
from keras_linbp import _backend
from keras_linbp import rules

pytestmark = pytest.mark.all_backends

# Away from the kinks of the step-wise activations (0, +-1, +-3, 6), where
# autodiff picks a side the output cannot always tell.
A = np.concatenate([np.linspace(-7.9, 7.9, 80), [-0.752, -1.278, -1.19, -0.31]]).astype("float32")
A = A[np.min(np.abs(A[:, None] - np.array([0.0, 1.0, -1.0, 3.0, -3.0, 6.0])[None]), axis=1) > 1e-3]


def _derivative(fn, a=A, **kwargs):
    return _backend.elementwise_derivative(lambda t: fn(t, **kwargs), keras.ops.convert_to_tensor(a))


@pytest.mark.parametrize("name", rules.FROM_OUTPUT_NAMES)
def test_the_derivative_is_the_activations_own(name):
    fn = keras_linbp.from_output(name)
    plain = keras.activations.get(name) if name != "sign" else keras.ops.sign
    x = keras.ops.convert_to_tensor(A)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fn(x)), keras.ops.convert_to_numpy(plain(x)))
    # Non-monotone ones: ~1e-4 in float32 next to their minimum (f' ~ sqrt(y - y*)).
    np.testing.assert_allclose(_derivative(fn), _derivative(plain), atol=2e-4, rtol=1e-5)
    assert rules.rule_of(fn) == rules.FromOutputRule(name)


@pytest.mark.parametrize(
    "name, kwargs",
    [("gelu", {"approximate": True}), ("elu", {"alpha": 0.5}), ("leaky_relu", {"negative_slope": 0.05})],
)
def test_the_parameters_of_each_call_are_read(name, kwargs):
    fn = keras_linbp.from_output(name)
    plain = keras.activations.get(name)
    np.testing.assert_allclose(_derivative(fn, **kwargs), _derivative(plain, **kwargs), atol=2e-4, rtol=1e-5)


def test_bfloat16_derivatives_are_computed_in_float32():
    a = keras.ops.convert_to_tensor(A, "bfloat16")
    fn = keras_linbp.from_output("gelu")
    got = _derivative(fn, a).astype("float32")
    # The float32 derivative at the bfloat16 input and output: the rounding
    # of y to bfloat16 (8 bits) is what separates them, ~1e-2 near y*.
    reference = _derivative(keras.activations.gelu, keras.ops.cast(a, "float32"))
    np.testing.assert_allclose(got, reference, atol=0.06)
    assert float(np.max(np.abs(got - reference))) > 0.0  # y's rounding is there


@pytest.mark.parametrize("activation", ["softmax", lambda x: x * keras.ops.sigmoid(2.0 * x)], ids=["softmax", "lambda"])
def test_an_activation_it_cannot_invert_is_refused_by_name(activation):
    with pytest.raises(ValueError, match="from-output rule cannot invert"):
        keras_linbp.from_output(activation)


def test_it_keeps_the_output_and_one_bit_per_element_not_the_input():
    backward = rules.FromOutputRule("gelu").for_call(keras.activations.gelu, (), {})
    x = keras.ops.convert_to_tensor(np.linspace(-3, 3, 100).astype("float32"))
    y = keras.activations.gelu(x)
    kept_y, packed = backward.residual(x, y)
    assert kept_y is y
    assert tuple(packed.shape) == (13,) and keras.backend.standardize_dtype(packed.dtype) == "uint8"
    tanh_y, none = rules.FromOutputRule("tanh").for_call(keras.activations.tanh, (), {}).residual(x, keras.ops.tanh(x))
    assert none is None
    assert rules.FromOutputRule("gelu").bytes_per_element() == 0.125
    assert rules.FromOutputRule("tanh").bytes_per_element() == 0.0


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="gelu")(inputs)
    h = keras.layers.Dense(16, activation="tanh")(h)
    h = keras.layers.Dense(16)(h)
    h = keras.layers.LeakyReLU(negative_slope=0.1)(h)
    h = keras.layers.Dense(16, activation="silu")(h)
    h = keras.layers.Dense(16)(h)
    h = keras.layers.ELU(alpha=0.7)(h)
    h = keras.layers.Dense(16, activation="softmax")(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def _sgd_step(model):
    x = np.random.RandomState(0).randn(64, 8).astype("float32") * 2
    y = np.random.RandomState(1).randn(64, 3).astype("float32")
    before = [variable.numpy().copy() for variable in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.train_on_batch(x, y)
    return [start - variable.numpy() for start, variable in zip(before, model.trainable_variables)]


def test_a_from_output_model_steps_as_the_plain_model():
    exact = _sgd_step(_model())
    wrapped = keras_linbp.LinearBackpropModel.from_model(_model(), backprop="from_output")
    linear = keras_linbp.LinearBackpropModel.from_model(_model(), backprop="linear")
    got, off = _sgd_step(wrapped), _sgd_step(linear)
    linear_off = 0.0
    for plain, from_output, linear_step in zip(exact, got, off):
        scale = float(np.max(np.abs(plain)))
        np.testing.assert_allclose(from_output, plain, atol=1e-4 * scale)
        linear_off = max(linear_off, float(np.max(np.abs(linear_step - plain))) / scale)
    # The test can tell: linear backprop's step is another one.
    assert linear_off > 0.1


def test_the_summary_shows_what_each_site_keeps():
    lines = []
    wrapped = keras_linbp.LinearBackpropModel.from_model(_model(), backprop="from_output")
    keras_linbp.linbp_summary(wrapped, print_fn=lines.append)
    assert lines[0].startswith('LinearBackpropModel "') and "backprop='from_output';" in lines[0]
    assert "5 of 6 activation sites use the from-output backward rule" in lines[0]
    assert lines[1].split() == ["#", "site", "reached", "by", "layer", "activation", "rule", "bytes/elem", "note"]
    rows = {line.split()[5 if "layer call" in line else 4]: line for line in lines[3:9]}
    assert "0.125 + output" in rows["gelu"] and "0.125 + output" in rows["silu"]
    assert "0 + output" in rows["tanh"] and "0 + output" in rows["leaky_relu"]
    assert "exact" in rows["softmax"] and "+ output" not in rows["softmax"]


def test_a_slope_is_refused_at_construction():
    with pytest.raises(ValueError, match="a from_output site has no slope"):
        keras_linbp.LinearBackpropModel.from_model(_model(), backprop="from_output", slope=0.5)
    with pytest.raises(ValueError, match="a from_output site has no slope"):
        keras_linbp.LinearizeOptions(backprop="from_output", slope="auto")


def test_the_summary_says_where_the_output_is_shared_and_where_it_is_a_copy():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="gelu", name="shared")(inputs)
    h = keras.layers.Dense(16, activation="silu", name="dropped")(h)
    h = keras.layers.Dropout(0.1)(h)
    h = keras.layers.Dense(16, activation="tanh", name="unknown")(h)
    h = keras.layers.Add()([h, h])
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    rows = {row.site.path: row.note for row in keras_linbp.summary.site_rows(
        model, keras_linbp.LinearizeOptions(backprop="from_output"))}
    assert rows["shared"] == "output shared with Dense"
    assert rows["dropped"] == "output kept as a copy (Dropout next)"
    assert "output" not in rows["unknown"]
    # Rules that keep no output say nothing of it.
    linear_rows = keras_linbp.summary.site_rows(model, keras_linbp.LinearizeOptions())
    assert not any("output" in row.note for row in linear_rows)
