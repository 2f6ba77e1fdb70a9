"""The site dispatcher on every backend's ways of running a training step.

Each test trains (or differentiates) a `LinearBackpropModel` and a plain
`keras.Model` of the same layers and weights whose activations are written
as the pass-through `a*s + stop_gradient(f(a) - a*s)` (forward `f`, input
gradient `s`), and compares the weights (or gradients) with Keras's own
autodiff of that reference. Covered: an activation written with `keras.ops`
in the outermost functional graph (JAX's trainer and `stateless_call` run
the model's `call()` without its name scope), a compiled step
(`jit_compile=True`: XLA on TensorFlow, `jax.jit`, `torch.compile`), and a
`.keras` file saved on JAX loaded and trained on PyTorch.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

import keras_linbp

pytestmark = pytest.mark.all_backends
BACKEND = keras.backend.backend()
SLOPE = 0.5
sg = keras.ops.stop_gradient


def pass_through(f, slope=SLOPE):
    """`f` with input gradient `slope`: the reference linear activation."""

    def g(a):
        return a * slope + sg(f(a) - a * slope)

    return g


class GatedSigmoid(keras.layers.Layer):
    """An op site: `keras.ops.sigmoid` inside the layer's own `call()`."""

    def __init__(self, activation=keras.ops.sigmoid, **kwargs):
        super().__init__(**kwargs)
        self.gate = activation

    def call(self, x):
        return self.gate(x) * x


def outer_op_net(tanh=None, sigmoid=keras.ops.sigmoid):
    """`keras.ops.sigmoid` directly in the outermost functional graph."""
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    return inputs, keras.layers.Dense(2, name="out")(sigmoid(hidden))


def mixed_net(tanh=keras.ops.tanh, sigmoid=keras.ops.sigmoid):
    """An attribute site (`Dense(activation=)`), an op site inside a layer
    and an op site in the outermost graph."""
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation=tanh, name="hidden")(inputs)
    gated = GatedSigmoid(activation=sigmoid, name="gated")(keras.layers.Dense(4, name="mid")(hidden))
    return inputs, keras.layers.Dense(2, name="out")(sigmoid(gated))


def models(net, **compile_kwargs):
    """(LinearBackpropModel, pass-through reference, exact model), same
    weights, compiled alike with SGD and mean squared error."""
    linbp = keras_linbp.LinearBackpropModel(*net(), slope=SLOPE)
    reference = keras.Model(*net(pass_through(keras.ops.tanh), pass_through(keras.ops.sigmoid)))
    exact = keras.Model(*net())
    for model in (reference, exact):
        model.set_weights(linbp.get_weights())
    for model in (linbp, reference):
        model.compile(keras.optimizers.SGD(0.5), "mse", **compile_kwargs)
    # Only a sanity check that the two rules differ: not compiled (saves a
    # torch.compile).
    exact.compile(keras.optimizers.SGD(0.5), "mse")
    return linbp, reference, exact


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    return x, y


def assert_same_weights(model, reference, exact):
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The reference trains differently from exact backprop: the comparison
    # above can tell the two rules apart.
    difference = max(np.abs(a - b).max() for a, b in zip(reference.get_weights(), exact.get_weights()))
    assert difference > 1e-4


@pytest.mark.parametrize("net", [outer_op_net, mixed_net])
def test_outermost_op_site_trains_linearly_in_train_on_batch(net):
    linbp, reference, exact = models(net)
    x, y = data()
    paths = [site.path for site in linbp.linear_sites()]
    assert any(path.startswith(f"{linbp.name}:sigmoid") for path in paths), paths
    for model in (linbp, reference, exact):
        model.train_on_batch(x, y)
    assert_same_weights(linbp, reference, exact)


def test_outermost_op_site_trains_linearly_in_fit():
    linbp, reference, exact = models(mixed_net)
    x, y = data()
    for model in (linbp, reference, exact):
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert_same_weights(linbp, reference, exact)


class SubclassedNet(keras_linbp.LinearBackpropModel):
    """An op site in the `call()` of the outermost (subclassed) model."""

    def __init__(self, sigmoid=keras.ops.sigmoid, **kwargs):
        super().__init__(**kwargs)
        self.sigmoid = sigmoid
        self.hidden = keras.layers.Dense(4, name="hidden")
        self.out = keras.layers.Dense(2, name="out")

    def call(self, x):
        return self.out(self.sigmoid(self.hidden(x)))


def test_op_site_in_outermost_subclassed_call_trains_linearly():
    linbp = SubclassedNet(slope=SLOPE, backprop="linear")
    # The reference: the same class, exact backprop, pass-through sigmoid.
    reference = SubclassedNet(sigmoid=pass_through(keras.ops.sigmoid), backprop="exact")
    exact = SubclassedNet(backprop="exact")
    x, y = data()
    for model in (linbp, reference, exact):
        model(x)
    for model in (reference, exact):
        model.set_weights(linbp.get_weights())
    for model in (linbp, reference, exact):
        model.compile(keras.optimizers.SGD(0.5), "mse")
        model.train_on_batch(x, y)
    assert [site.path for site in linbp.linear_sites()] == [f"{linbp.name}:sigmoid"]
    assert_same_weights(linbp, reference, exact)


def stateless_gradients(model, x, y):
    """Gradients of the mean squared error w.r.t. the trainable variables
    of `model.stateless_call(...)`, by the backend's own autodiff."""
    def values(variables):
        return [keras.ops.convert_to_tensor(v.numpy()) for v in variables]

    non_trainable, trainable = values(model.non_trainable_variables), values(model.trainable_variables)
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

    def loss_of(values):
        outputs, _ = model.stateless_call(values, non_trainable, x, training=True)
        return keras.ops.mean(keras.ops.square(outputs - y))

    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss = loss_of(trainable)
        grads = tape.gradient(loss, trainable)
    elif BACKEND == "jax":
        import jax

        grads = jax.grad(loss_of)(trainable)
    else:
        import torch

        leaves = [t.detach().clone().requires_grad_(True) for t in trainable]
        grads = torch.autograd.grad(loss_of(leaves), leaves)
    return [keras.ops.convert_to_numpy(g) for g in grads]


def test_outermost_op_site_is_linear_in_linearize_and_stateless_call():
    linbp, reference, exact = models(mixed_net)
    x, y = data()
    with keras_linbp.linearize(linbp, slope=SLOPE):
        got = stateless_gradients(linbp, x, y)
    want = stateless_gradients(reference, x, y)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    exact_grads = stateless_gradients(exact, x, y)
    assert max(np.abs(a - b).max() for a, b in zip(want, exact_grads)) > 1e-4
    # Outside the block the model's call is Keras's again.
    assert "call" not in linbp.__dict__
    np.testing.assert_allclose(stateless_gradients(linbp, x, y)[0], exact_grads[0], rtol=1e-5, atol=1e-6)


def test_compiled_step_trains_linearly():
    # jit_compile=True: XLA on TensorFlow, jax.jit, torch.compile.
    linbp, reference, exact = models(mixed_net, jit_compile=True)
    x, y = data()
    for _ in range(2):
        for model in (linbp, reference, exact):
            model.train_on_batch(x, y)
    assert_same_weights(linbp, reference, exact)


def test_hand_placed_rules_train_linearly_in_a_compiled_plain_model():
    # `linbp_*` activations and a `LinearBackprop` layer in a plain
    # keras.Model: no dispatcher runs, the rule is called directly.
    def net(tanh, sigmoid):
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(4, activation=tanh, name="hidden")(inputs)
        return inputs, keras.layers.Dense(2, name="out")(sigmoid(keras.layers.Dense(4, name="mid")(hidden)))

    linbp = keras.Model(*net(keras_linbp.linear_backprop("tanh", slope=SLOPE),
                             keras_linbp.layers.LinearBackprop("sigmoid", slope=SLOPE)))
    reference = keras.Model(*net(pass_through(keras.ops.tanh), pass_through(keras.ops.sigmoid)))
    exact = keras.Model(*net(keras.ops.tanh, keras.ops.sigmoid))
    for model in (reference, exact):
        model.set_weights(linbp.get_weights())
    for model in (linbp, reference, exact):
        model.compile(keras.optimizers.SGD(0.5), "mse", jit_compile=model is linbp)
    x, y = data()
    for _ in range(2):
        for model in (linbp, reference, exact):
            model.train_on_batch(x, y)
    assert_same_weights(linbp, reference, exact)


_SAVE_ON_JAX = textwrap.dedent(
    """
    import sys
    import keras
    import keras_linbp

    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    mid = keras.layers.Dense(4, name="mid")(hidden)
    outputs = keras.layers.Dense(2, name="out")(keras.ops.sigmoid(mid))
    model = keras_linbp.LinearBackpropModel(inputs, outputs, slope=0.5)
    model.compile(keras.optimizers.SGD(0.5), "mse", jit_compile=True)
    model.save(sys.argv[1])
    """
)


@pytest.mark.skipif(BACKEND != "torch", reason="a JAX-saved model loaded on PyTorch")
def test_jax_saved_compiled_model_trains_linearly_on_torch(tmp_path):
    path = str(tmp_path / "model.keras")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, "-c", _SAVE_ON_JAX, path], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    linbp = keras.models.load_model(path)
    assert linbp.jit_compile
    assert linbp.slope == SLOPE

    def net(tanh="tanh", sigmoid=keras.ops.sigmoid):
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(4, activation=tanh, name="hidden")(inputs)
        mid = keras.layers.Dense(4, name="mid")(hidden)
        return inputs, keras.layers.Dense(2, name="out")(sigmoid(mid))

    reference = keras.Model(*net(pass_through(keras.ops.tanh), pass_through(keras.ops.sigmoid)))
    exact = keras.Model(*net())
    for model in (reference, exact):
        model.set_weights(linbp.get_weights())
    reference.compile(keras.optimizers.SGD(0.5), "mse", jit_compile=True)
    exact.compile(keras.optimizers.SGD(0.5), "mse")
    x, y = data()
    for model in (linbp, reference, exact):
        model.train_on_batch(x, y)
    assert_same_weights(linbp, reference, exact)
