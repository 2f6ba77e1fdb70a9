"""Sites that really run: activations inside custom call(), phantom
attributes, the site swap and its nesting (linearize: linearize_test.py).

References are written by hand: an activation that trains with the linear
rule is `x + tf.stop_gradient(f(x) - x)` (forward f, gradient 1).
"""

import warnings

import numpy as np

import keras
import tensorflow as tf

import keras_linbp
from keras_linbp import _compat
from keras_linbp import sites as linbp_sites
from keras_linbp.models import LinearBackpropModel
from _site_models import GemmaLike, _blocks_model, _data, _mlp, _sgd_step_reference, hand_linear  # noqa: F401


def test_sites_are_what_runs_with_how_they_are_reached():
    model = _blocks_model()
    found = [(s.path, s.kind, s.activation_name) for s in linbp_sites.find_activation_sites(model)]
    assert found == [
        ("gemma:gelu", "op", "gelu"),
        ("llama", "attribute", "silu"),
        ("ops:tanh", "op", "tanh"),
        ("ops:sigmoid", "op", "sigmoid"),
        ("phantom/inner", "attribute", "gelu"),
    ]
    depths = [s.depth for s in linbp_sites.find_activation_sites(model)]
    assert depths == [1, 2, 3, 4, 5]
    # The phantom attribute (phantom.activation) is not a site.
    assert not any(s.layer.name == "phantom" for s in linbp_sites.find_activation_sites(model))


def test_fit_step_equals_hand_written_linear_reference():
    x, y = _data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _blocks_model()
    reference = _blocks_model(reference=True)
    exact = _blocks_model()
    reference.set_weights(model.get_weights())
    exact.set_weights(model.get_weights())
    expected = _sgd_step_reference(reference, x, y, 0.1, loss)
    exact_expected = _sgd_step_reference(exact, x, y, 0.1, loss)

    linear = LinearBackpropModel.from_model(model)
    linear.compile(keras.optimizers.SGD(0.1), loss)
    assert len(linear.linear_sites()) == 5
    linear.train_on_batch(x, y)
    got = [v.numpy() for v in linear.trainable_variables]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # ... and the reference really differs from exact backprop.
    assert max(np.abs(e - x_).max() for e, x_ in zip(expected, exact_expected)) > 1e-4


def test_gated_product_keeps_its_gate_exact():
    # d/d gate of gelu(a) * gate is gelu(a): only gelu's own derivative goes.
    x, y = _data()
    model = _blocks_model()
    layer = model.get_layer("gemma")
    xs = tf.constant(x)
    with keras_linbp.linearize(model):
        with tf.GradientTape() as tape:
            out = layer(xs)
        g_gate = tape.gradient(out, layer.gate.kernel)
    a = layer.up(xs)
    expected = tf.matmul(xs, keras.activations.gelu(a, approximate=True), transpose_a=True)
    np.testing.assert_allclose(g_gate.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_loss_that_computes_a_sigmoid_keeps_its_derivative():
    def sigmoid_mse(y_true, logits):
        return keras.ops.mean((keras.ops.sigmoid(logits) - keras.ops.cast(y_true, "float32")) ** 2)

    x, _ = _data()
    y = (x[:, :1] > 0).astype("float32")

    def build(activation):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((6,))
        h = keras.layers.Dense(5, activation=activation, name="hidden")(inputs)
        return keras.Model(inputs, keras.layers.Dense(1, name="logit")(h))

    model = build("tanh")
    reference = build(hand_linear(keras.activations.tanh))
    reference.set_weights(model.get_weights())
    expected = _sgd_step_reference(reference, x, y, 0.5, sigmoid_mse)
    linear = LinearBackpropModel.from_model(model)
    linear.compile(keras.optimizers.SGD(0.5), sigmoid_mse)
    linear.train_on_batch(x, y)
    for v, e in zip(linear.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)


def _attention_model():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((4, 6))
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")(inputs, inputs)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def test_multi_head_attention_summary_says_what_training_does():
    x = np.random.default_rng(1).normal(size=(8, 4, 6)).astype("float32")
    y = np.arange(8) % 3
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _attention_model()
    exact = _attention_model()
    exact.set_weights(model.get_weights())
    exact_expected = _sgd_step_reference(exact, x, y, 0.1, loss)
    linear = LinearBackpropModel.from_model(model, include_softmax=True)
    lines = []
    linear.linbp_summary(print_fn=lines.append)
    claimed_linear = [
        line for line in lines if line[:1].isdigit() and " linear " in line
    ]
    # The never-called `_softmax` sublayer is not a site.
    assert not any("mha/softmax" in line for line in lines)
    linear.compile(keras.optimizers.SGD(0.1), loss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        linear.train_on_batch(x, y)
    differs = max(
        np.abs(v.numpy() - e).max() for v, e in zip(linear.trainable_variables, exact_expected)
    )
    if claimed_linear:
        assert differs > 1e-6, "the summary lists a linear softmax, but training was exact"
    else:
        assert differs < 1e-6, "no linear site listed, but training differed from exact"


def test_swap_sites_nesting_restores_functions():
    model = _mlp()
    site = linbp_sites.find_activation_sites(model)[0]
    calls = []

    def recorder(tag):
        def make(site, original):
            def fn(x, *args, **kwargs):
                calls.append(tag)
                return original(x, *args, **kwargs)

            return fn

        return make

    x = tf.constant(_data()[0])
    with linbp_sites.swap_sites([site], recorder("outer")):
        model(x)
        with linbp_sites.swap_sites([site], recorder("inner")):
            model(x)
        model(x)
    model(x)
    assert calls == ["outer", "inner", "outer"]
    assert "activation" not in site.layer.__dict__ or site.layer.activation is keras.activations.tanh


def test_compat_check_passes_on_this_keras():
    _compat.check()
