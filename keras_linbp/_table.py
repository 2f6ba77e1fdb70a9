"""The activation table: pure data at the bottom of the package.

`ACTIVATIONS` maps every name keras_linbp knows to its forward function
(Keras's own where Keras has one), how the unit saturates and `max |f'|`.
The rules (`keras_linbp.rules`) resolve table names here, and
`keras_linbp.activations` re-exports it beside the `linbp_*` functions:
the table sits below the rule functions, so no module hands a resolver to
another (0.3 did, through a global in `ops`).
"""

import dataclasses
from typing import Callable

import keras

__all__ = [
    "ACTIVATIONS",
    "ALIASES",
    "SATURATION_KINDS",
    "ActivationSpec",
    "find_spec",
    "get",
    "get_spec",
    "is_keras_op",
    "sign",
    "valid_names",
]


def is_keras_op(fn, name):
    """Whether `fn` is the `keras.ops` function `name` (`keras.ops.silu`,
    what keras-hub's Llama stores), which computes the activation of that
    name. Not `sign`: the table's sign is its own function, not numpy's."""
    return name != "sign" and fn is getattr(keras.ops, name, None)


SATURATION_KINDS = ("bounded", "rectifier", "binary", "linear")


def sign(x):
    """Binary sign: `+1` where `x >= 0`, else `-1` (so `sign(0) = +1`).

    This is the BinaryNet / Larq convention; the output is never 0. The
    output has the dtype of `x`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import activations
    >>> print(keras.ops.convert_to_numpy(activations.sign(np.array([-0.5, 0.0, 2.0], "float32"))))
    [-1.  1.  1.]
    """
    x = keras.ops.convert_to_tensor(x)
    one = keras.ops.ones_like(x)
    return keras.ops.where(x >= 0, one, -one)


@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    """One row of the activation table.

    Attributes:
        name: the table name (e.g. `"tanh"`).
        forward: the forward function `f`.
        saturation: one of `SATURATION_KINDS`.
        max_derivative: `max_a |f'(a)|` (`None` where unbounded or zero
            almost everywhere).
    """

    name: str
    forward: Callable
    saturation: str
    max_derivative: float | None


def _keras(name):
    return keras.activations.get(name)


ACTIVATIONS = {
    spec.name: spec
    for spec in [
        ActivationSpec("sigmoid", _keras("sigmoid"), "bounded", 0.25),
        ActivationSpec("tanh", _keras("tanh"), "bounded", 1.0),
        ActivationSpec("softsign", _keras("softsign"), "bounded", 1.0),
        ActivationSpec("hard_sigmoid", _keras("hard_sigmoid"), "bounded", 1.0 / 6.0),
        ActivationSpec("hard_tanh", _keras("hard_tanh"), "bounded", 1.0),
        ActivationSpec("relu", _keras("relu"), "rectifier", 1.0),
        ActivationSpec("relu6", _keras("relu6"), "rectifier", 1.0),
        ActivationSpec("leaky_relu", _keras("leaky_relu"), "rectifier", 1.0),
        ActivationSpec("elu", _keras("elu"), "rectifier", 1.0),
        ActivationSpec("selu", _keras("selu"), "rectifier", None),
        ActivationSpec("gelu", _keras("gelu"), "rectifier", None),
        ActivationSpec("silu", _keras("silu"), "rectifier", None),
        ActivationSpec("softplus", _keras("softplus"), "rectifier", 1.0),
        ActivationSpec("hard_silu", _keras("hard_silu"), "rectifier", None),
        ActivationSpec("sign", sign, "binary", None),
        ActivationSpec("linear", _keras("linear"), "linear", 1.0),
    ]
}

# Names Keras (or common usage) gives the same function.
ALIASES = {"swish": "silu", "hard_swish": "hard_silu", "identity": "linear"}


def valid_names():
    """All names `get_spec` accepts, sorted.

    Example:

    >>> from keras_linbp import activations
    >>> activations.valid_names()[:4]
    ['elu', 'gelu', 'hard_sigmoid', 'hard_silu']
    """
    return sorted(set(ACTIVATIONS) | set(ALIASES))


def get_spec(name):
    """Returns the `ActivationSpec` for a table name (or alias).

    Args:
        name: a table name (`"tanh"`) or an alias (`"swish"`).

    Returns:
        The `ActivationSpec`.

    Raises:
        ValueError: if `name` is not in the table; the message lists the
            valid names.
        TypeError: if `name` is not a str.

    Example:

    >>> from keras_linbp import activations
    >>> spec = activations.get_spec("sigmoid")
    >>> spec.saturation, spec.max_derivative
    ('bounded', 0.25)
    >>> activations.get_spec("mish")
    Traceback (most recent call last):
    ...
    ValueError: Unknown activation 'mish'. keras_linbp supports: elu, gelu, hard_sigmoid, hard_silu, hard_swish, hard_tanh, identity, leaky_relu, linear, relu, relu6, selu, sigmoid, sign, silu, softplus, softsign, swish, tanh.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"Expected an activation name (str), got {type(name).__name__}: {name!r}"
        )
    key = ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}. keras_linbp supports: "
            f"{', '.join(valid_names())}."
        )
    return ACTIVATIONS[key]


def find_spec(fn):
    """Returns the `ActivationSpec` whose forward function is `fn`, or None.

    Recognises Keras's own activation functions (`keras.activations.tanh`)
    and ops of the same names (`keras.ops.silu`), the table's `sign` and the
    `linbp_*` functions.

    Example:

    >>> import keras
    >>> from keras_linbp import activations
    >>> activations.find_spec(keras.activations.relu6).name
    'relu6'
    >>> activations.find_spec(keras.activations.mish) is None
    True
    """
    for spec in ACTIVATIONS.values():
        if fn is spec.forward:
            return spec
        # gelu's op only defaults to the tanh approximation, read from
        # each call.
        if is_keras_op(fn, spec.name):
            return spec
    name = getattr(fn, "_linbp_activation", None)
    return ACTIVATIONS.get(name) if name else None


def get(identifier):
    """Resolves an activation identifier to a forward function.

    Args:
        identifier: a table name (`"tanh"`), or any callable (a Keras
            activation function, a `linbp_*` function, your own function).

    Returns:
        The callable.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
        TypeError: for anything that is neither a name nor callable.

    Example:

    >>> import keras
    >>> from keras_linbp import activations
    >>> activations.get("swish") is keras.activations.silu
    True
    >>> activations.get(123)
    Traceback (most recent call last):
    ...
    TypeError: An activation must be a name or a callable; got int: 123
    """
    if isinstance(identifier, str):
        return get_spec(identifier).forward
    if callable(identifier):
        return identifier
    raise TypeError(
        "An activation must be a name or a callable; got "
        f"{type(identifier).__name__}: {identifier!r}"
    )
