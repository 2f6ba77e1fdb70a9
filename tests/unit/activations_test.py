"""The activation table and the `linbp_*` functions.

References: Keras's own activation functions (`keras.activations.get`),
numpy for `sign`, TensorFlow autodiff of the plain Keras function for the
table's `max_derivative` column.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_linbp import activations

TABLE_NAMES = sorted(activations.ACTIVATIONS)
KERAS_NAMES = [name for name in TABLE_NAMES if name != "sign"]

# Includes the kinks and clipping points of the piecewise activations
# (0, +-1, +-3, 6) and values deep in saturation.
POINTS = np.concatenate(
    [np.linspace(-8.0, 8.0, 41), [0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 6.0, 1e-7, -1e-7]]
).astype("float32")


def test_table_has_the_required_entries():
    required = {
        "sigmoid", "tanh", "relu", "relu6", "leaky_relu", "elu", "selu",
        "gelu", "silu", "softplus", "softsign", "hard_sigmoid", "hard_tanh",
        "hard_silu", "sign", "linear",
    }
    assert required <= set(activations.ACTIVATIONS)
    for name, spec in activations.ACTIVATIONS.items():
        assert spec.name == name
        assert spec.saturation in activations.SATURATION_KINDS


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_forward_gradient_and_serialization_of_every_entry(name):
    x = tf.constant(POINTS)
    linbp_fn = activations.LINBP_FUNCTIONS[name]
    assert getattr(activations, f"linbp_{name}") is linbp_fn
    assert linbp_fn.__name__ == f"linbp_{name}"

    # Forward: Keras's own function, exactly (numpy for sign, see below).
    if name == "sign":
        expected = np.where(POINTS >= 0, 1.0, -1.0).astype("float32")
    else:
        expected = keras.activations.get(name)(x).numpy()
    np.testing.assert_array_equal(activations.get_spec(name).forward(x).numpy(), expected)

    # Backward: the upstream gradient, unchanged.
    upstream = tf.constant(np.random.default_rng(0).normal(size=POINTS.shape).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = linbp_fn(x)
    np.testing.assert_array_equal(y.numpy(), expected)
    np.testing.assert_array_equal(
        tape.gradient(y, x, output_gradients=upstream).numpy(), upstream.numpy()
    )

    # Keras serialization round trip, also through JSON as in a saved model.
    config = keras.activations.serialize(linbp_fn)
    assert config["config"] == f"keras_linbp>linbp_{name}"
    assert keras.activations.deserialize(config) is linbp_fn
    assert keras.activations.deserialize(json.loads(json.dumps(config))) is linbp_fn
    assert keras.activations.get(config) is linbp_fn


def test_sign_is_plus_minus_one_with_sign_of_zero_plus_one():
    expected = np.where(POINTS >= 0, 1.0, -1.0).astype("float32")
    for fn in (activations.sign, activations.linbp_sign):
        result = fn(tf.constant(POINTS)).numpy()
        np.testing.assert_array_equal(result, expected)
        assert set(np.unique(result)) == {-1.0, 1.0}
    assert activations.sign(tf.constant([0.0])).numpy()[0] == 1.0


def test_max_derivative_matches_autodiff():
    # Autodiff of Keras's function on a wide grid: the sup of |f'(a)|.
    x = tf.constant(np.linspace(-30.0, 30.0, 6001), dtype="float64")
    for name in KERAS_NAMES:
        declared = activations.ACTIVATIONS[name].max_derivative
        if declared is None:
            continue
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = keras.activations.get(name)(x)
        measured = np.max(np.abs(tape.gradient(y, x).numpy()))
        np.testing.assert_allclose(measured, declared, rtol=1e-3, err_msg=name)


def test_aliases_resolve_to_table_entries():
    assert activations.get_spec("swish") is activations.ACTIVATIONS["silu"]
    assert activations.get_spec("hard_swish") is activations.ACTIVATIONS["hard_silu"]
    assert activations.get_spec("identity") is activations.ACTIVATIONS["linear"]
    assert activations.linbp_swish is activations.linbp_silu


def test_unknown_name_raises_value_error_listing_valid_names():
    with pytest.raises(ValueError) as info:
        activations.get_spec("tanhh")
    message = str(info.value)
    assert "'tanhh'" in message
    for name in TABLE_NAMES:
        assert name in message
    with pytest.raises(ValueError, match="tanhh"):
        activations.get("tanhh")


def test_get_rejects_non_callables():
    with pytest.raises(TypeError, match="name or a callable"):
        activations.get(3)
    assert activations.get(keras.activations.mish) is keras.activations.mish
    assert activations.get("tanh") is keras.activations.tanh


def test_find_spec_recognises_keras_table_and_linbp_functions():
    assert activations.find_spec(keras.activations.tanh).name == "tanh"
    assert activations.find_spec(activations.sign).name == "sign"
    assert activations.find_spec(activations.linbp_relu6).name == "relu6"
    assert activations.find_spec(keras.activations.mish) is None


def test_linbp_functions_exist_for_every_entry():
    assert set(activations.LINBP_FUNCTIONS) == set(activations.ACTIVATIONS)
