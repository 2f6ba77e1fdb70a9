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

import keras
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
        activation: a table name, a Keras activation function or a callable.
        clip: the clipping threshold (a positive number or None).

    Returns:
        A callable `fn(x, *args, **kwargs)`; extra arguments are passed to
        the forward function.

    Example:

    >>> fn = keras_linbp.straight_through("sign")
    >>> x = tf.constant([-2.0, -0.5, 0.0, 1.0, 3.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = fn(x)
    >>> y.numpy(), tape.gradient(y, x).numpy()
    (array([-1., -1.,  1.,  1.,  1.], dtype=float32),
     array([0., 1., 1., 1., 0.], dtype=float32))
    """
    forward = _resolve(activation)
    if clip is not None:
        clip = float(clip)
        if clip <= 0:
            raise ValueError(f"`clip` must be positive or None, got {clip}.")

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
