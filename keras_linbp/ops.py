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

Each takes a table name (`"tanh"`, `"sign"`, an alias such as `"swish"`)
or any callable, resolved by the activation table (`keras_linbp._table`,
below this module), and returns a `keras_linbp.rules.RuleFunction`: the
activation with the rule's backward, carrying the rule as
`fn.backward_rule` (sites treat it as fixed in every mode, the summary
shows it) and saved by `model.save` as its config.

Both rules work on every Keras backend (TensorFlow: eager, `tf.function`,
XLA; JAX: eager and `jax.jit`; PyTorch: eager and `torch.compile`) through
the one primitive `keras_linbp._backend.apply_rule`, keep the dtype of their
input (float16, bfloat16, float32, float64) and reject integer or bool
input with a `TypeError`. The linear rule keeps no forward tensor for the
backward pass, so the activation's input is not kept alive; the
straight-through rule keeps a boolean mask.
"""

import keras

from keras_linbp import _table
from keras_linbp import _validation
from keras_linbp import rules
from keras_linbp import tables
from keras_linbp.rules import check_floating

__all__ = ["check_floating", "few_bit", "from_output", "linear_backprop", "straight_through"]


def _rule_function(activation, rule, entry_point):
    """`activation` (a table name or a callable) with `rule`'s backward:
    the backend is checked first, then the name resolved."""
    _validation.require_supported_backend(entry_point)
    forward = _table.get(activation)
    return rules.RuleFunction(forward, rule.for_forward(forward))


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
    rule = rules.LinearRule(_validation.check_slope(slope))
    return _rule_function(activation, rule, "keras_linbp.linear_backprop")


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
    rule = rules.StraightThroughRule(_validation.check_clip(clip))
    return _rule_function(activation, rule, "keras_linbp.straight_through")


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
    _validation.require_supported_backend("keras_linbp.few_bit")
    rule = rules.FewBitRule(bits)
    if isinstance(activation, str) and activation not in _table.valid_names():
        # A name with no table (`"mish"`): the few-bit error, as for
        # `few_bit(keras.activations.mish)`, not the table's list of names.
        tables.table_name(activation)
    return _rule_function(activation, rule, "keras_linbp.few_bit")


def from_output(activation):
    """Returns `activation` with its exact gradient, recovered from its output.

    Forward: `activation(a)`, unchanged. Backward: `upstream * f'(a)`,
    exact up to float32 rounding, with `f'` computed from the output `y`
    (the tensor the next layer keeps anyway, so it costs no memory of its
    own) and, for activations that are not monotone (gelu, silu/swish,
    mish, hard_silu), one branch bit per element, packed 8 to a byte: the
    input `a` is not kept. Tempo's in-place GELU (Andoorveedu et al.,
    NeurIPS 2022) for every backend. Float16 / bfloat16 derivatives are
    computed in float32.

    Args:
        activation: a name (`"gelu"`, `"mish"`, `"tanh"`, ...) or Keras's
            activation function of that name; the names are
            `keras_linbp.rules.FROM_OUTPUT_NAMES`.

    Returns:
        A `keras_linbp.rules.RuleFunction` (`fn.backward_rule` is its
        `FromOutputRule`).

    Raises:
        ValueError: for an activation it cannot invert (softmax, a custom
            callable; the message names it) or an unknown name.
        NotImplementedError: on a Keras backend other than TensorFlow,
            JAX or PyTorch.

    Example:

    >>> import keras, numpy as np
    >>> import keras_linbp
    >>> fn = keras_linbp.from_output("gelu")
    >>> x = keras.ops.convert_to_tensor(np.array([-3.0, -1.0, 0.5, 2.0], "float32"))
    >>> from keras_linbp import _backend
    >>> exact = _backend.elementwise_derivative(keras.activations.gelu, x)
    >>> bool(np.allclose(_backend.elementwise_derivative(fn, x), exact, atol=1e-4))
    True
    """
    _validation.require_supported_backend("keras_linbp.from_output")
    if isinstance(activation, str) and activation not in _table.valid_names():
        # Keras-only names the rule inverts (`"mish"`); an unknown name
        # gets Keras's error.
        activation = keras.activations.get(activation)
    return _rule_function(activation, rules.FromOutputRule(), "keras_linbp.from_output")
