"""`f'(a)` of an activation `y = f(a)`, recovered from its output `y`.

The from-output rule (`keras_linbp.rules.from_output`) keeps `y` -- the
tensor the next layer keeps anyway -- instead of `a`, and computes the exact
derivative from it:

- monotone activations: `f'` is a function of `y` (sigmoid: `y (1 - y)`,
  tanh: `1 - y^2`, softplus: `1 - exp(-y)`, elu: `y + alpha` below 0, ...);
  the step-wise ones (relu, relu6, hard_sigmoid, hard_tanh, leaky_relu) read
  their slope off `y`'s value;
- non-monotone ones (gelu in both forms, silu, mish, hard_silu) have one
  minimum `(a*, y*)` and need one branch bit `b = (a >= a*)` per element
  (`branch_bits`): `f' = f'(f^-1_b(y))`, `f^-1_b` the inverse on branch `b`.

The inverse of a smooth non-monotone activation works in three regions
of `w = +-sqrt(y - y*)` (sign: the branch):

- near the minimum, `|w| <= 0.2`: `f' = w Q(w / 0.2)`, `Q` a degree-10
  polynomial fitted at import (float64, Chebyshev nodes, error < 1e-9).
  It is the form `f' ~ +-sqrt(2 f''(a*) (y - y*))` with its higher terms; it
  needs no `f(a)` of float32, whose rounding near the minimum would cost
  `sqrt(2 f'' eps)`. `y - y*` is formed with `y*` as two float32 halves, so
  the only error is `y`'s own rounding: ~1e-4 in `f'` for float32 `y` within
  a few ulps of `y*`, the float32 limit (`y` below `y*` by rounding: `f' = 0`);
- right branch beyond it: Newton on `f(a) = y` from `y^2 / f(y)` (`y` for
  `y <= 0`), `_RIGHT_STEPS` steps, `a` kept in the branch;
- left branch beyond it (`y -> 0-` as `a -> -inf`): Newton on
  `log(-f(a)) = log(-y)`, from the asymptote of each activation,
  `_LEFT_STEPS` steps. In log space the step is well scaled down to
  `-y = 1e-30`; below that (and `y == 0`) `|f'| < 1e-28` and `f' = 0`.

hard_silu is a parabola between its kinks: `f' = +-sqrt((2/3)(y + 3/8))`.

Arithmetic is float32 for float16 / bfloat16 / float32 `y` (float64 for
float64 `y`, with the same fit and step counts: ~1e-7); the result has that
dtype and the caller casts it to the upstream gradient's. Everything is `keras.ops`, so it runs on TensorFlow,
JAX and PyTorch, under `tf.function` and `jax.jit`.

Kinks (a value of `f'` at a point where `f` has none) follow Keras's
autodiff where `y` can tell: relu, relu6, hard_sigmoid take the flat side
(`f' = 0` at `a = 0, 6, +-3`), as all three backends do; elu takes `alpha`
at 0 (all backends); leaky_relu takes `negative_slope` at 0 (TensorFlow,
PyTorch; JAX gives 1); selu takes `scale * alpha` at 0 (JAX, PyTorch;
TensorFlow gives `scale`); hard_tanh takes 0 at `+-1`, as PyTorch (TF and
JAX give 1, which `y = +-1` cannot tell from the flat part); hard_silu takes
0 at -3 and 1 at 3 (all backends).

Example:

>>> import keras, numpy as np
>>> from keras_linbp import _from_output
>>> a = keras.ops.convert_to_tensor(np.array([-3.0, -0.5, 2.0], "float32"))
>>> y = keras.activations.gelu(a)
>>> d = _from_output.derivative_from_output("gelu", y, _from_output.branch_bits(a, "gelu"))
>>> print(np.round(keras.ops.convert_to_numpy(d), 4))
[-0.0119  0.1325  1.0852]
"""

import keras

from keras_linbp._from_output import monotone
from keras_linbp._from_output import smooth
from keras_linbp._from_output._common import _compute_dtype

__all__ = [
    "ALIASES",
    "DERIVATIVE_FROM_OUTPUT",
    "FromOutputSpec",
    "branch_bits",
    "derivative_from_output",
    "minimum",
    "names",
]

ops = keras.ops

# Keras's other names of the same functions (`keras_linbp._table.ALIASES`).
ALIASES = {"swish": "silu", "hard_swish": "hard_silu", "identity": "linear"}


class FromOutputSpec:
    """How one activation's `f'` is recovered from its output.

    Attributes:
        name: the activation's name (`"gelu"`).
        needs_branch: whether `derivative` needs the branch bit `a >= a*`.
        minimum: `(a*, y*)` as floats for the default parameters where
            `needs_branch`, else None (`minimum(name, **params)` for others).
        params: the activation's parameters and their defaults.
    """

    def __init__(self, name, formula, needs_branch=False, minimum=None, params=None):
        self.name = name
        self.needs_branch = needs_branch
        self.minimum = minimum
        self.params = dict(params or {})
        self._formula = formula

    def derivative(self, y, branch=None, **params):
        """`f'(a)` from `y = f(a)`, float32 (float64 for float64 `y`).

        Args:
            y: the activation's output, any float dtype.
            branch: the boolean `a >= a*` where `needs_branch`, else None.
            **params: the activation's parameters (`self.params`' names).
        """
        y = ops.convert_to_tensor(y)
        y = ops.cast(y, _compute_dtype(y))
        if self.needs_branch:
            branch = ops.cast(branch, "bool")  # packed bits may come back as uint8
        return self._formula(y, branch, **params)

    def __repr__(self):
        return f"FromOutputSpec({self.name!r}, needs_branch={self.needs_branch}, params={self.params})"


# --- dtype ------------------------------------------------------------------------


# --- the table -------------------------------------------------------------------------

DERIVATIVE_FROM_OUTPUT = {
    spec.name: spec
    for spec in [
        FromOutputSpec("sigmoid", monotone.sigmoid),
        FromOutputSpec("tanh", monotone.tanh),
        FromOutputSpec("softsign", monotone.softsign),
        FromOutputSpec("softplus", monotone.softplus),
        FromOutputSpec("elu", monotone.elu, params={"alpha": 1.0}),
        FromOutputSpec("selu", monotone.selu),
        FromOutputSpec("relu", monotone.relu),
        FromOutputSpec("leaky_relu", monotone.leaky_relu, params={"negative_slope": 0.2}),
        FromOutputSpec("relu6", monotone.relu6),
        FromOutputSpec("hard_sigmoid", monotone.hard_sigmoid),
        FromOutputSpec("hard_tanh", monotone.hard_tanh),
        FromOutputSpec("linear", monotone.linear),
        FromOutputSpec("sign", monotone.sign),
        FromOutputSpec("gelu", smooth.gelu, True, smooth.Gelu.minimum, {"approximate": False}),
        FromOutputSpec("silu", smooth.silu, True, smooth.Silu.minimum),
        FromOutputSpec("mish", smooth.mish, True, smooth.Mish.minimum),
        FromOutputSpec("hard_silu", monotone.hard_silu, True, (-1.5, -0.375)),
    ]
}


def names():
    """The activations whose `f'` is recovered from the output, sorted
    (Keras's aliases `swish`, `hard_swish`, `identity` are accepted too)."""
    return tuple(sorted(DERIVATIVE_FROM_OUTPUT))


def _spec(name):
    key = ALIASES.get(name, name)
    if key not in DERIVATIVE_FROM_OUTPUT:
        raise ValueError(f"No from-output derivative for {name!r}; supported: {', '.join(names())}.")
    return DERIVATIVE_FROM_OUTPUT[key]


def minimum(name, **params):
    """`(a*, y*)` of a non-monotone activation for these parameters (gelu's
    `approximate=True` has its own), or None for a monotone one.

    Args:
        name: an activation name (`"gelu"`).
        **params: the activation's parameters (`approximate=True`).
    """
    spec = _spec(name)
    if spec.name == "gelu" and params.get("approximate", False):
        return smooth.TanhGelu.minimum
    return spec.minimum


def branch_bits(a, name, **params):
    """The branch bit `a >= a*` per element, or None where `f'` needs none.

    Args:
        a: the activation's input (pre-activation), any float dtype.
        name: the activation's name.
        **params: its parameters; gelu's `approximate=True` moves `a*` by
            7e-4, so pass it (the default is the exact GELU).

    Returns:
        A boolean tensor shaped as `a`, or None.
    """
    found = minimum(name, **params)
    if found is None:
        return None
    a = ops.convert_to_tensor(a)
    # In float32 at least: a* rounded to bfloat16 could flip the comparison
    # for an `a` equal to the rounded value.
    return ops.cast(a, _compute_dtype(a)) >= found[0]


def derivative_from_output(name, y, branch=None, **params):
    """`f'(a)` of activation `name`, from its output `y = f(a)`.

    Args:
        name: the activation's name (`names()`, or a Keras alias).
        y: the activation's output, any float dtype.
        branch: `branch_bits(a, name, **params)` for a non-monotone
            activation, else None (ignored).
        **params: the activation's parameters (elu's `alpha`, leaky_relu's
            `negative_slope`, gelu's `approximate`); defaults otherwise.

    Returns:
        `f'(a)` shaped as `y`, float32 (float64 for float64 `y`).
    """
    spec = _spec(name)
    unknown = set(params) - set(spec.params)
    if unknown:
        raise TypeError(f"{spec.name} takes no parameter {sorted(unknown)}; its parameters: {sorted(spec.params)}.")
    if spec.needs_branch and branch is None:
        raise ValueError(f"{spec.name} is not monotone: its derivative needs the branch bits (`branch_bits`).")
    return spec.derivative(y, branch, **params)
