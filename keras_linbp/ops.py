"""Backward rules as `tf.custom_gradient` wrappers around a forward function.

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

Both work in eager mode, inside `tf.function` and under XLA
(`jit_compile=True`), keep the dtype of their input (float16, bfloat16,
float32, float64) and reject integer or bool input with a `TypeError`.
The linear rule's backward closure references no forward tensor, so the
activation's input is not kept alive for the backward pass.
"""

import keras
import tensorflow as tf

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
        # A functional-model placeholder: `tf.custom_gradient` needs real
        # tensors, which only exist once a layer calls the function.
        raise TypeError(
            f"{what} got a symbolic `keras.Input`-style tensor. Use it as a "
            "layer's activation (`keras.layers.Dense(8, activation=fn)`, "
            "`keras.layers.Activation(fn)`) or use the layer "
            "`keras_linbp.layers.LinearBackprop(activation)`."
        )
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(
            f"{what} needs a floating-point input (float16, bfloat16, "
            f"float32 or float64); got dtype {x.dtype.name}. Cast the input, "
            "e.g. `keras.ops.cast(x, 'float32')`."
        )
    return x


def _apply_with_input_gradient(forward, x, args, kwargs, make_input_gradient):
    """`forward(x, *args, **kwargs)` with a custom gradient w.r.t. `x`.

    `make_input_gradient(a)` returns `grad(upstream)`, the gradient w.r.t.
    the activation input `a`. Variables the forward function reads (a
    callable with its own parameters, e.g. a learned slope) keep their
    ordinary gradient: the rule replaces only the derivative w.r.t. `a`.

    The result is a new tensor, so the `_keras_logits` that Keras attaches
    to sigmoid / softmax outputs is not carried over -- on purpose: a loss
    computed from those logits would bypass this gradient.
    """

    @tf.custom_gradient
    def _apply(a):
        with tf.GradientTape(watch_accessed_variables=True) as variable_tape:
            y = forward(a, *args, **kwargs)
        input_gradient = make_input_gradient(a)
        if not variable_tape.watched_variables():
            # The common case. Neither `y` nor the tape is captured, and the
            # linear rule's closure does not hold `a` either: no forward
            # tensor is kept alive for the backward pass.
            return y, input_gradient

        def grad_with_variables(upstream, variables=None):
            variable_grads = variable_tape.gradient(
                y, variables, output_gradients=upstream
            )
            return input_gradient(upstream), variable_grads

        return y, grad_with_variables

    return _apply(x)


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
        NotImplementedError: on a Keras backend other than TensorFlow.

    Example:

    >>> fn = keras_linbp.ops.linear_backprop(keras.activations.sigmoid)
    >>> x = tf.constant([-10.0, 0.0, 10.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = fn(x)
    >>> tape.gradient(y, x).numpy()
    array([1., 1., 1.], dtype=float32)
    """
    _validation.require_tensorflow_backend("keras_linbp.linear_backprop")
    forward = _check_activation(activation, "linear_backprop")
    slope = _validation.check_slope(slope)

    def linear_backprop_fn(x, *args, **kwargs):
        x = check_floating(x, f"linear_backprop({_name_of(forward)})")
        return _apply_with_input_gradient(forward, x, args, kwargs, make_input_gradient)

    def make_input_gradient(a):
        # `g <- slope * g`: `a` is not needed.
        def grad(upstream):
            if slope == 1.0:
                return upstream
            return upstream * tf.cast(slope, upstream.dtype)

        return grad

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
        NotImplementedError: on a Keras backend other than TensorFlow.

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
    _validation.require_tensorflow_backend("keras_linbp.straight_through")
    forward = _check_activation(activation, "straight_through")
    clip = _validation.check_clip(clip)

    def straight_through_fn(x, *args, **kwargs):
        x = check_floating(x, f"straight_through({_name_of(forward)})")
        return _apply_with_input_gradient(forward, x, args, kwargs, make_input_gradient)

    def make_input_gradient(a):
        def grad(upstream):
            if clip is None:
                return upstream
            # Computed here, not in the forward pass: inference never pays.
            passes = tf.abs(a) <= tf.cast(clip, a.dtype)
            return tf.where(passes, upstream, tf.zeros_like(upstream))

        return grad

    straight_through_fn.__name__ = f"straight_through_{_name_of(forward)}"
    straight_through_fn.forward = forward
    straight_through_fn.clip = clip
    return straight_through_fn
