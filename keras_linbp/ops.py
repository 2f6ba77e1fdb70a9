"""Backward rules: a forward function with a custom gradient w.r.t. its input.

- `linear_backprop(activation, slope=1.0)`: forward `f(a)`, backward
  `g <- slope * g` (the activation derivative is never computed).
- `straight_through(activation, clip=1.0)`: forward `f(a)`, backward the
  clipped straight-through estimator `g <- g * 1[|a| <= clip]` (BinaryNet,
  Larq's `ste_sign` default).

This module is the only home of each rule function. `keras_linbp.linear_backprop`,
`keras_linbp.activations.linear_backprop` and `keras_linbp.ops.linear_backprop`
are one object (likewise `straight_through`).

Both take a table name (`"tanh"`, `"sign"`, an alias such as `"swish"`) or
any callable. Names are resolved by the activation table, which lives one
level up in `keras_linbp.activations`; this module must not import it. So
the table hands its resolver down instead: when `keras_linbp.activations` is
imported it calls `_use_activation_resolver(activations.get)`, once. That
always happens before a rule can be called, because importing
`keras_linbp.ops` imports the package `keras_linbp`, whose `__init__`
imports `activations`. Until then (never, in practice) only callables are
accepted. The resolver also raises the errors for a bad activation: a
`ValueError` naming the valid table names for an unknown name, a
`TypeError` for anything that is neither a name nor callable.

Both rules work on every Keras backend (TensorFlow: eager, `tf.function`,
XLA; JAX: eager and `jax.jit`; PyTorch: eager and `torch.compile`) through
the one primitive `keras_linbp._backend.apply_rule`, keep the dtype of their
input (float16, bfloat16, float32, float64) and reject integer or bool
input with a `TypeError`. The linear rule keeps no forward tensor for the
backward pass, so the activation's input is not kept alive; the
straight-through rule keeps a boolean mask.
"""

import keras

from keras_linbp import _backend
from keras_linbp import _validation

__all__ = ["check_floating", "linear_backprop", "straight_through"]


def _callables_only(activation):
    """The resolver in force before the table has installed its own."""
    if callable(activation):
        return activation
    raise TypeError(
        f"An activation must be a callable (table names are resolved once "
        f"`keras_linbp.activations` is imported); got "
        f"{type(activation).__name__}: {activation!r}"
    )


# activation identifier -> forward function; see the module docstring.
_resolve_activation = _callables_only


def _use_activation_resolver(resolve):
    """Makes the rules resolve their `activation` argument with `resolve`.

    Called once by `keras_linbp.activations` with its `get` (table name or
    callable in, forward function out); not needed in user code.

    Args:
        resolve: a callable mapping an activation identifier to a function.
    """
    global _resolve_activation
    _resolve_activation = resolve


def _name_of(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def check_floating(x, what="linear backprop"):
    """Converts `x` to a tensor and raises `TypeError` unless it is floating.

    Args:
        x: a tensor, array or `keras.Variable`.
        what: the function checking, for the error message.

    Returns:
        `x` as a backend tensor (a variable is read first).

    Raises:
        TypeError: for a symbolic `keras.Input`-style tensor, or an integer,
            bool or complex dtype.

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import ops
    >>> x = ops.check_floating(np.array([1.0, 2.0], "float32"))
    >>> keras.backend.standardize_dtype(x.dtype)
    'float32'
    >>> ops.check_floating(np.array([1, 2], "int32"))
    Traceback (most recent call last):
    ...
    TypeError: linear backprop needs a floating-point input (float16, bfloat16, float32 or float64); got dtype int32. Cast the input, e.g. `keras.ops.cast(x, 'float32')`.
    """
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


def _forward_of(activation, entry_point):
    """The forward function of a rule: the backend is checked first, then
    `activation` resolved (a table name or a callable)."""
    _validation.require_supported_backend(entry_point)
    return _resolve_activation(activation)


def _with_rule(rule_name, forward, rule, **described):
    """`forward` with `rule`'s input gradient, named `<rule_name>_<forward>`.

    Its attributes are `forward` and `described` (`slope=`, `clip=`): the
    callbacks read them to find the plain function inside a rule function.
    """
    label = f"{rule_name}({_name_of(forward)})"

    def rule_fn(x, *args, **kwargs):
        x = check_floating(x, label)
        return _backend.apply_rule(forward, x, args, kwargs, rule)

    rule_fn.__name__ = f"{rule_name}_{_name_of(forward)}"
    rule_fn.forward = forward
    for attribute, value in described.items():
        setattr(rule_fn, attribute, value)
    return rule_fn


def linear_backprop(activation, slope=1.0):
    """Returns `activation` with the linear-backprop gradient.

    Forward: `activation(a)`, unchanged. Backward: `slope * upstream`,
    whatever the activation's derivative would be (Yazdani 2018, "Linear
    Backprop in non-linear networks"). Exported as `keras_linbp.linear_backprop`
    and `keras_linbp.activations.linear_backprop`.

    Args:
        activation: a name from `keras_linbp.activations.ACTIVATIONS` (e.g.
            `"sigmoid"`), a Keras activation function, or any callable
            mapping a tensor to a tensor of the same shape.
        slope: the finite real number the upstream gradient is multiplied
            by (default 1.0: `g <- g`).

    Returns:
        A callable `fn(x, *args, **kwargs)`; extra arguments are passed to
        the forward function (e.g. a Softmax layer's `mask`). Its attributes
        `forward` and `slope` describe it.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones),
            or a NaN / infinite `slope`.
        TypeError: for an `activation` that is neither a name nor callable,
            or a `slope` that is not a real number.
        NotImplementedError: on a Keras backend other than TensorFlow,
            JAX or PyTorch.

    Example:

    The forward pass is the plain activation:

    >>> import keras, numpy as np
    >>> import keras_linbp
    >>> fn = keras_linbp.ops.linear_backprop("tanh", slope=0.5)
    >>> x = keras.ops.convert_to_tensor(np.array([-3.0, 0.0, 3.0], "float32"))
    >>> print(np.round(keras.ops.convert_to_numpy(fn(x)), 3))
    [-0.995  0.     0.995]
    >>> fn.forward is keras.activations.tanh, fn.slope
    (True, 0.5)

    The gradient is `slope` wherever `a` is, though `tanh'(±3) = 0.01`
    (`elementwise_derivative` differentiates with the backend's autodiff):

    >>> from keras_linbp import _backend
    >>> print(_backend.elementwise_derivative(fn, x))
    [0.5 0.5 0.5]
    """
    forward = _forward_of(activation, "keras_linbp.linear_backprop")
    slope = _validation.check_slope(slope)
    return _with_rule("linear_backprop", forward, _backend.LinearRule(slope), slope=slope)


def straight_through(activation, clip=1.0):
    """Returns `activation` with the clipped straight-through gradient.

    Forward: `activation(a)`. Backward: `upstream` where `|a| <= clip`,
    else 0 -- the rule of BinaryNet (Courbariaux et al. 2016) and of Larq's
    `ste_sign(x, clip_value=1.0)`. `clip=None` passes every gradient
    (then it equals `linear_backprop(activation)`). Exported as
    `keras_linbp.straight_through` and `keras_linbp.activations.straight_through`.

    Args:
        activation: a table name (e.g. `"sign"`), a Keras activation
            function or any callable.
        clip: the clipping threshold (a positive finite number, or None).

    Returns:
        A callable `fn(x, *args, **kwargs)`; extra arguments are passed to
        the forward function. Its attributes `forward` and `clip` describe
        it.

    Raises:
        ValueError: for an unknown name, or a `clip` that is not positive
            and finite.
        TypeError: for an `activation` that is neither a name nor callable,
            or a `clip` that is neither a number nor None.
        NotImplementedError: on a Keras backend other than TensorFlow,
            JAX or PyTorch.

    Example:

    >>> import keras, numpy as np
    >>> import keras_linbp
    >>> fn = keras_linbp.ops.straight_through("sign")
    >>> x = keras.ops.convert_to_tensor(np.array([-2.0, -0.5, 0.0, 1.0, 3.0], "float32"))
    >>> print(keras.ops.convert_to_numpy(fn(x)))
    [-1. -1.  1.  1.  1.]
    >>> from keras_linbp import _backend
    >>> print(_backend.elementwise_derivative(fn, x))  # 0 where |a| > clip
    [0. 1. 1. 1. 0.]
    >>> keras_linbp.ops.straight_through("sign", clip=None).clip is None
    True
    """
    forward = _forward_of(activation, "keras_linbp.straight_through")
    clip = _validation.check_clip(clip)
    return _with_rule("straight_through", forward, _backend.StraightThroughRule(clip), clip=clip)
