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
(`_derivatives.py`; the tests check each against the Keras backends'
autodiff). Each table is computed once per process (well under a second)
and cached. `fitted_table` fits a table to observed inputs instead.

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

import keras
import numpy as np

from keras_linbp import _table as activation_table
from keras_linbp._derivatives import DERIVATIVES, normal_cdf
from keras_linbp._table import is_keras_op

__all__ = [
    "GRID",
    "MAX_BITS",
    "bytes_per_element",
    "call_params",
    "fitted_table",
    "few_bit_mse",
    "few_bit_table",
    "is_keras_op",
    "optimal_piecewise_constant",
    "site_parameters",
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

# The fewest bits that give a step-wise activation's exact derivative.
EXACT_BITS = {"relu": 1, "leaky_relu": 1, "relu6": 2, "hard_sigmoid": 2, "hard_tanh": 2, "sign": 0, "linear": 0}


def table_names():
    """The activation names with a few-bit table, sorted.

    >>> from keras_linbp import tables
    >>> "gelu" in tables.table_names() and "softmax" not in tables.table_names()
    True
    """
    return sorted(DERIVATIVES)


def table_name(activation):
    """The table name of an activation: a table name, a Keras alias
    (`"swish"`, `"hard_swish"`), Keras's own function, the `keras.ops`
    function of that name (`keras.ops.silu`) or a `linbp_*` function of
    the table.

    Raises:
        ValueError: for a name or function with no table; the message
            names it and lists the tables.
    """
    if isinstance(activation, str):
        if activation in DERIVATIVES:
            return activation
        try:
            activation = keras.activations.get(activation)
        except ValueError:
            pass
    if callable(activation):
        linbp_name = getattr(activation, "_linbp_activation", None)
        if linbp_name in DERIVATIVES:
            return linbp_name
        if activation is activation_table.sign:
            return "sign"
        for name in DERIVATIVES:
            try:
                if activation is keras.activations.get(name):
                    return name
            except ValueError:
                pass
            if is_keras_op(activation, name):
                return name
    shown = getattr(activation, "__name__", activation)
    raise ValueError(
        f"No few-bit table for activation {shown!r}. Tables exist for: "
        f"{', '.join(table_names())} (a callable must be one of Keras's own "
        "activation functions or ops of these names)."
    )


def table_params(name, forward, args=(), kwargs=None):
    """The table parameters of one call `forward(x, *args, **kwargs)` of the
    activation `name` (gelu's `approximate`, leaky_relu's `negative_slope`,
    elu's `alpha`), read from the call's arguments or `forward`'s defaults.

    Returns:
        A tuple of `(param, value)` pairs, sorted (hashable).
    """
    return call_params(DERIVATIVES[name][1], forward, args, kwargs)


def call_params(defaults, forward, args=(), kwargs=None, needs="A few-bit table"):
    """`table_params` for any `{param: default}` (the from-output rule's
    too): sorted `(param, value)` pairs, bools kept, numbers as floats; a
    `ValueError` saying what `needs` it for a value that is no number."""
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
    return tuple(sorted((param, _plain(value, needs)) for param, value in values.items()))


def _plain(value, needs="A few-bit table"):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{needs} needs a Python number for an activation parameter; got {value!r}."
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


_MIDS = 0.5 * (GRID[:-1] + GRID[1:])  # the DP's cells, each valued at its middle


def _derivative_on_grid(name, params):
    return DERIVATIVES[name][0](_MIDS, **dict(params))


@functools.lru_cache(maxsize=None)
def _table(name, params, bits):
    values = _derivative_on_grid(name, params)
    # N(0, 1) mass of each cell, the outer cells reaching to infinity; the
    # right half through the upper tail so tiny masses keep their digits.
    lower = np.concatenate([[-np.inf], GRID[1:-1]])
    upper = np.concatenate([GRID[1:-1], [np.inf]])
    mass = np.where(_MIDS < 0, normal_cdf(upper) - normal_cdf(lower), normal_cdf(-lower) - normal_cdf(-upper))
    starts, levels, cost = optimal_piecewise_constant(values, mass, 2**bits)
    return GRID[starts], levels, cost


def _check_bits(bits):
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"`bits` must be an int from 0 to {MAX_BITS}; got {bits!r}.")
    if not 0 <= bits <= MAX_BITS:
        raise ValueError(f"`bits` must be an int from 0 to {MAX_BITS}; got {bits}.")
    return int(bits)


def _resolve(activation, params):
    """(table name, sorted `(param, value)` pairs with the defaults filled in)."""
    name = table_name(activation)
    defaults = DERIVATIVES[name][1]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"The few-bit table of {name!r} takes no parameter {', '.join(unknown)}; "
            f"it takes {', '.join(defaults) or 'none'}."
        )
    values = dict(defaults, **params)
    return name, tuple(sorted((param, _plain(value)) for param, value in values.items()))


def _lookup(activation, bits, params):
    bits = _check_bits(bits)
    return _table(*_resolve(activation, params), bits)


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


def fitted_table(activation, bits, samples, **params):
    """The few-bit table fit to observed inputs instead of N(0, 1).

    The same dynamic programme as `few_bit_table` on the same grid, with
    each cell weighted by the share of `samples` in it (the outer cells
    reach to infinity): the `(bounds, levels)` that minimise
    `mean((f'(s) - q(s))^2)` over the samples, up to the grid's 0.01. A
    site's pre-activations give the table of that site (what
    `slope="auto"` does for one slope); `examples/few_bit_calibration.py`
    measures whether that trains better.

    Args:
        activation: as `few_bit_table`.
        bits: as `few_bit_table`.
        samples: array-like of observed inputs (any shape; non-finite
            values are ignored).
        **params: as `few_bit_table`.

    Returns:
        `(bounds, levels)` as `few_bit_table`'s. A piece no sample falls in
        gets the mean of `f'` over its cells.

    Raises:
        ValueError: as `few_bit_table`, or when `samples` holds no finite
            value.

    >>> import numpy as np
    >>> from keras_linbp import tables
    >>> samples = np.random.default_rng(0).normal(2.0, 0.5, size=10_000)
    >>> bounds, levels = tables.fitted_table("gelu", 1, samples)
    >>> bool(1.0 < bounds[0] < 3.0)  # where these inputs are, not at 0
    True
    """
    bits = _check_bits(bits)
    name, key = _resolve(activation, params)
    samples = np.asarray(samples, np.float64).ravel()
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        raise ValueError("`samples` must hold at least one finite value to fit a few-bit table to.")
    cells = np.clip(np.searchsorted(GRID, samples, side="right") - 1, 0, len(_MIDS) - 1)
    share = np.bincount(cells, minlength=len(_MIDS)) / samples.size
    starts, levels, _ = optimal_piecewise_constant(_derivative_on_grid(name, key), share, 2**bits)
    return GRID[starts].copy(), levels


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
    name, params = site_parameters(site)
    if site.activation_name == "gelu_approximate":
        return name, params, ""
    if name not in DERIVATIVES or site.saturation == "unknown":
        return None, None, f"no few-bit table for {name}"
    if params is None and site.kind == "layer call":
        return name, {}, ""
    return name, params, ""


def site_parameters(site):
    """`(name, params)`: a site's activation and the parameters it fixes
    (keras-hub's `gelu_approximate`, a `LeakyReLU` / `ELU` layer's), else
    None to read them per call; `site_table` and the from-output rule."""
    name = site.activation_name
    if name == "gelu_approximate":
        return "gelu", {"approximate": True}
    if site.kind == "layer call" and isinstance(site.layer, keras.layers.LeakyReLU):
        return name, {"negative_slope": float(site.layer.negative_slope)}
    if site.kind == "layer call" and isinstance(site.layer, keras.layers.ELU):
        return name, {"alpha": float(site.layer.alpha)}
    return name, None
