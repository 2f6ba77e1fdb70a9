"""Backward rules: a forward function with a custom gradient w.r.t. its input.

- `linear_backprop(activation, slope=1.0)`: forward `f(a)`, backward
  `g <- slope * g` (the activation derivative is never computed).
- `straight_through(activation, clip=1.0)`: forward `f(a)`, backward the
  clipped straight-through estimator `g <- g * 1[|a| <= clip]` (BinaryNet,
  Larq's `ste_sign` default).
- `few_bit(activation, bits=2)`: forward `f(a)`, backward `g <- g * q(a)`,
  `q` the optimal `2^bits`-level piecewise-constant stand-in for `f'`
  (`keras_linbp.tables`); keeps a bit-packed `bits`-bit code per element.

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

import functools

import keras
import numpy as np

from keras_linbp import _backend
from keras_linbp import _validation
from keras_linbp import tables

__all__ = ["check_floating", "few_bit", "linear_backprop", "straight_through"]


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


@functools.lru_cache(maxsize=None)
def _few_bit_rule(table, params, bits):
    bounds, levels = tables.few_bit_table(table, bits, **dict(params))
    return _backend.FewBitRule(tuple(bounds), tuple(levels))


def _few_bit_function(forward, bits, table, params=None):
    """`forward` with the few-bit rule of `table` (a table name).

    `params` (a dict) fixes the table's activation parameters; by default
    each call reads them from its own arguments (`gelu(x,
    approximate=True)` uses the tanh approximation's table).
    """
    bits = _validation.check_int("bits", bits, minimum=0)
    if bits > tables.MAX_BITS:
        raise ValueError(f"`bits` must be an int from 0 to {tables.MAX_BITS}; got {bits}.")
    fixed = None if params is None else tuple(sorted(params.items()))
    default_rule = _few_bit_rule(table, fixed or tables.table_params(table, forward), bits)
    label = f"few_bit({_name_of(forward)})"

    def few_bit_fn(x, *args, **kwargs):
        x = check_floating(x, label)
        call_params = fixed if fixed is not None else tables.table_params(table, forward, args, kwargs)
        rule = _few_bit_rule(table, call_params, bits)
        return _backend.apply_rule(forward, x, args, kwargs, rule)

    few_bit_fn.__name__ = f"few_bit_{_name_of(forward)}"
    few_bit_fn.forward = forward
    few_bit_fn.bits = bits
    few_bit_fn.table = table
    few_bit_fn.bounds = np.array(default_rule.bounds)
    few_bit_fn.levels = np.array(default_rule.levels)
    return few_bit_fn


def few_bit(activation, bits=2):
    """Returns `activation` with the few-bit backward rule.

    Forward: `activation(a)`, unchanged. Backward: `upstream * q(a)`, where
    `q` is piecewise constant with `2^bits` levels: `q(a) = levels[code]`,
    `code` = the number of `bounds` `<= a`, the table of
    `keras_linbp.tables.few_bit_table` (optimal in mean square under
    N(0, 1)). Only the codes are kept for the backward pass, bit-packed
    into uint8: `ceil(N * slot / 8)` bytes for N elements with `slot` =
    1, 2, 4, 4 bits for `bits` = 1, 2, 3, 4 (`tables.bytes_per_element`).
    `bits=0` keeps nothing: linear backprop with slope `E[f'(x)]`, x ~
    N(0, 1). Step-wise activations (relu, leaky_relu from 1 bit; relu6,
    hard_sigmoid, hard_tanh from 2) get their exact derivative. The
    upstream dtype is kept (float16 / bfloat16 gradients stay so). Novikov
    et al., "Few-Bit Backward", ICML 2023.

    Args:
        activation: a table name (`"gelu"`, `"silu"`, an alias such as
            `"swish"`; see `keras_linbp.tables.table_names`) or one of
            Keras's activation functions of those names.
        bits: an int from 0 to 4 (default 2).

    Returns:
        A callable `fn(x, *args, **kwargs)`; extra arguments go to the
        forward function, and gelu's `approximate`, leaky_relu's
        `negative_slope` and elu's `alpha` choose the table. Its attributes
        `forward`, `bits`, `bounds` and `levels` (numpy arrays, for the
        activation's default parameters) describe it.

    Raises:
        ValueError: for an activation with no table (a custom callable,
            softmax; the message names it), or `bits` outside 0-4.
        TypeError: for a `bits` that is not an int.
        NotImplementedError: on a Keras backend other than TensorFlow,
            JAX or PyTorch.

    Example:

    >>> import keras, numpy as np
    >>> import keras_linbp
    >>> fn = keras_linbp.few_bit("gelu", bits=1)
    >>> fn.bounds, np.round(fn.levels, 3)
    (array([0.]), array([0.091, 0.909]))
    >>> x = keras.ops.convert_to_tensor(np.array([-3.0, -0.5, 0.5, 3.0], "float32"))
    >>> from keras_linbp import _backend
    >>> print(np.round(_backend.elementwise_derivative(fn, x), 3))
    [0.091 0.091 0.909 0.909]
    """
    forward = _forward_of(activation, "keras_linbp.few_bit")
    try:
        table = tables.table_name(forward)
    except ValueError:
        if not isinstance(activation, str):
            raise
        table = tables.table_name(activation)
    return _few_bit_function(forward, bits, table)
