"""`linear_backprop` and `straight_through`: forward, gradients, dtypes, errors.

References: Keras's activation functions for the forward pass; numpy
`slope * upstream` and the numpy mask `|a| <= clip` for the gradients.
"""

import itertools

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import keras_linbp
from keras_linbp import activations

RNG = np.random.default_rng(7)
# Points at, inside and outside the clip thresholds used below.
X = np.concatenate(
    [np.linspace(-4.0, 4.0, 33), [-1.0, 1.0, 0.5, -0.5, 0.0, 1.0001, -0.9999]]
).astype("float32")
# A non-trivial upstream gradient (not all ones), so that `g <- g` and
# `g <- slope * g` cannot pass by accident.
UPSTREAM = RNG.normal(size=X.shape).astype("float32")

MODES = ["eager", "tf_function", "jit_compile"]


def _gradient(fn, x, upstream, mode):
    """(fn(x), d<fn(x), upstream>/dx) computed in `mode`."""

    def value_and_gradient(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x, output_gradients=upstream)

    if mode == "tf_function":
        value_and_gradient = tf.function(value_and_gradient)
    elif mode == "jit_compile":
        value_and_gradient = tf.function(value_and_gradient, jit_compile=True)
    y, grad = value_and_gradient(tf.constant(x), tf.constant(upstream))
    return y.numpy(), grad.numpy()


@pytest.mark.parametrize("mode", MODES)
def test_linear_backprop_gradient_is_slope_times_upstream(mode):
    for activation, slope in itertools.product(["sigmoid", "relu", "sign"], [1.0, 0.5, -2.0, 0.1]):
        y, grad = _gradient(keras_linbp.linear_backprop(activation, slope=slope), X, UPSTREAM, mode)
        np.testing.assert_array_equal(grad, np.float32(slope) * UPSTREAM, err_msg=activation)
        expected_forward = (
            np.where(X >= 0, 1.0, -1.0).astype("float32")
            if activation == "sign"
            else keras.activations.get(activation)(tf.constant(X)).numpy()
        )
        if mode == "jit_compile":
            # XLA may fuse transcendental functions differently.
            np.testing.assert_allclose(y, expected_forward, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(y, expected_forward)


@pytest.mark.parametrize("mode", MODES)
def test_linear_backprop_accepts_keras_functions_and_callables(mode):
    def cube(x):
        return x * x * x

    for fn in (keras.activations.mish, cube):
        y, grad = _gradient(keras_linbp.linear_backprop(fn, slope=3.0), X, UPSTREAM, mode)
        np.testing.assert_allclose(y, fn(tf.constant(X)).numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(grad, np.float32(3.0) * UPSTREAM)


def test_linear_backprop_passes_extra_arguments_to_the_forward_function():
    x = tf.constant(RNG.normal(size=(3, 4)).astype("float32"))
    upstream = tf.constant(RNG.normal(size=(3, 4)).astype("float32"))
    softmax = keras_linbp.linear_backprop(keras.activations.softmax)
    leaky = keras_linbp.linear_backprop("leaky_relu")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_softmax = softmax(x, axis=0)
        y_leaky = leaky(x, negative_slope=0.5)
    np.testing.assert_array_equal(y_softmax.numpy(), keras.activations.softmax(x, axis=0).numpy())
    np.testing.assert_array_equal(
        y_leaky.numpy(), keras.activations.leaky_relu(x, negative_slope=0.5).numpy()
    )
    # A Softmax layer's `call(inputs, mask=...)`, as swapped in by `sites`.
    softmax_layer = keras.layers.Softmax()
    mask = tf.constant([[True, False, True, True], [True, True, True, False], [False, True, True, True]])
    with tf.GradientTape() as masked_tape:
        masked_tape.watch(x)
        y_masked = keras_linbp.linear_backprop(softmax_layer.call)(x, mask=mask)
    np.testing.assert_array_equal(y_masked.numpy(), softmax_layer(x, mask=mask).numpy())
    np.testing.assert_array_equal(
        masked_tape.gradient(y_masked, x, output_gradients=upstream).numpy(), upstream.numpy()
    )
    for y in (y_softmax, y_leaky):
        np.testing.assert_array_equal(
            tape.gradient(y, x, output_gradients=upstream).numpy(), upstream.numpy()
        )


@pytest.mark.parametrize("mode", MODES)
def test_straight_through_gradient_is_the_clip_mask(mode):
    for clip in (1.0, 0.5, None):
        y, grad = _gradient(keras_linbp.straight_through("sign", clip=clip), X, UPSTREAM, mode)
        mask = np.ones_like(X, dtype=bool) if clip is None else np.abs(X) <= np.float32(clip)
        np.testing.assert_array_equal(grad, np.where(mask, UPSTREAM, 0.0).astype("float32"))
        np.testing.assert_array_equal(y, np.where(X >= 0, 1.0, -1.0).astype("float32"))
        if clip == 1.0:
            # Both thresholds themselves pass, just outside does not.
            assert grad[X == 1.0][0] == UPSTREAM[X == 1.0][0]
            assert grad[X == np.float32(1.0001)][0] == 0.0


def test_straight_through_with_a_bounded_activation():
    y, grad = _gradient(keras_linbp.straight_through("hard_tanh"), X, UPSTREAM, "eager")
    np.testing.assert_array_equal(y, keras.activations.hard_tanh(tf.constant(X)).numpy())
    np.testing.assert_array_equal(grad, np.where(np.abs(X) <= 1.0, UPSTREAM, 0.0))


def test_straight_through_rejects_non_positive_clip():
    for clip in (0.0, -1.0):
        with pytest.raises(ValueError, match="clip"):
            keras_linbp.straight_through("sign", clip=clip)


NUMPY_DTYPES = {
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float32": np.float32,
    "float64": np.float64,
}


@pytest.mark.parametrize("dtype", list(NUMPY_DTYPES))
def test_dtype_is_kept_in_values_and_gradients(dtype):
    numpy_dtype = NUMPY_DTYPES[dtype]
    x = tf.constant(X.astype(numpy_dtype))
    upstream = tf.constant(UPSTREAM.astype(numpy_dtype))
    rules = [
        ("tanh", keras_linbp.linear_backprop("tanh"), 1.0),
        ("sigmoid", keras_linbp.linear_backprop("sigmoid", slope=0.5), 0.5),
        ("sign", keras_linbp.straight_through("sign", clip=None), 1.0),
        ("relu", activations.linbp_relu, 1.0),
    ]
    for name, fn, slope in rules:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        grad = tape.gradient(y, x, output_gradients=upstream)
        assert y.dtype == x.dtype, name
        assert grad.dtype == x.dtype, name
        np.testing.assert_array_equal(y.numpy(), activations.get(name)(x).numpy())
        np.testing.assert_array_equal(
            grad.numpy(), (UPSTREAM.astype(numpy_dtype) * numpy_dtype(slope)).astype(numpy_dtype)
        )


def test_integer_and_bool_inputs_raise_type_error():
    values = [
        np.arange(4, dtype="int32"),
        np.arange(4, dtype="int64"),
        np.array([True, False]),
        tf.constant([1, 2], dtype="int8"),
        [1, 2, 3],
    ]
    functions = [
        keras_linbp.linear_backprop("tanh"),
        keras_linbp.straight_through("sign"),
        activations.linbp_relu,
    ]
    for value, fn in itertools.product(values, functions):
        with pytest.raises(TypeError, match="floating") as info:
            fn(value)
        assert "got dtype" in str(info.value)


def test_symbolic_input_raises_a_clear_type_error():
    with pytest.raises(TypeError, match="LinearBackprop"):
        activations.linbp_tanh(keras.Input((3,)))


def test_unknown_name_raises_value_error_listing_valid_names():
    for make in (keras_linbp.linear_backprop, keras_linbp.straight_through):
        with pytest.raises(ValueError) as info:
            make("sigmoidd")
        assert "'sigmoidd'" in str(info.value)
        assert "hard_tanh" in str(info.value) and "sign" in str(info.value)


def test_returned_function_describes_itself():
    fn = keras_linbp.linear_backprop("tanh", slope=0.25)
    assert fn.forward is keras.activations.tanh
    assert fn.slope == 0.25
    assert "tanh" in fn.__name__
    ste = keras_linbp.straight_through("sign", clip=2)
    assert ste.forward is activations.sign and ste.clip == 2.0


def test_backward_of_linear_rule_does_not_use_the_forward_input():
    # The linear rule's gradient needs no forward tensor: the backward graph
    # of `sum(upstream * f(W x))` w.r.t. W contains no op of `f`'s derivative.
    w = tf.Variable(RNG.normal(size=(4, 4)).astype("float32"))
    x = tf.constant(RNG.normal(size=(2, 4)).astype("float32"))
    fn = keras_linbp.linear_backprop("tanh")

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            y = fn(tf.matmul(x, w))
        return tape.gradient(y, w)

    graph = gradient.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    assert "TanhGrad" not in op_types
    np.testing.assert_allclose(
        gradient().numpy(), x.numpy().T @ np.ones((2, 4), "float32"), rtol=1e-6
    )


def test_eager_linear_rule_keeps_no_reference_to_the_activation_input():
    # Eager memory: after the forward pass, only the clipped rule (which
    # needs `a` for its mask) keeps the pre-activation tensor alive.
    import weakref

    x = tf.ones((3,))
    for fn, keeps_input in (
        (keras_linbp.linear_backprop("tanh"), False),
        (keras_linbp.linear_backprop("tanh", slope=0.5), False),
        (keras_linbp.straight_through("tanh"), True),
    ):
        with tf.GradientTape() as tape:
            tape.watch(x)
            a = x * 2.0
            a_ref = weakref.ref(a)
            y = fn(a)
            del a  # EagerTensors are freed by reference counting.
            assert (a_ref() is not None) == keeps_input, fn.__name__
        assert tape.gradient(y, x) is not None


@pytest.mark.parametrize("mode", MODES)
def test_variables_read_by_the_activation_keep_their_ordinary_gradient(mode):
    # A callable with its own parameter: f(a) = scale * tanh(a). The rule
    # replaces d/da only; d/d(scale) stays sum(upstream * tanh(a)).
    scale = tf.Variable(1.5)

    def scaled_tanh(a):
        return scale * tf.tanh(a)

    fn = keras_linbp.linear_backprop(scaled_tanh, slope=2.0)

    def gradients(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, [x, scale], output_gradients=upstream)

    if mode != "eager":
        gradients = tf.function(gradients, jit_compile=mode == "jit_compile")
    grad_x, grad_scale = gradients(tf.constant(X), tf.constant(UPSTREAM))
    np.testing.assert_array_equal(grad_x.numpy(), 2.0 * UPSTREAM)
    np.testing.assert_allclose(
        grad_scale.numpy(), np.sum(UPSTREAM * np.tanh(X.astype("float64"))), rtol=1e-5
    )


def test_loss_on_a_linear_sigmoid_output_still_uses_the_linear_gradient():
    # Keras losses use a sigmoid output's attached logits when present;
    # that shortcut would bypass the custom gradient.
    logits = tf.constant([[-3.0, 0.5, 4.0]])
    targets = tf.constant([[1.0, 0.0, 1.0]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        probabilities = activations.linbp_sigmoid(logits)
        loss = keras.losses.binary_crossentropy(targets, probabilities)
    p = 1.0 / (1.0 + np.exp(-logits.numpy().astype("float64")))
    # d loss / d p (mean over 3 units), passed through unchanged.
    expected = (-(targets.numpy() / p) + (1.0 - targets.numpy()) / (1.0 - p)) / 3.0
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(), expected, rtol=1e-4)


def test_each_rule_function_has_one_home_that_takes_names_and_callables():
    # `keras_linbp.ops` is the only implementation; the package and the
    # table module re-export the same objects, and names resolve through
    # the table (errors included).
    assert keras_linbp.linear_backprop is activations.linear_backprop is keras_linbp.ops.linear_backprop
    assert keras_linbp.straight_through is activations.straight_through is keras_linbp.ops.straight_through
    assert keras_linbp.ops.linear_backprop("tanh").forward is keras.activations.tanh
    assert keras_linbp.ops.linear_backprop("swish").forward is keras.activations.silu
    assert keras_linbp.ops.straight_through("sign").forward is activations.sign
    with pytest.raises(ValueError, match="Unknown activation 'mish'.*softsign"):
        keras_linbp.ops.linear_backprop("mish")
    with pytest.raises(TypeError, match="name or a callable"):
        keras_linbp.ops.straight_through(None)

    _, grad = _gradient(keras_linbp.ops.linear_backprop(keras.activations.sigmoid, slope=0.5), X, UPSTREAM, "eager")
    np.testing.assert_array_equal(grad, np.float32(0.5) * UPSTREAM)
    y, grad = _gradient(keras_linbp.ops.straight_through(activations.sign, clip=0.5), X, UPSTREAM, "eager")
    np.testing.assert_array_equal(y, np.where(X >= 0, 1.0, -1.0).astype("float32"))
    np.testing.assert_array_equal(grad, np.where(np.abs(X) <= 0.5, UPSTREAM, 0.0))
