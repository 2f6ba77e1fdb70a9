"""Backward rules: a forward function with a custom gradient w.r.t. its input.

- `linear_backprop(activation, slope=1.0)`: forward `f(a)`, backward
  `g <- slope * g` (the activation derivative is never computed).
- `straight_through(activation, clip=1.0)`: forward `f(a)`, backward the
  clipped straight-through estimator `g <- g * 1[|a| <= clip]` (BinaryNet,
  Larq's `ste_sign` default).

This is the rule module: callables in, callables out. It knows no table
name and imports nothing from the package but the leaf `_validation`
module; `keras_linbp.linear_backprop("tanh")` and
`keras_linbp.straight_through("sign")` (defined in
`keras_linbp.activations`) resolve table names and then call these.

Both work on every Keras backend (TensorFlow: eager, `tf.function`, XLA;
JAX: eager and `jax.jit`; PyTorch: eager and `torch.compile`) through the
one primitive of `keras_linbp._backend`, keep the dtype of their input
(float16, bfloat16, float32, float64) and reject integer or bool input
with a `TypeError`. The linear rule keeps no forward tensor for the
backward pass, so the activation's input is not kept alive; the
straight-through rule keeps a boolean mask.
"""

import keras

from keras_linbp import _backend
from keras_linbp import _validation

__all__ = ["check_floating", "linear_backprop", "straight_through"]


def _check_activation(activation, what):
    """The forward function, which must be callable (no names here)."""
    if callable(activation):
        return activation
    if isinstance(activation, str):
        raise TypeError(
            f"keras_linbp.ops.{what} takes a callable, got the name "
            f"{activation!r}. Table names are resolved by "
            f"`keras_linbp.{what}({activation!r})` (also "
            f"`keras_linbp.activations.{what}`), or pass "
            f"`keras_linbp.activations.get({activation!r})`."
        )
    raise TypeError(
        f"`activation` of {what} must be a callable (a Keras activation "
        f"function or your own); got {activation!r} ({type(activation).__name__})."
    )


def _name_of(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def check_floating(x, what="linear backprop"):
    """Converts `x` to a tensor and raises `TypeError` unless it is floating."""
    if keras.backend.is_keras_tensor(x):
        # A functional-model placeholder: a custom gradient needs real
        # tensors, which only exist once a layer calls the function.
        raise TypeError(
            f"{what} got a symbolic `keras.Input`-style tensor. Use it as a "
            "layer's activation (`keras.layers.Dense(8, activation=fn)`, "
            "`keras.layers.Activation(fn)`) or use the layer "
            "`keras_linbp.layers.LinearBackprop(activation)`."
        )
    if isinstance(x, keras.Variable):
        # Read the variable here, outside the rule's forward: a variable
        # read inside it would count as a parameter of the activation.
        x = x.value
    x = keras.ops.convert_to_tensor(x)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(x, tf.Variable):
            x = tf.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise TypeError(
            f"{what} needs a floating-point input (float16, bfloat16, "
            f"float32 or float64); got dtype {dtype}. Cast the input, "
            "e.g. `keras.ops.cast(x, 'float32')`."
        )
    return x


def linear_backprop(activation, slope=1.0):
    """Returns `activation` with the linear-backprop gradient.

    Forward: `activation(a)`, unchanged. Backward: `slope * upstream`,
    whatever the activation's derivative would be (Yazdani 2018, "Linear
    Backprop in non-linear networks").

    Args:
        activation: a Keras activation function, or any callable mapping a
            tensor to a tensor of the same shape. (Table names such as
            `"sigmoid"` are accepted by `keras_linbp.linear_backprop`.)
        slope: the finite real number the upstream gradient is multiplied
            by (default 1.0: `g <- g`).

    Returns:
        A callable `fn(x, *args, **kwargs)`; extra arguments are passed to
        the forward function (e.g. a Softmax layer's `mask`). Its attributes
        `forward` and `slope` describe it.

    Raises:
        TypeError: if `activation` is not callable or `slope` is not a
            real number.
        ValueError: if `slope` is NaN or infinite.
        NotImplementedError: on a Keras backend other than TensorFlow,
            JAX or PyTorch.

    Example:

    >>> fn = keras_linbp.ops.linear_backprop(keras.activations.sigmoid)
    >>> x = tf.constant([-10.0, 0.0, 10.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = fn(x)
    >>> tape.gradient(y, x).numpy()
    array([1., 1., 1.], dtype=float32)
    """
    _validation.require_supported_backend("keras_linbp.ops.linear_backprop")
    forward = _check_activation(activation, "linear_backprop")
    slope = _validation.check_slope(slope)
    rule = _backend.LinearRule(slope)

    def linear_backprop_fn(x, *args, **kwargs):
        x = check_floating(x, f"linear_backprop({_name_of(forward)})")
        return _backend.apply_rule(forward, x, args, kwargs, rule)

    linear_backprop_fn.__name__ = f"linear_backprop_{_name_of(forward)}"
    linear_backprop_fn.forward = forward
    linear_backprop_fn.slope = slope
    return linear_backprop_fn


def straight_through(activation, clip=1.0):
    """Returns `activation` with the clipped straight-through gradient.

    Forward: `activation(a)`. Backward: `upstream` where `|a| <= clip`,
    else 0 -- the rule of BinaryNet (Courbariaux et al. 2016) and of Larq's
    `ste_sign(x, clip_value=1.0)`. `clip=None` passes every gradient
    (then it equals `linear_backprop(activation)`).

    Args:
        activation: a Keras activation function or any callable (table
            names such as `"sign"` are accepted by
            `keras_linbp.straight_through`).
        clip: the clipping threshold (a positive finite number, or None).

    Returns:
        A callable `fn(x, *args, **kwargs)`; extra arguments are passed to
        the forward function. Its attributes `forward` and `clip` describe
        it.

    Raises:
        TypeError: if `activation` is not callable or `clip` is not a
            number or None.
        ValueError: if `clip` is not positive and finite.
        NotImplementedError: on a Keras backend other than TensorFlow,
            JAX or PyTorch.

    Example:

    >>> fn = keras_linbp.ops.straight_through(keras_linbp.activations.sign)
    >>> x = tf.constant([-2.0, -0.5, 0.0, 1.0, 3.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = fn(x)
    >>> y.numpy(), tape.gradient(y, x).numpy()
    (array([-1., -1.,  1.,  1.,  1.], dtype=float32),
     array([0., 1., 1., 1., 0.], dtype=float32))
    """
    _validation.require_supported_backend("keras_linbp.ops.straight_through")
    forward = _check_activation(activation, "straight_through")
    clip = _validation.check_clip(clip)
    rule = _backend.StraightThroughRule(clip)

    def straight_through_fn(x, *args, **kwargs):
        x = check_floating(x, f"straight_through({_name_of(forward)})")
        return _backend.apply_rule(forward, x, args, kwargs, rule)

    straight_through_fn.__name__ = f"straight_through_{_name_of(forward)}"
    straight_through_fn.forward = forward
    straight_through_fn.clip = clip
    return straight_through_fn
