"""The numeric contract on every Keras backend (TensorFlow, JAX, PyTorch).

Run once per backend: `KERAS_BACKEND=jax pytest tests` runs this module
(and the other modules marked `all_backends`); the TensorFlow run runs
everything. References are backend-neutral: an activation trained with the
linear rule is written by hand as `f(stop_gradient(x)) + (x - stop_gradient(x))`
(forward f, input gradient 1, parameters of f differentiated as usual), and
training steps are compared with Keras's own `train_step` on that model.
"""

import os

import numpy as np
import pytest

import keras

import keras_linbp
from keras_linbp.models import LinearBackpropModel

pytestmark = pytest.mark.all_backends
BACKEND = keras.backend.backend()
sg = keras.ops.stop_gradient


def hand_linear(f, slope=1.0):
    def g(x, *args, **kwargs):
        return f(sg(x), *args, **kwargs) + slope * (x - sg(x))

    return g


def input_gradient(fn, x, upstream=None):
    """`d/dx sum(upstream * fn(x))` as numpy, with the backend's autodiff."""
    x = np.asarray(x, "float32")
    up = np.ones_like(x) if upstream is None else np.asarray(upstream, "float32")
    if BACKEND == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = tf.reduce_sum(fn(t) * up)
        return tape.gradient(y, t).numpy()
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        return np.asarray(jax.grad(lambda t: jnp.sum(fn(t) * up))(jnp.asarray(x)))
    # On Keras's device (a GPU when there is one).
    t = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    (fn(t) * keras.ops.convert_to_tensor(up)).sum().backward()
    return t.grad.cpu().numpy()


X = np.array([-10.0, -1.5, -0.5, 0.0, 0.5, 1.5, 10.0], "float32")


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "gelu", "silu", "elu", "softplus", "sign"])
@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_linear_backprop_forward_and_gradient(name, slope):
    fn = keras_linbp.linear_backprop(name, slope=slope)
    expected_forward = keras.ops.convert_to_numpy(keras_linbp.activations.get(name)(X))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fn(X)), expected_forward, rtol=1e-6)
    up = np.linspace(-1, 2, X.size).astype("float32")
    np.testing.assert_allclose(input_gradient(fn, X, up), slope * up, rtol=1e-6)


def test_straight_through_gradient_is_clipped():
    fn = keras_linbp.straight_through("sign", clip=1.0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fn(X)), np.where(X >= 0, 1.0, -1.0)
    )
    np.testing.assert_array_equal(input_gradient(fn, X), (np.abs(X) <= 1).astype("float32"))


@pytest.mark.parametrize("layer", ["LinBPTanh", "LinBPGELU", "LinBPSign"])
def test_named_layers_pass_the_gradient(layer):
    instance = getattr(keras_linbp.layers, layer)(slope=0.25)
    np.testing.assert_allclose(input_gradient(instance, X), np.full_like(X, 0.25))


@keras.saving.register_keras_serializable(package="linbp_backend_tests")
class GemmaLike(keras.layers.Layer):
    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.up = keras.layers.Dense(6, name="up")
        self.gate = keras.layers.Dense(6, name="gate")

    def get_config(self):
        return {**super().get_config(), "reference": self.reference}

    def call(self, x):
        gelu = keras.activations.gelu
        if self.reference:
            gelu = hand_linear(gelu)
        return gelu(self.up(x), approximate=True) * self.gate(x)


def _model(reference=False, seed=0):
    """Dense(tanh) -> Gemma-like block (op site) -> PReLU (a layer call site
    with a trainable alpha) -> Dense(sigmoid) -> logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    tanh = hand_linear(keras.activations.tanh) if reference else "tanh"
    sigmoid = hand_linear(keras.activations.sigmoid) if reference else "sigmoid"
    h = keras.layers.Dense(6, activation=tanh, name="d1")(inputs)
    h = GemmaLike(reference, name="gemma")(h)
    prelu = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.3), name="prelu")
    if reference:
        h = _HandLinearPReLU(prelu)(h)
    else:
        h = prelu(h)
    h = keras.layers.Dense(6, activation=sigmoid, name="d2")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


class _HandLinearPReLU(keras.layers.Layer):
    def __init__(self, prelu, **kwargs):
        super().__init__(**kwargs)
        self.prelu = prelu

    def call(self, x):
        return hand_linear(self.prelu)(x)


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, size=n)


def _one_step(model, x, y, lr=0.2):
    model.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def test_fit_step_equals_hand_written_reference():
    x, y = _data()
    model = _model()
    reference = _model(reference=True)
    reference.set_weights(model.get_weights())
    exact = _model()
    exact.set_weights(model.get_weights())
    linear = LinearBackpropModel.from_model(model)
    assert [s.path for s in linear.linear_sites()] == ["d1", "gemma:gelu", "prelu", "d2"]
    got = _one_step(linear, x, y)
    expected = _one_step(reference, x, y)
    exact_expected = _one_step(exact, x, y)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    assert max(np.abs(e - x_).max() for e, x_ in zip(expected, exact_expected)) > 1e-4
    # PReLU's alpha moved: its gradient was kept.
    alpha = keras.ops.convert_to_numpy(linear.get_layer("prelu").alpha)
    assert np.abs(alpha - 0.3).max() > 1e-6


def test_exact_mode_equals_plain_keras():
    x, y = _data()
    model = _model()
    plain = _model()
    plain.set_weights(model.get_weights())
    exact = LinearBackpropModel.from_model(model, backprop="exact")
    for g, e in zip(_one_step(exact, x, y), _one_step(plain, x, y)):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)


def test_linearize_input_gradient_with_from_depth():
    x, y = _data()
    model = _model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def grad(m, **options):
        def f(t):
            if options:
                with keras_linbp.linearize(m, **options):
                    return loss(y, m(t)) * keras.ops.ones_like(t)
            return loss(y, m(t)) * keras.ops.ones_like(t)

        return input_gradient(f, x) / x.size

    # Sites 3 and 4 (prelu, d2) linear: the reference linearizes those only.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, activation="tanh", name="d1")(inputs)
    h = GemmaLike(name="gemma")(h)
    prelu = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.3), name="prelu")
    h = _HandLinearPReLU(prelu)(h)
    h = keras.layers.Dense(6, activation=hand_linear(keras.activations.sigmoid), name="d2")(h)
    reference = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(grad(model, from_depth=3), grad(reference), rtol=1e-5, atol=1e-7)
    assert np.abs(grad(model) - grad(model, from_depth=3)).max() > 1e-7


def test_save_and_load_keep_options_and_weights(tmp_path):
    x, y = _data()
    linear = LinearBackpropModel.from_model(_model(), slope=0.5, from_depth=2)
    _one_step(linear, x, y)
    path = os.path.join(tmp_path, "m.keras")
    linear.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.slope, loaded.from_depth) == (0.5, 2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(linear(x)), rtol=1e-6
    )


def test_auto_slopes_equal_numpy_rms_derivative():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(8, activation="relu", name="r")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    x, _ = _data(32)
    slopes = keras_linbp.calibrate_slopes(model, x)
    w, b = [keras.ops.convert_to_numpy(v) for v in model.weights[:2]]
    expected = np.sqrt(np.mean((x @ w + b > 0).astype("float64")))
    np.testing.assert_allclose(slopes["r"], expected, rtol=1e-6)


def _gelu_mlp(identity=False, linear=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    h = inputs
    for _ in range(3):
        act = None if identity else ("gelu" if not linear else keras_linbp.activations.linbp_gelu)
        h = keras.layers.Dense(64, activation=act)(h)
    return keras.Model(inputs, keras.layers.Dense(4)(h))


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's saved-tensor hooks")
def test_torch_linear_rule_saves_what_the_identity_network_saves():
    import torch

    x = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(32, 64)).astype("float32"))

    def saved_bytes(model):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x).sum()
        return total[0]

    exact = saved_bytes(_gelu_mlp())
    linear = saved_bytes(_gelu_mlp(linear=True))
    identity = saved_bytes(_gelu_mlp(identity=True))
    assert linear <= 1.05 * identity < exact


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's compiled memory analysis")
def test_jax_linear_rule_temp_memory_equals_identity_network():
    import jax
    import jax.numpy as jnp

    x = jnp.ones((256, 64))

    def temp_bytes(model):
        params = [v.value for v in model.trainable_variables]

        def loss(params):
            out, _ = model.stateless_call(params, [], x)
            return jnp.sum(out)

        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    exact = temp_bytes(_gelu_mlp())
    linear = temp_bytes(_gelu_mlp(linear=True))
    identity = temp_bytes(_gelu_mlp(identity=True))
    assert linear <= 1.05 * identity < exact


@pytest.mark.skipif(BACKEND != "torch", reason="Keras caches logits on PyTorch tensors")
def test_torch_linear_sigmoid_output_holds_no_reference_to_its_input():
    # Keras's sigmoid caches its input on its output (`_keras_logits`); the
    # linear rule's output (a view of it) must not keep that cache alive:
    # it would keep the pre-activation in memory, the linear rule's saving.
    import torch

    fn = keras_linbp.ops.linear_backprop(keras.activations.sigmoid)
    a = torch.randn(4, 8, requires_grad=True) * 2.0
    y = fn(a)
    held = [t for t in (y, y._base) if t is not None and hasattr(t, "_keras_logits")]
    assert not held
    # Keras itself does cache it: the check above can fail.
    assert hasattr(keras.activations.sigmoid(a), "_keras_logits")
