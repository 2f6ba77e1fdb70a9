"""The table of activations keras_linbp supports, and the `linbp_*` functions.

`ACTIVATIONS` is the single table the rest of the package reads: for every
name it gives the forward function (Keras's own where Keras has one, so
outputs equal `keras.activations.get(name)` exactly), how the unit saturates,
and the largest value of its local derivative `|f'(a)|` (used by the
saturation callbacks to decide when a bounded unit counts as saturated).

Saturation kinds:

- `"bounded"`: the output is bounded on both sides and `f'(a) -> 0` as
  `|a|` grows (sigmoid, tanh, softsign, hard_sigmoid, hard_tanh).
- `"rectifier"`: one side passes through, the other is flat or near flat
  (relu, relu6, leaky_relu, elu, selu, gelu, silu, softplus, hard_silu):
  a unit whose `f'(a) == 0` is *dead*.
- `"binary"`: a step function (sign): `f'(a) = 0` almost everywhere; a
  clipped straight-through estimator blocks the gradient where `|a| > 1`.
- `"linear"`: the identity.

For every NAME in the table, `linbp_NAME(x)` computes the activation in the
forward pass and passes the gradient straight through in the backward pass
(`g <- g`). They are registered for Keras serialization under the package
`keras_linbp`, so a layer built with
`keras.layers.Dense(64, activation=keras_linbp.activations.linbp_tanh)`
survives `model.save("m.keras")` / `keras.saving.load_model(...)` once
`keras_linbp` is imported.

`linear_backprop(activation, slope)` and `straight_through(activation, clip)`
are the rule functions of `keras_linbp.ops`, re-exported here (the same
objects, also exported as `keras_linbp.linear_backprop` /
`keras_linbp.straight_through`). They accept a table name because this
module hands its `get` to `keras_linbp.ops` when it is imported
(`ops._use_activation_resolver`): the rules live below the table and never
import it.

Example:

>>> import keras, numpy as np
>>> from keras_linbp import activations
>>> activations.get_spec("swish").name, activations.get_spec("tanh").saturation
('silu', 'bounded')
>>> x = keras.ops.convert_to_tensor(np.array([-2.0, 0.0, 2.0], "float32"))
>>> y = activations.linbp_tanh(x)  # tanh forward, g <- g backward
>>> print(np.round(keras.ops.convert_to_numpy(y), 3))
[-0.964  0.     0.964]
>>> activations.find_spec(activations.linbp_tanh).name
'tanh'
"""

import dataclasses
from typing import Callable

import keras

from keras_linbp import _validation
from keras_linbp import ops
from keras_linbp import tables
from keras_linbp.ops import linear_backprop
from keras_linbp.ops import straight_through

__all__ = [
    "ACTIVATIONS",
    "ALIASES",
    "LINBP_FUNCTIONS",
    "SATURATION_KINDS",
    "ActivationSpec",
    "find_spec",
    "get",
    "get_spec",
    "linear_backprop",
    "sign",
    "straight_through",
    "valid_names",
    # linbp_* functions: one per table entry (and the swish alias).
    "linbp_elu",
    "linbp_gelu",
    "linbp_hard_sigmoid",
    "linbp_hard_silu",
    "linbp_hard_tanh",
    "linbp_leaky_relu",
    "linbp_linear",
    "linbp_relu",
    "linbp_relu6",
    "linbp_selu",
    "linbp_sigmoid",
    "linbp_sign",
    "linbp_silu",
    "linbp_softplus",
    "linbp_softsign",
    "linbp_swish",
    "linbp_tanh",
]

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
        if tables.is_keras_op(fn, spec.name):
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


# The rules of `ops` resolve table names with `get` (see the module docstring).
ops._use_activation_resolver(get)


# --- linbp_* functions: forward f, backward g <- g --------------------------

def _make_linbp_function(spec):
    # Built on first call, not at import: `import keras_linbp` must work on
    # every Keras backend, and calling a linbp_* function on one other than
    # TensorFlow raises the backend error of `ops.linear_backprop`.
    backward = None

    # A real `def` (not a lambda or partial) so Keras serializes it by its
    # registered name.
    def linbp_fn(x):
        nonlocal backward
        if backward is None:
            _validation.require_supported_backend(f"keras_linbp.activations.linbp_{spec.name}")
            backward = ops.linear_backprop(spec.forward)
        return backward(x)

    linbp_fn.__name__ = linbp_fn.__qualname__ = f"linbp_{spec.name}"
    linbp_fn.__doc__ = (
        f"`{spec.name}` in the forward pass; linear backprop (`g <- g`) in "
        f"the backward pass.\n\n    Usable as `activation=` of any Keras "
        f"layer; serializable as `keras_linbp>linbp_{spec.name}`.\n    "
    )
    linbp_fn.__module__ = __name__
    linbp_fn._linbp_activation = spec.name
    return keras.saving.register_keras_serializable(
        package="keras_linbp", name=linbp_fn.__name__
    )(linbp_fn)


linbp_sigmoid = _make_linbp_function(ACTIVATIONS["sigmoid"])
linbp_tanh = _make_linbp_function(ACTIVATIONS["tanh"])
linbp_softsign = _make_linbp_function(ACTIVATIONS["softsign"])
linbp_hard_sigmoid = _make_linbp_function(ACTIVATIONS["hard_sigmoid"])
linbp_hard_tanh = _make_linbp_function(ACTIVATIONS["hard_tanh"])
linbp_relu = _make_linbp_function(ACTIVATIONS["relu"])
linbp_relu6 = _make_linbp_function(ACTIVATIONS["relu6"])
linbp_leaky_relu = _make_linbp_function(ACTIVATIONS["leaky_relu"])
linbp_elu = _make_linbp_function(ACTIVATIONS["elu"])
linbp_selu = _make_linbp_function(ACTIVATIONS["selu"])
linbp_gelu = _make_linbp_function(ACTIVATIONS["gelu"])
linbp_silu = _make_linbp_function(ACTIVATIONS["silu"])
linbp_softplus = _make_linbp_function(ACTIVATIONS["softplus"])
linbp_hard_silu = _make_linbp_function(ACTIVATIONS["hard_silu"])
linbp_sign = _make_linbp_function(ACTIVATIONS["sign"])
linbp_linear = _make_linbp_function(ACTIVATIONS["linear"])
linbp_swish = linbp_silu

# name -> linbp_NAME, for every table entry.
LINBP_FUNCTIONS = {
    fn._linbp_activation: fn
    for fn in [
        linbp_sigmoid,
        linbp_tanh,
        linbp_softsign,
        linbp_hard_sigmoid,
        linbp_hard_tanh,
        linbp_relu,
        linbp_relu6,
        linbp_leaky_relu,
        linbp_elu,
        linbp_selu,
        linbp_gelu,
        linbp_silu,
        linbp_softplus,
        linbp_hard_silu,
        linbp_sign,
        linbp_linear,
    ]
}
