"""Backward rules as `tf.custom_gradient` wrappers around a forward function.

- `linear_backprop(activation, slope=1.0)`: forward `f(a)`, backward
  `g <- slope * g` (the activation derivative is never computed).
- `straight_through(activation, clip=1.0)`: forward `f(a)`, backward the
  clipped straight-through estimator `g <- g * 1[|a| <= clip]` (BinaryNet,
  Larq's `ste_sign` default).

Both work in eager mode, inside `tf.function` and under XLA
(`jit_compile=True`), keep the dtype of their input (float16, bfloat16,
float32, float64) and reject integer or bool input with a `TypeError`.
The linear rule's backward closure references no forward tensor, so the
activation's input is not kept alive for the backward pass.
"""

import tensorflow as tf


def _resolve(activation):
    # Local import: `activations` builds its `linbp_*` functions from this
    # module, so importing it at module level would be circular.
    from keras_linbp import activations

    return activations.get(activation)


def _name_of(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def check_floating(x, what="linear backprop"):
    """Converts `x` to a tensor and raises `TypeError` unless it is floating."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(
            f"{what} needs a floating-point input (float16, bfloat16, "
            f"float32 or float64); got dtype {x.dtype.name}. Cast the input, "
            "e.g. `keras.ops.cast(x, 'float32')`."
        )
    return x


def linear_backprop(activation, slope=1.0):
    """Returns `activation` with the linear-backprop gradient.

    Forward: `activation(a)`, unchanged. Backward: `slope * upstream`,
    whatever the activation's derivative would be (Yazdani 2018, "Linear
    Backprop in non-linear networks").

    Args:
        activation: a name from `keras_linbp.activations.ACTIVATIONS`
            (e.g. `"sigmoid"`), a Keras activation function, or any callable
            mapping a tensor to a tensor of the same shape.
        slope: the constant the upstream gradient is multiplied by
            (default 1.0: `g <- g`).

    Returns:
        A callable `fn(x, *args, **kwargs)`; extra arguments are passed to
        the forward function (e.g. a Softmax layer's `mask`).

    Example:

    >>> fn = keras_linbp.linear_backprop("sigmoid")
    >>> x = tf.constant([-10.0, 0.0, 10.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = fn(x)
    >>> tape.gradient(y, x).numpy()
    array([1., 1., 1.], dtype=float32)
    """
    forward = _resolve(activation)
    slope = float(slope)

    def linear_backprop_fn(x, *args, **kwargs):
        x = check_floating(x, f"linear_backprop({_name_of(forward)})")

        @tf.custom_gradient
        def _apply(a):
            def grad(upstream):
                if slope == 1.0:
                    return upstream
                return upstream * tf.cast(slope, upstream.dtype)

            return forward(a, *args, **kwargs), grad

        return _apply(x)

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
        activation: a table name, a Keras activation function or a callable.
        clip: the clipping threshold (a positive number or None).

    Returns:
        A callable `fn(x)`.
    """
    forward = _resolve(activation)
    if clip is not None:
        clip = float(clip)
        if clip <= 0:
            raise ValueError(f"`clip` must be positive or None, got {clip}.")

    def straight_through_fn(x, *args, **kwargs):
        x = check_floating(x, f"straight_through({_name_of(forward)})")

        @tf.custom_gradient
        def _apply(a):
            def grad(upstream):
                if clip is None:
                    return upstream
                passes = tf.abs(a) <= tf.cast(clip, a.dtype)
                return tf.where(passes, upstream, tf.zeros_like(upstream))

            return forward(a, *args, **kwargs), grad

        return _apply(x)

    straight_through_fn.__name__ = f"straight_through_{_name_of(forward)}"
    straight_through_fn.forward = forward
    straight_through_fn.clip = clip
    return straight_through_fn
