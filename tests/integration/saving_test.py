"""A model mixing every kind of keras_linbp object survives `.keras` save/load.

After loading (no `custom_objects`: `import keras_linbp` registered
everything), predictions are identical and the gradients are still the
linear-backprop ones, checked against a numpy forward/backward pass written
here from the model's weights.
"""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_linbp import activations
from keras_linbp import layers

SIGMOID_SLOPE = 0.5


def _build_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(7, activation=activations.linbp_tanh, name="dense_tanh")(inputs)
    x = keras.layers.Dense(5, name="dense_2")(x)
    x = layers.LinearBackprop("sigmoid", slope=SIGMOID_SLOPE, name="sigmoid_half")(x)
    x = keras.layers.Dense(4, name="dense_3")(x)
    x = layers.LinBPReLU(name="relu")(x)
    x = keras.layers.Dense(4, name="dense_4")(x)
    x = layers.LinBPSign(name="sign")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs)


def _numpy_reference(weights, x, upstream, linear):
    """Forward output and weight gradients of `sum(upstream * model(x))`.

    `linear=True`: the linear-backprop rule (tanh, relu, sign pass the
    gradient unchanged, the sigmoid multiplies it by SIGMOID_SLOPE).
    `linear=False`: ordinary backprop (sign's derivative is 0 there).
    """
    w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = [w.astype("float64") for w in weights]
    x = x.astype("float64")
    a1 = x @ w1 + b1
    h1 = np.tanh(a1)
    a2 = h1 @ w2 + b2
    h2 = 1.0 / (1.0 + np.exp(-a2))
    a3 = h2 @ w3 + b3
    h3 = np.maximum(a3, 0.0)
    a4 = h3 @ w4 + b4
    h4 = np.where(a4 >= 0, 1.0, -1.0)
    y = h4 @ w5 + b5

    g = upstream.astype("float64")
    grads = [h4.T @ g, g.sum(0)]
    g = g @ w5.T
    g = g if linear else np.zeros_like(g)  # sign
    grads = [h3.T @ g, g.sum(0)] + grads
    g = g @ w4.T
    g = g if linear else g * (a3 > 0)  # relu
    grads = [h2.T @ g, g.sum(0)] + grads
    g = g @ w3.T
    g = SIGMOID_SLOPE * g if linear else g * h2 * (1.0 - h2)  # sigmoid
    grads = [h1.T @ g, g.sum(0)] + grads
    g = g @ w2.T
    g = g if linear else g * (1.0 - h1**2)  # tanh
    grads = [x.T @ g, g.sum(0)] + grads
    return y, grads


def _model_gradients(model, x, upstream):
    with tf.GradientTape() as tape:
        y = model(x)
    grads = tape.gradient(y, model.trainable_weights, output_gradients=tf.constant(upstream))
    return y.numpy(), [g.numpy() for g in grads]


@pytest.fixture
def saved_model(tmp_path):
    model = _build_model()
    path = tmp_path / "mixed.keras"
    model.save(path)
    return model, path


def test_saved_model_predicts_identically_and_keeps_linear_gradients(saved_model):
    model, path = saved_model
    loaded = keras.saving.load_model(path)  # no custom_objects

    rng = np.random.default_rng(11)
    x = rng.normal(size=(9, 6)).astype("float32")
    upstream = rng.normal(size=(9, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))

    # The restored objects are ours, not plain Keras activations.
    assert loaded.get_layer("dense_tanh").activation is activations.linbp_tanh
    restored = loaded.get_layer("sigmoid_half")
    assert type(restored) is layers.LinearBackprop and restored.slope == SIGMOID_SLOPE
    assert type(loaded.get_layer("relu")) is layers.LinBPReLU
    assert type(loaded.get_layer("sign")) is layers.LinBPSign

    weights = [w.numpy() for w in loaded.trainable_weights]
    y, grads = _model_gradients(loaded, x, upstream)
    y_reference, linear_reference = _numpy_reference(weights, x, upstream, linear=True)
    _, exact_reference = _numpy_reference(weights, x, upstream, linear=False)
    np.testing.assert_allclose(y, y_reference, rtol=1e-5, atol=1e-5)
    for grad, expected, exact in zip(grads, linear_reference, exact_reference):
        np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)
    # The check can fail: ordinary backprop gives different gradients.
    assert not all(
        np.allclose(grad, exact, rtol=1e-3, atol=1e-3) for grad, exact in zip(grads, exact_reference)
    )
    # Same gradients as the model before saving.
    _, original_grads = _model_gradients(model, x, upstream)
    for grad, original in zip(grads, original_grads):
        np.testing.assert_array_equal(grad, original)


def test_saved_config_names_the_registered_objects(saved_model):
    model, path = saved_model
    config = json.dumps(model.get_config())
    assert "keras_linbp>linbp_tanh" in config
    assert "keras_linbp>LinearBackprop" in config
    assert "keras_linbp>LinBPReLU" in config and "keras_linbp>LinBPSign" in config


def test_fresh_process_loads_after_importing_keras_linbp(saved_model):
    # Registration must come from `import keras_linbp` alone.
    _, path = saved_model
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import keras
        import keras_linbp
        model = keras.saving.load_model({str(path)!r})
        print(model.get_layer("dense_tanh").activation.__name__,
              type(model.get_layer("sigmoid_half")).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["linbp_tanh", "LinearBackprop"]
