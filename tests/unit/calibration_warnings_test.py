"""`calibrate_slopes` on a model with non-trainable state (BatchNormalization)
leaves that state as it was and makes NumPy 2 warn about nothing (it read the
TensorFlow variables with `np.array`, whose `__array__` takes no `copy`)."""

import warnings

import keras
import numpy as np
import pytest

import keras_linbp


def test_calibrate_slopes_restores_batch_norm_state_without_warnings():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(16, name="dense")(inputs)
    a = keras.layers.BatchNormalization(name="bn")(a)
    h = keras.layers.Activation("relu", name="relu")(a)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    bn = model.get_layer("bn")
    before = [np.array(w) for w in bn.get_weights()]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        slopes = keras_linbp.calibrate_slopes(model, x)

    # numpy: BatchNormalization in training mode (gamma 1, beta 0), then
    # relu' = 1[a > 0], so the rms slope is sqrt(fraction of a > 0).
    kernel, bias = (np.array(w, np.float64) for w in model.get_layer("dense").get_weights())
    pre = x @ kernel + bias
    normalized = (pre - pre.mean(0)) / np.sqrt(pre.var(0) + bn.epsilon)
    assert slopes["relu"] == pytest.approx(np.sqrt(np.mean(normalized > 0)), abs=1e-6)
    for got, expected in zip(bn.get_weights(), before):
        np.testing.assert_array_equal(got, expected)
