"""Few-bit tables: the best piecewise-constant stand-in for `f'(a)`.

The few-bit backward rule (Novikov et al., "Few-Bit Backward: Quantized
Gradients of Activation Functions for Memory Footprint Reduction", ICML
2023) keeps a `b`-bit code of each pre-activation `a` and multiplies the
upstream gradient by `levels[code]`, where `code` is the number of
`bounds` at or below `a`. `few_bit_table(activation, bits)` gives the
`(bounds, levels)` that minimise `E_{x~N(0,1)}[(f'(x) - q(x))^2]` over all
piecewise-constant `q` with `2^bits` pieces, found by exact dynamic
programming over a fine grid (1600 cells of width 0.01 on [-8, 8], the two
outer cells reaching to infinity). `f'` is a numpy formula per activation
(the tests check each against the Keras backends' autodiff). Each table is
computed once per process (well under a second) and cached.

Smooth activations (gelu, silu, tanh, sigmoid, softplus, elu, selu,
softsign, hard_silu, and gelu's tanh approximation) get an approximation
whose error falls about four-fold per extra bit. Step-wise activations get
their *exact* derivative (every kink is a grid edge): relu and leaky_relu
from 1 bit, relu6, hard_sigmoid and hard_tanh from 2 bits, sign (`f' = 0`)
and linear (`f' = 1`) from 0 bits. Exactness holds away from the kinks; at
a kink the code takes the upper side (`code` counts bounds `<= a`).

`bits=0` is one level: `E[f'(x)]` under N(0, 1), i.e. linear backprop with
that slope. `slope="auto"` instead calibrates `sqrt(mean f'(a)^2)` on the
observed pre-activations: the slope that matches exact backprop's gradient
*scale* there, where `bits=0` is the least-squares constant for an N(0, 1)
input (0.5 for gelu, 0.5 for silu, about 0.6 for tanh).

Example:

>>> import numpy as np
>>> from keras_linbp import tables
>>> bounds, levels = tables.few_bit_table("relu", 1)
>>> bounds, levels
(array([0.]), array([0., 1.]))
>>> bounds, levels = tables.few_bit_table("gelu", 2)
>>> print(np.round(bounds, 2), np.round(levels, 2))
[-0.5  0.   0.5] [-0.05  0.31  0.69  1.05]
"""

import functools
import inspect
import math

import keras
import numpy as np

__all__ = [
    "GRID",
    "MAX_BITS",
    "bytes_per_element",
    "few_bit_mse",
    "few_bit_table",
    "optimal_piecewise_constant",
    "site_table",
    "slot_bits",
    "table_name",
    "table_names",
    "table_params",
]

MAX_BITS = 4

# Cell edges of the DP grid: width 0.01 on [-8, 8], so every kink of the
# step-wise activations (0, +-1, +-3, 6) is an edge.
GRID = np.round(np.linspace(-8.0, 8.0, 1601), 10)

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _normal_cdf(x):
    return 0.5 * np.vectorize(math.erfc)(-np.asarray(x, np.float64) / math.sqrt(2.0))


def _gelu_derivative(x, approximate=False):
    if not approximate:
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return _normal_cdf(x) + x * pdf
    inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
    t = np.tanh(inner)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)


def _silu_derivative(x):
    s = _sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _step(x, *pieces):
    """`pieces`: (upper edge, value) pairs, ascending; the last value holds
    above the last edge. Open-closed as the rule's codes: `x >= edge` is above."""
    out = np.full_like(x, pieces[-1], dtype=np.float64)
    for edge, value in reversed(list(zip(pieces[0:-1:2], pieces[1:-1:2]))):
        out = np.where(x < edge, value, out)
    return out


# name -> (f'(x, **params), {param: default}); names as keras_linbp.activations'.
_DERIVATIVES = {
    "sigmoid": (lambda x: _sigmoid(x) * (1.0 - _sigmoid(x)), {}),
    "tanh": (lambda x: 1.0 - np.tanh(x) ** 2, {}),
    "softsign": (lambda x: 1.0 / (1.0 + np.abs(x)) ** 2, {}),
    "softplus": (_sigmoid, {}),
    "gelu": (_gelu_derivative, {"approximate": False}),
    "silu": (_silu_derivative, {}),
    "elu": (lambda x, alpha=1.0: np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0))), {"alpha": 1.0}),
    "selu": (lambda x: _SELU_SCALE * np.where(x > 0, 1.0, _SELU_ALPHA * np.exp(np.minimum(x, 0.0))), {}),
    "hard_silu": (lambda x: np.where(x < -3.0, 0.0, np.where(x >= 3.0, 1.0, (2.0 * x + 3.0) / 6.0)), {}),
    # Step-wise: exact with few bits.
    "relu": (lambda x: _step(x, 0.0, 0.0, 1.0), {}),
    "leaky_relu": (lambda x, negative_slope=0.2: _step(x, 0.0, negative_slope, 1.0), {"negative_slope": 0.2}),
    "relu6": (lambda x: _step(x, 0.0, 0.0, 6.0, 1.0, 0.0), {}),
    "hard_sigmoid": (lambda x: _step(x, -3.0, 0.0, 3.0, 1.0 / 6.0, 0.0), {}),
    "hard_tanh": (lambda x: _step(x, -1.0, 0.0, 1.0, 1.0, 0.0), {}),
    "sign": (lambda x: np.zeros_like(x), {}),
    "linear": (lambda x: np.ones_like(x), {}),
}

# The fewest bits that give a step-wise activation's exact derivative.
EXACT_BITS = {"relu": 1, "leaky_relu": 1, "relu6": 2, "hard_sigmoid": 2, "hard_tanh": 2, "sign": 0, "linear": 0}


def table_names():
    """The activation names with a few-bit table, sorted.

    >>> from keras_linbp import tables
    >>> "gelu" in tables.table_names() and "softmax" not in tables.table_names()
    True
    """
    return sorted(_DERIVATIVES)


def _is_table_sign(fn):
    return getattr(fn, "__name__", None) == "sign" and getattr(fn, "__module__", "") == "keras_linbp.activations"


def table_name(activation):
    """The table name of an activation: a table name, a Keras alias
    (`"swish"`, `"hard_swish"`), Keras's own function or a `linbp_*`
    function of the table.

    Raises:
        ValueError: for a name or function with no table; the message
            names it and lists the tables.
    """
    if isinstance(activation, str):
        if activation in _DERIVATIVES:
            return activation
        try:
            activation = keras.activations.get(activation)
        except ValueError:
            pass
    if callable(activation):
        linbp_name = getattr(activation, "_linbp_activation", None)
        if linbp_name in _DERIVATIVES:
            return linbp_name
        if _is_table_sign(activation):
            return "sign"
        for name in _DERIVATIVES:
            try:
                if activation is keras.activations.get(name):
                    return name
            except ValueError:
                continue
    shown = getattr(activation, "__name__", activation)
    raise ValueError(
        f"No few-bit table for activation {shown!r}. Tables exist for: "
        f"{', '.join(table_names())} (a callable must be one of Keras's own "
        "activation functions of these names)."
    )


def table_params(name, forward, args=(), kwargs=None):
    """The table parameters of one call `forward(x, *args, **kwargs)` of the
    activation `name` (gelu's `approximate`, leaky_relu's `negative_slope`,
    elu's `alpha`), read from the call's arguments or `forward`'s defaults.

    Returns:
        A tuple of `(param, value)` pairs, sorted (hashable).
    """
    defaults = _DERIVATIVES[name][1]
    if not defaults:
        return ()
    values = dict(defaults)
    try:
        bound = inspect.signature(forward).bind(None, *args, **(kwargs or {}))
        bound.apply_defaults()
        for param in defaults:
            if param in bound.arguments:
                values[param] = bound.arguments[param]
    except (TypeError, ValueError):
        pass  # no signature (a layer's call, a C function): the defaults
    return tuple(sorted((param, _plain(value)) for param, value in values.items()))


def _plain(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"A few-bit table needs a Python number for an activation parameter; got {value!r}."
        ) from None


def optimal_piecewise_constant(values, weights, segments):
    """Exact least-squares fit of `values` by `segments` contiguous constants.

    Minimises `sum_i weights[i] * (values[i] - q_i)^2` over `q` constant on
    each of `segments` contiguous runs of the (ordered) points, by dynamic
    programming over every cut position.

    Args:
        values: 1-D array, the function on ordered cells.
        weights: 1-D array of positive weights, same length.
        segments: the number of constant pieces (>= 1, <= len(values)).

    Returns:
        `(starts, levels, cost)`: the index of the first cell of each piece
        after the first (`segments - 1` ints, ascending), each piece's
        weighted mean, and the minimal weighted squared error.
    """
    values = np.asarray(values, np.float64)
    weights = np.asarray(weights, np.float64)
    n = len(values)
    w = np.concatenate([[0.0], np.cumsum(weights)])
    s1 = np.concatenate([[0.0], np.cumsum(weights * values)])
    s2 = np.concatenate([[0.0], np.cumsum(weights * values * values)])
    # sse[i, j]: the error of one piece over cells i..j-1 (inf unless i < j).
    dw = w[None, :] - w[:, None]
    ds1 = s1[None, :] - s1[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sse = s2[None, :] - s2[:, None] - np.where(dw > 0, ds1 * ds1 / dw, 0.0)
    sse = np.where(np.triu(np.ones((n + 1, n + 1), bool), 1), np.maximum(sse, 0.0), np.inf)
    cost = sse[0].copy()  # one piece over cells 0..j-1
    choices = []
    for _ in range(segments - 1):
        total = cost[:, None] + sse
        choice = np.argmin(total, axis=0)
        cost = total[choice, np.arange(n + 1)]
        choices.append(choice)
    starts = []
    end = n
    for choice in reversed(choices):
        end = int(choice[end])
        starts.append(end)
    starts = starts[::-1]
    edges = [0] + starts + [n]
    levels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mass = weights[lo:hi].sum()
        levels.append(
            float(np.dot(weights[lo:hi], values[lo:hi]) / mass) if mass > 0 else float(values[lo:hi].mean())
        )
    return np.array(starts, np.int64), np.array(levels), float(cost[n])


@functools.lru_cache(maxsize=None)
def _table(name, params, bits):
    derivative, _ = _DERIVATIVES[name]
    mids = 0.5 * (GRID[:-1] + GRID[1:])
    values = derivative(mids, **dict(params))
    # N(0, 1) mass of each cell, the outer cells reaching to infinity; the
    # right half through the upper tail so tiny masses keep their digits.
    lower = np.concatenate([[-np.inf], GRID[1:-1]])
    upper = np.concatenate([GRID[1:-1], [np.inf]])
    mass = np.where(mids < 0, _normal_cdf(upper) - _normal_cdf(lower), _normal_cdf(-lower) - _normal_cdf(-upper))
    starts, levels, cost = optimal_piecewise_constant(values, mass, 2**bits)
    return GRID[starts], levels, cost


def _check_bits(bits):
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"`bits` must be an int from 0 to {MAX_BITS}; got {bits!r}.")
    if not 0 <= bits <= MAX_BITS:
        raise ValueError(f"`bits` must be an int from 0 to {MAX_BITS}; got {bits}.")
    return int(bits)


def _lookup(activation, bits, params):
    bits = _check_bits(bits)
    name = table_name(activation)
    defaults = _DERIVATIVES[name][1]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"The few-bit table of {name!r} takes no parameter {', '.join(unknown)}; "
            f"it takes {', '.join(defaults) or 'none'}."
        )
    values = dict(defaults, **params)
    key = tuple(sorted((param, _plain(value)) for param, value in values.items()))
    return _table(name, key, bits)


def few_bit_table(activation, bits, **params):
    """The optimal few-bit table of `activation` (see the module docstring).

    Args:
        activation: a table name (`"gelu"`, an alias such as `"swish"`) or
            one of Keras's activation functions of those names.
        bits: 0 to 4: `2^bits` levels.
        **params: the activation's parameters, where it has some:
            `approximate` (gelu), `negative_slope` (leaky_relu), `alpha`
            (elu); default Keras's activation defaults.

    Returns:
        `(bounds, levels)`: numpy float64 arrays of `2^bits - 1` ascending
        bounds and `2^bits` levels; the rule's factor at `a` is
        `levels[np.searchsorted(bounds, a, side="right")]`.

    Raises:
        ValueError: for an activation with no table (naming it), `bits`
            outside 0-4 or an unknown parameter.
        TypeError: for a `bits` that is not an int.
    """
    bounds, levels, _ = _lookup(activation, bits, params)
    return bounds.copy(), levels.copy()


def few_bit_mse(activation, bits, **params):
    """`E_{x~N(0,1)}[(f'(x) - q(x))^2]` of the table (on the DP grid).

    >>> from keras_linbp import tables
    >>> tables.few_bit_mse("relu", 1) < 1e-12, round(tables.few_bit_mse("gelu", 2), 4)
    (True, 0.008)
    """
    return _lookup(activation, bits, params)[2]


def slot_bits(bits):
    """Bits each code takes in the packed residual: 3-bit codes use 4-bit
    slots (a byte holds whole codes only), the others their own width."""
    return {0: 0, 1: 1, 2: 2, 3: 4, 4: 4}[_check_bits(bits)]


def bytes_per_element(bits):
    """Bytes the few-bit rule keeps per activation element for the backward.

    >>> from keras_linbp import tables
    >>> [tables.bytes_per_element(b) for b in range(5)]
    [0.0, 0.125, 0.25, 0.5, 0.5]
    """
    return slot_bits(bits) / 8.0


def site_table(site):
    """The table an activation site's few-bit rule uses.

    Reads the site's `activation_name`, `saturation`, `kind` and `layer`
    (a `keras_linbp.sites.ActivationSite`). A `keras.layers.LeakyReLU` or
    `ELU` layer fixes its `negative_slope` / `alpha`; other sites read the
    parameters from each call. keras-hub's `gelu_approximate` is gelu's
    tanh approximation.

    Returns:
        `(name, params, reason)`: the table name (None where there is no
        table), fixed parameters (a dict, or None to read them per call),
        and why there is no table (else `""`).
    """
    name = site.activation_name
    if name == "gelu_approximate":
        return "gelu", {"approximate": True}, ""
    if name not in _DERIVATIVES or site.saturation == "unknown":
        return None, None, f"no few-bit table for {name}"
    if site.kind != "layer call":
        return name, None, ""
    layer = site.layer
    if isinstance(layer, keras.layers.LeakyReLU):
        return name, {"negative_slope": float(layer.negative_slope)}, ""
    if isinstance(layer, keras.layers.ELU):
        return name, {"alpha": float(layer.alpha)}, ""
    return name, {}, ""
