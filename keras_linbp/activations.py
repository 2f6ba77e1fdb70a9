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

The table itself is pure data in `keras_linbp._table`, below the rules,
and re-exported here. `linear_backprop(activation, slope)` and
`straight_through(activation, clip)` are the rule functions of
`keras_linbp.ops`, re-exported here (the same objects, also exported as
`keras_linbp.linear_backprop` / `keras_linbp.straight_through`).

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

import keras

from keras_linbp import _validation
from keras_linbp import ops
from keras_linbp import rules
from keras_linbp._table import ACTIVATIONS
from keras_linbp._table import ALIASES
from keras_linbp._table import SATURATION_KINDS
from keras_linbp._table import ActivationSpec
from keras_linbp._table import find_spec
from keras_linbp._table import get
from keras_linbp._table import get_spec
from keras_linbp._table import sign
from keras_linbp._table import valid_names
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
    linbp_fn.backward_rule = rules.LinearRule(1.0)
    linbp_fn.forward = spec.forward
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
