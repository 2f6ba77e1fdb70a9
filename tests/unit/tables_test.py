"""`keras_linbp.tables`: the few-bit tables.

References: each derivative formula against the backend's autodiff of
Keras's activation (every backend); the dynamic programme against a brute
force over every cut on a coarse grid; each table's error and optimality
against an independent fine quadrature; the GELU numbers checked on this
stack before (DESIGN.md, "the few-bit rule").
"""

import itertools
import math

import numpy as np
import pytest

import keras

from keras_linbp import _backend
from keras_linbp import _derivatives
from keras_linbp import activations
from keras_linbp import tables

BACKEND = keras.backend.backend()
SMOOTH = ["gelu", "silu", "tanh", "sigmoid", "softplus", "elu", "selu", "softsign", "hard_silu"]
STEP_WISE = {"relu": 1, "leaky_relu": 1, "relu6": 2, "hard_sigmoid": 2, "hard_tanh": 2, "sign": 0, "linear": 0}

# A fine quadrature, independent of the tables' grid: f' at 200001 points
# weighted by the N(0, 1) density.
X = np.linspace(-10.0, 10.0, 200001)
DENSITY = np.exp(-0.5 * X * X) / math.sqrt(2 * math.pi) * (X[1] - X[0])


def derivative(name, x, **params):
    return _derivatives.DERIVATIVES[name][0](x, **params)


def quadrature_mse(name, bounds, levels, **params):
    q = np.asarray(levels)[np.searchsorted(bounds, X, side="right")]
    return float(np.sum(DENSITY * (derivative(name, X, **params) - q) ** 2))


@pytest.mark.all_backends
@pytest.mark.parametrize(
    "name, params",
    [(name, {}) for name in SMOOTH + list(STEP_WISE)]
    + [("gelu", {"approximate": True}), ("leaky_relu", {"negative_slope": 0.3}), ("elu", {"alpha": 0.5})],
)
def test_derivative_formula_equals_keras_autodiff(name, params):
    # Away from kinks (0, +-1, +-3, 6), where autodiff conventions differ.
    x = np.random.default_rng(0).uniform(-7, 7, 301).round(2) + 0.005
    forward = activations.get(name)
    # `+ 0 * t`: PyTorch's `sign` (a `where`) has no graph to differentiate.
    got = _backend.elementwise_derivative(
        lambda t: forward(t, **params) + 0 * t, keras.ops.convert_to_tensor(x, "float32")
    )
    np.testing.assert_allclose(derivative(name, x.astype("float32").astype(np.float64), **params), got, atol=1e-5)


def brute_force(values, weights, segments):
    best = (np.inf, None)
    for cuts in itertools.combinations(range(1, len(values)), segments - 1):
        edges = (0,) + cuts + (len(values),)
        cost = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            w, v = weights[lo:hi], values[lo:hi]
            cost += np.sum(w * (v - np.dot(w, v) / w.sum()) ** 2)
        best = min(best, (cost, cuts), key=lambda pair: pair[0])
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bits", [1, 2])
def test_dynamic_programme_equals_brute_force(bits, seed):
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(size=30))
    weights = rng.uniform(0.1, 1.0, 30)
    starts, levels, cost = tables.optimal_piecewise_constant(values, weights, 2**bits)
    best_cost, best_cuts = brute_force(values, weights, 2**bits)
    np.testing.assert_allclose(cost, best_cost, rtol=1e-9)
    assert tuple(starts) == best_cuts
    edges = [0, *starts, 30]
    for level, lo, hi in zip(levels, edges[:-1], edges[1:]):
        np.testing.assert_allclose(level, np.average(values[lo:hi], weights=weights[lo:hi]))


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["gelu", "silu", "tanh"])
def test_tables_are_optimal_under_an_independent_quadrature(name, bits):
    bounds, levels = tables.few_bit_table(name, bits)
    assert bounds.shape == (2**bits - 1,) and levels.shape == (2**bits,)
    assert np.all(np.diff(bounds) > 0)
    mse = quadrature_mse(name, bounds, levels)
    # The grid's error (cell midpoints) is within 0.5% of the quadrature's.
    np.testing.assert_allclose(tables.few_bit_mse(name, bits), mse, rtol=5e-3)
    # No bound moved by 0.03 either way does better (levels refit as the
    # conditional means under the quadrature).
    for i, step in itertools.product(range(len(bounds)), (-0.03, 0.03)):
        moved = bounds.copy()
        moved[i] += step
        codes = np.searchsorted(moved, X, side="right")
        f = derivative(name, X)
        refit = [np.sum((DENSITY * f)[codes == c]) / np.sum(DENSITY[codes == c]) for c in range(len(levels))]
        assert quadrature_mse(name, moved, refit) >= mse * (1 - 1e-6)


def test_gelu_tables_match_the_numbers_checked_on_this_stack():
    # DESIGN.md: 1 bit bound ~0.01, levels ~0.094 / 0.912, mse 3.8e-2;
    # 2 bits bounds ~-0.49, 0.01, 0.51, mse 8.0e-3; 3 bits 1.9e-3; 0 bits 0.5.
    assert tables.few_bit_table("gelu", 0)[1] == pytest.approx([0.5], abs=1e-6)
    bounds, levels = tables.few_bit_table("gelu", 1)
    assert bounds == pytest.approx([0.01], abs=0.011)
    assert levels == pytest.approx([0.094, 0.912], abs=0.004)
    assert tables.few_bit_table("gelu", 2)[0] == pytest.approx([-0.49, 0.01, 0.51], abs=0.012)
    mse = [tables.few_bit_mse("gelu", bits) for bits in (1, 2, 3)]
    assert mse == pytest.approx([3.8e-2, 8.0e-3, 1.9e-3], rel=0.03)


@pytest.mark.parametrize("name", sorted(STEP_WISE))
def test_step_wise_activations_are_exact_from_few_bits(name):
    x = np.random.default_rng(3).uniform(-7.5, 7.5, 5001).round(2) + 0.005
    for bits in range(STEP_WISE[name], tables.MAX_BITS + 1):
        bounds, levels = tables.few_bit_table(name, bits)
        q = levels[np.searchsorted(bounds, x, side="right")]
        np.testing.assert_allclose(q, derivative(name, x), atol=1e-12)
        assert tables.few_bit_mse(name, bits) < 1e-12
    if STEP_WISE[name] > 0:  # one bit fewer is not exact
        assert tables.few_bit_mse(name, STEP_WISE[name] - 1) > 1e-11


def test_leaky_relu_table_follows_its_negative_slope():
    assert tables.few_bit_table("leaky_relu", 1, negative_slope=0.3)[1] == pytest.approx([0.3, 1.0])


@pytest.mark.parametrize("name", SMOOTH)
def test_zero_bits_is_the_mean_derivative_and_error_falls_with_bits(name):
    bounds, levels = tables.few_bit_table(name, 0)
    assert bounds.shape == (0,)
    np.testing.assert_allclose(levels, [np.sum(DENSITY * derivative(name, X))], rtol=1e-4, atol=1e-7)
    mse = [tables.few_bit_mse(name, bits) for bits in range(5)]
    assert all(later < earlier for earlier, later in zip(mse, mse[1:]))


def test_every_table_activation_and_alias_has_tables():
    assert set(tables.table_names()) == set(activations.ACTIVATIONS)
    for name in activations.valid_names():
        assert tables.table_name(activations.get(name)) == activations.get_spec(name).name
    for name in [*activations.ACTIVATIONS, "swish", "hard_swish"]:
        assert tables.table_name(name) == activations.get_spec(name).name
    assert tables.table_name(activations.linbp_gelu) == "gelu"


@pytest.mark.parametrize(
    "activation, bits, error, words",
    [
        ("softmax", 2, ValueError, "'softmax'"),
        ("mish", 2, ValueError, "'mish'"),
        (lambda x: x, 2, ValueError, "No few-bit table"),
        ("gelu", 5, ValueError, "`bits` must be an int from 0 to 4; got 5"),
        ("gelu", -1, ValueError, "got -1"),
        ("gelu", 2.0, TypeError, "`bits`"),
        ("gelu", True, TypeError, "`bits`"),
    ],
)
def test_bad_arguments_raise_naming_them(activation, bits, error, words):
    with pytest.raises(error, match=words):
        tables.few_bit_table(activation, bits)


def test_unknown_parameter_raises():
    with pytest.raises(ValueError, match="takes no parameter alpha"):
        tables.few_bit_table("gelu", 1, alpha=2.0)


def test_bytes_kept_per_element():
    assert [tables.bytes_per_element(bits) for bits in range(5)] == [0.0, 0.125, 0.25, 0.5, 0.5]


# --- fitted_table: the table of observed inputs -----------------------------------


def empirical_mse(name, samples, bounds, levels):
    derivative = _derivatives.DERIVATIVES[name][0](samples)
    return float(np.mean((derivative - np.asarray(levels)[np.searchsorted(bounds, samples, side="right")]) ** 2))


@pytest.mark.parametrize("name,loc,scale", [("gelu", 1.5, 0.7), ("silu", -1.0, 2.0), ("tanh", 0.3, 0.4)])
def test_fitted_one_bit_table_is_the_best_cut_of_the_samples(name, loc, scale):
    # Independent reference: every grid edge as the one bound, each side's
    # level the mean of f' over its samples (exact, not on grid cells).
    samples = np.random.default_rng(1).normal(loc, scale, size=4000)
    bounds, levels = tables.fitted_table(name, 1, samples)
    derivative = _derivatives.DERIVATIVES[name][0](samples)
    best = np.inf
    for edge in tables.GRID[1:-1]:
        below = samples < edge
        if below.all() or not below.any():
            continue
        error = np.where(below, derivative - derivative[below].mean(), derivative - derivative[~below].mean())
        best = min(best, float(np.mean(error**2)))
    # The fit weighs each 0.01-wide cell by f' at its middle: within that of the best cut.
    assert empirical_mse(name, samples, bounds, levels) <= best * 1.02 + 1e-6
    assert samples.min() < bounds[0] < samples.max()


def test_fitted_table_of_standard_normal_samples_is_the_published_table():
    samples = np.random.default_rng(0).normal(size=400_000)
    for bits in (1, 2, 3):
        bounds, levels = tables.fitted_table("gelu", bits, samples)
        reference_bounds, reference_levels = tables.few_bit_table("gelu", bits)
        np.testing.assert_allclose(bounds, reference_bounds, atol=0.06)
        np.testing.assert_allclose(levels, reference_levels, atol=0.02)


def test_fitted_table_beats_the_standard_table_on_its_own_samples():
    samples = np.random.default_rng(2).normal(2.0, 0.3, size=5000)
    fitted = tables.fitted_table("gelu", 2, samples)
    standard = tables.few_bit_table("gelu", 2)
    assert empirical_mse("gelu", samples, *fitted) < 0.5 * empirical_mse("gelu", samples, *standard)


def test_fitted_table_checks_its_arguments():
    with pytest.raises(ValueError, match="finite value"):
        tables.fitted_table("gelu", 2, [np.nan, np.inf])
    with pytest.raises(ValueError, match="No few-bit table for activation 'softmax'"):
        tables.fitted_table("softmax", 2, [0.0])
    with pytest.raises(ValueError, match="takes no parameter alpha"):
        tables.fitted_table("gelu", 2, [0.0], alpha=1.0)
    bounds, levels = tables.fitted_table("leaky_relu", 1, [-1.0, 2.0], negative_slope=0.1)
    assert levels[0] == pytest.approx(0.1) and levels[1] == pytest.approx(1.0)
