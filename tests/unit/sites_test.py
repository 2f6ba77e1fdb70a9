"""Sites that really run: activations inside custom call(), phantom
attributes, linearize() in custom loops, warnings, nesting and threads.

References are written by hand: an activation that trains with the linear
rule is `x + tf.stop_gradient(f(x) - x)` (forward f, gradient 1).
"""

import threading
import warnings

import numpy as np
import pytest

import keras
import tensorflow as tf

import keras_linbp
from keras_linbp import _compat
from keras_linbp import sites as linbp_sites
from keras_linbp.models import LinearBackpropModel


def hand_linear(f):
    def g(x, *args, **kwargs):
        return x + tf.stop_gradient(f(x, *args, **kwargs) - x)

    return g


class GemmaLike(keras.layers.Layer):
    """`gelu(up(x), approximate=True) * gate(x)` computed in call()."""

    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.up = keras.layers.Dense(8, name="up")
        self.gate = keras.layers.Dense(8, name="gate")

    def call(self, x):
        gelu = keras.activations.gelu
        if self.reference:
            gelu = hand_linear(gelu)
        return gelu(self.up(x), approximate=True) * self.gate(x)


class LlamaLike(keras.layers.Layer):
    """Calls a stored `self.activation` in its own call()."""

    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get("silu")
        if reference:
            self.activation = hand_linear(self.activation)
        self.up = keras.layers.Dense(8, name="up")
        self.down = keras.layers.Dense(8, name="down")

    def call(self, x):
        return self.down(self.activation(self.up(x)))


class OpsBlock(keras.layers.Layer):
    """`keras.ops.tanh` and `keras.ops.sigmoid` in call()."""

    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.a = keras.layers.Dense(8, name="a")
        self.b = keras.layers.Dense(8, name="b")

    def call(self, x):
        tanh, sigmoid = keras.ops.tanh, keras.ops.sigmoid
        if self.reference:
            tanh, sigmoid = hand_linear(tanh), hand_linear(sigmoid)
        return tanh(self.a(x)) + sigmoid(self.b(x))


class PhantomBlock(keras.layers.Layer):
    """Stores `self.activation` but only hands it to a sublayer."""

    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get("gelu")
        inner = hand_linear(self.activation) if reference else self.activation
        self.dense = keras.layers.Dense(8, activation=inner, name="inner")

    def call(self, x):
        return self.dense(x)


def _blocks_model(reference=False, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = GemmaLike(reference, name="gemma")(inputs)
    h = LlamaLike(reference, name="llama")(h)
    h = OpsBlock(reference, name="ops")(h)
    h = PhantomBlock(reference, name="phantom")(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inputs, outputs)


def _data(n=16, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=(n,))
    return x, y


def _sgd_step_reference(model, x, y, lr, loss_fn):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return [v.numpy() - lr * g.numpy() for v, g in zip(model.trainable_variables, grads)]


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


# --- linearize ---------------------------------------------------------------


def _mlp(reference_from=None, seed=2):
    """Dense tanh -> sigmoid -> relu -> logits; `reference_from=k` writes
    sites k.. as hand-linear."""
    keras.utils.set_random_seed(seed)
    acts = [keras.activations.tanh, keras.activations.sigmoid, keras.activations.relu]
    inputs = keras.Input((6,))
    h = inputs
    for depth, act in enumerate(acts, start=1):
        if reference_from is not None and depth >= reference_from:
            act = hand_linear(act)
        h = keras.layers.Dense(7, activation=act, name=f"d{depth}")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def _input_gradient(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(y, model(x))
    return tape.gradient(loss, x).numpy()


@pytest.mark.parametrize("from_depth", [1, 2, 3])
def test_linearize_input_gradients_eager_and_tf_function(from_depth):
    x, y = _data()
    model = _mlp()
    reference = _mlp(reference_from=from_depth)
    reference.set_weights(model.get_weights())
    expected = _input_gradient(reference, x, y)
    exact = _input_gradient(model, x, y)
    assert np.abs(expected - exact).max() > 1e-5

    with keras_linbp.linearize(model, from_depth=from_depth) as linear_sites:
        assert [s.path for s in linear_sites] == [f"d{k}" for k in range(from_depth, 4)]
        eager = _input_gradient(model, x, y)
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-7)

    @tf.function
    def traced(x, y):
        with keras_linbp.linearize(model, from_depth=from_depth):
            loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = loss_fn(y, model(x))
            return tape.gradient(loss, x)

    np.testing.assert_allclose(traced(tf.constant(x), y).numpy(), expected, rtol=1e-5, atol=1e-7)
    # Exact again after the block.
    np.testing.assert_allclose(_input_gradient(model, x, y), exact, rtol=1e-6, atol=1e-8)


def test_linearize_restores_the_model_after_an_exception():
    x, y = _data()
    model = _gemma_and_mlp()
    exact = _input_gradient(model, x, y)
    nn = _compat.backend_op_modules()["nn"]
    gelu_before = nn.gelu
    with pytest.raises(RuntimeError, match="boom"):
        with keras_linbp.linearize(model):
            assert nn.gelu is not gelu_before
            raise RuntimeError("boom")
    assert nn.gelu is gelu_before
    assert "activation" not in model.get_layer("d").__dict__ or (
        model.get_layer("d").activation is keras.activations.tanh
    )
    np.testing.assert_allclose(_input_gradient(model, x, y), exact, rtol=1e-6, atol=1e-8)


def _gemma_and_mlp():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6,))
    h = GemmaLike(name="gemma")(inputs)
    h = keras.layers.Dense(7, activation="tanh", name="d")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def test_linearize_nests_inner_wins_and_outer_returns():
    x, y = _data()
    model = _mlp()
    with keras_linbp.linearize(model):
        outer = _input_gradient(model, x, y)
        with keras_linbp.linearize(model, slope=0.5, from_depth=3):
            inner = _input_gradient(model, x, y)
        again = _input_gradient(model, x, y)
    # Inner block: d3 at slope 0.5, d1 and d2 at the outer block's slope 1.
    reference = _mlp(reference_from=1)
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(outer, _input_gradient(reference, x, y), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(again, outer, rtol=1e-6, atol=1e-8)
    assert np.abs(inner - outer).max() > 1e-6


def test_linearize_is_per_thread():
    x, y = _data()
    model = _mlp()
    exact = _input_gradient(model, x, y)
    inside = threading.Event()
    done = threading.Event()
    results = {}

    def linear_thread():
        with keras_linbp.linearize(model):
            inside.set()
            results["linear"] = _input_gradient(model, x, y)
            done.wait(30)

    thread = threading.Thread(target=linear_thread)
    thread.start()
    assert inside.wait(30)
    results["other"] = _input_gradient(model, x, y)  # while the block is open
    done.set()
    thread.join(30)
    np.testing.assert_allclose(results["other"], exact, rtol=1e-6, atol=1e-8)
    assert np.abs(results["linear"] - exact).max() > 1e-5


def test_linearize_options_are_validated_like_the_model():
    model = _mlp()
    for kwargs, error, pattern in [
        ({"slope": "abc"}, ValueError, "slope"),
        ({"slope": float("nan")}, ValueError, "slope"),
        ({"from_depth": 0}, ValueError, "from_depth"),
        ({"from_depth": 1.7}, TypeError, "from_depth"),
        ({"sites": 123}, TypeError, "sites"),
        ({"sites": ["nope"]}, ValueError, "nope"),
        ({"slope": "auto"}, ValueError, "calibrate"),
    ]:
        with pytest.raises(error, match=pattern):
            with keras_linbp.linearize(model, **kwargs):
                pass


def test_linear_model_options_are_linearize_defaults():
    x, y = _data()
    model = _mlp()
    linear = LinearBackpropModel.from_model(model, from_depth=3, slope=0.5)
    with keras_linbp.linearize(linear) as selected:
        assert [s.path for s in selected] == ["d3"]
        got = _input_gradient(linear, x, y)
    with keras_linbp.linearize(model, from_depth=3, slope=0.5):
        expected = _input_gradient(model, x, y)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "options, reason",
    [({"sites": ["head"]}, "output layer"), ({"from_depth": 9}, "before from_depth=9")],
)
def test_zero_linear_sites_warns_once_naming_why(options, reason):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(h)
    model = LinearBackpropModel(inputs, outputs, **options)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    relevant = [w for w in caught if "applies to no activation site" in str(w.message)]
    assert len(relevant) == 1
    assert reason in str(relevant[0].message)


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
