"""`keras_linbp._from_output`: f'(a) recovered from y = f(a) (and a branch
bit), on every backend.

References, all written here: float64 numpy / scipy formulas of f and f'
(`REFERENCE`), a float64 bisection for f's inverse on each branch, mpmath
for the minima, and the backend's autodiff of `keras.activations.<name>`.

Bounds (float32 y, computed by Keras's forward):
- monotone and step-wise activations: 1e-6 (step-wise: exact);
- non-monotone ones: 1e-5 where |f'| >= 0.01, 2e-4 near the minimum, where
  f' ~ sqrt(2 f''(a*)(y - y*)) turns y's rounding (~1.5e-8) and the forward's
  own error (a few ulps) into ~1e-4 -- where the forward is off by more than
  3 ulps, that error's propagation (`float32_bound`); with y correctly
  rounded, sqrt(f''(a*) ulp(y*)) <= 1e-4;
- the inverse itself: f' at the exact inverse of the stored y (any dtype),
  to 1e-6.
float16 / bfloat16 y (Keras's forward in that dtype) add the propagation of
y's error, |f'(y + dy) - f'(y)|, which `low_precision_bound` states.
"""

import math

import keras
import numpy as np
import pytest

from keras_linbp import _backend
from keras_linbp import _from_output

special = pytest.importorskip("scipy.special")

pytestmark = pytest.mark.all_backends
BACKEND = keras.backend.backend()

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
C = math.sqrt(2.0 / math.pi)
K = 0.044715


def _pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _tanh_gelu_2u(x):
    return 2.0 * C * (x + K * x**3)


def _mish_tanh(x):
    return np.tanh(np.logaddexp(0.0, x))


# case -> (activation name, params, numpy f, numpy f', kind). f' at a kink:
# the side `_from_output` documents (flat side for relu, relu6,
# hard_sigmoid, hard_tanh; negative side for leaky_relu, elu, selu at 0).
REFERENCE = {
    "sigmoid": ("sigmoid", {}, special.expit, lambda x: special.expit(x) * special.expit(-x), "monotone"),
    "tanh": ("tanh", {}, np.tanh, lambda x: 1.0 / np.cosh(x) ** 2, "monotone"),
    "softsign": ("softsign", {}, lambda x: x / (1 + np.abs(x)), lambda x: 1.0 / (1 + np.abs(x)) ** 2, "monotone"),
    "softplus": ("softplus", {}, lambda x: np.logaddexp(0.0, x), special.expit, "monotone"),
    "elu": (
        "elu",
        {},
        lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
        lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0))),
        "monotone",
    ),
    "elu_alpha_0.5": (
        "elu",
        {"alpha": 0.5},
        lambda x: np.where(x > 0, x, 0.5 * np.expm1(np.minimum(x, 0))),
        lambda x: np.where(x > 0, 1.0, 0.5 * np.exp(np.minimum(x, 0))),
        "monotone",
    ),
    "selu": (
        "selu",
        {},
        lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
        lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0))),
        "monotone",
    ),
    "relu": ("relu", {}, lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0, "step"),
    "leaky_relu": (
        "leaky_relu",
        {},
        lambda x: np.where(x > 0, x, 0.2 * x),
        lambda x: np.where(x > 0, 1.0, 0.2),
        "step",
    ),
    "leaky_relu_0.1": (
        "leaky_relu",
        {"negative_slope": 0.1},
        lambda x: np.where(x > 0, x, 0.1 * x),
        lambda x: np.where(x > 0, 1.0, 0.1),
        "step",
    ),
    "relu6": ("relu6", {}, lambda x: np.clip(x, 0, 6), lambda x: ((x > 0) & (x < 6)) * 1.0, "step"),
    "hard_sigmoid": (
        "hard_sigmoid",
        {},
        lambda x: np.clip((x + 3) / 6, 0, 1),
        lambda x: ((x > -3) & (x < 3)) / 6.0,
        "step",
    ),
    "hard_tanh": ("hard_tanh", {}, lambda x: np.clip(x, -1, 1), lambda x: (np.abs(x) < 1) * 1.0, "step"),
    "linear": ("linear", {}, lambda x: x, np.ones_like, "step"),
    "sign": ("sign", {}, np.sign, np.zeros_like, "step"),
    "gelu": ("gelu", {}, lambda x: x * special.ndtr(x), lambda x: special.ndtr(x) + x * _pdf(x), "non-monotone"),
    "gelu_tanh": (
        "gelu",
        {"approximate": True},
        lambda x: x * special.expit(_tanh_gelu_2u(x)),
        lambda x: special.expit(_tanh_gelu_2u(x))
        + 2 * x * special.expit(_tanh_gelu_2u(x)) * special.expit(-_tanh_gelu_2u(x)) * C * (1 + 3 * K * x * x),
        "non-monotone",
    ),
    "silu": (
        "silu",
        {},
        lambda x: x * special.expit(x),
        lambda x: special.expit(x) * (1 + x * special.expit(-x)),
        "non-monotone",
    ),
    "mish": (
        "mish",
        {},
        lambda x: x * _mish_tanh(x),
        lambda x: _mish_tanh(x) + x * (1 - _mish_tanh(x) ** 2) * special.expit(x),
        "non-monotone",
    ),
    "hard_silu": (
        "hard_silu",
        {},
        lambda x: x * np.clip(x + 3, 0, 6) / 6,
        lambda x: np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, (2 * x + 3) / 6)),
        "non-monotone",
    ),
}
NON_MONOTONE = [case for case, ref in REFERENCE.items() if ref[4] == "non-monotone"]
SMOOTH_NON_MONOTONE = [case for case in NON_MONOTONE if case != "hard_silu"]
# Points where f has a kink; autodiff checks leave them out (test_kinks).
KINKS = {
    "relu": [0.0],
    "leaky_relu": [0.0],
    "leaky_relu_0.1": [0.0],
    "relu6": [0.0, 6.0],
    "hard_sigmoid": [-3.0, 3.0],
    "hard_tanh": [-1.0, 1.0],
    "elu": [0.0],
    "elu_alpha_0.5": [0.0],
    "selu": [0.0],
    "hard_silu": [-3.0, 3.0],
    "sign": [0.0],
}
# a dense grid on [-12, 12] (kinks and 0 included) and normal samples.
GRID = np.concatenate(
    [np.linspace(-12.0, 12.0, 48001), 2.0 * np.random.default_rng(7).standard_normal(20000)]
).astype("float32")


def keras_function(name):
    """`keras.activations.<name>` (`keras.ops.sign`: Keras has no sign activation)."""
    return getattr(keras.activations, name, None) or getattr(keras.ops, name)


def keras_forward(case, a):
    name, params = REFERENCE[case][:2]
    return keras_function(name)(a, **params)


def recover(case, a, y):
    """`_from_output`'s f' (float64 numpy) from `y`, the branch from `a`."""
    name, params = REFERENCE[case][:2]
    branch = _from_output.branch_bits(a, name, **params)
    return to_numpy(_from_output.derivative_from_output(name, y, branch, **params))


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), np.float64)


def tensor(values, dtype="float32"):
    return keras.ops.cast(keras.ops.convert_to_tensor(np.asarray(values, "float32")), dtype)


def true_minimum(case):
    """(a*, y*, f''(a*)) from mpmath, 30 digits: f'(a*) = 0 by findroot."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    if case == "hard_silu":
        return -1.5, -0.375, 1.0 / 3.0
    functions = {
        "gelu": lambda x: x * mpmath.ncdf(x),
        "gelu_tanh": lambda x: 0.5 * x * (1 + mpmath.tanh(C * (x + K * x**3))),
        "silu": lambda x: x / (1 + mpmath.exp(-x)),
        "mish": lambda x: x * mpmath.tanh(mpmath.log1p(mpmath.exp(x))),
    }
    f = functions[case]
    a_star = mpmath.findroot(lambda x: mpmath.diff(f, x), -1.0)
    return float(a_star), float(f(a_star)), float(mpmath.diff(f, a_star, 2))


def inverse(case, y, right):
    """float64 f^-1(y) on the branch `right` (a >= a*), by bisection."""
    f = REFERENCE[case][2]
    a_star = true_minimum(case)[0]
    low = np.where(right, a_star, -200.0)
    high = np.where(right, np.maximum(2.0 * np.abs(y) + 5.0, 5.0), a_star)
    for _ in range(200):
        middle = 0.5 * (low + high)
        # f increases on the right branch, decreases on the left.
        above = (f(middle) > y) == right
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    return 0.5 * (low + high)


def float32_bound(case, true_slope, y=None, points=None):
    """The float32 bound of the module docstring, per element.

    With Keras's output `y` at `points`: where that forward is itself off by
    more than 3 ulps (PyTorch's float32 gelu: 4.6 ulps near the minimum,
    2.3e-4 in f'), its error's propagation, sqrt(2 f''(a*) |dy|) near the
    minimum, |f''/f'| |dy| away from it, is allowed on top: `f'` is exact
    for the `y` it is given (`test_inverse_of_the_stored_output`).
    """
    if REFERENCE[case][4] != "non-monotone":
        return np.full_like(true_slope, 1e-6)
    bound = np.where(np.abs(true_slope) >= 0.01, 1e-5, 2e-4)
    if y is None:
        return bound
    exact_y = REFERENCE[case][2](points.astype(np.float64))
    rounding = np.spacing(np.abs(exact_y).astype("float32")).astype(np.float64)
    forward_error = np.abs(to_numpy(y) - exact_y) + 0.5 * rounding
    curvature = true_minimum(case)[2]
    # |sqrt(2 f'' (e + dy)) - sqrt(2 f'' e)| <= min(sqrt(2 f'' dy), f'' dy / f'),
    # and |f''| < 1 for all of them.
    near = np.sqrt(2.0 * curvature * forward_error)
    propagated = np.minimum(near, forward_error / np.maximum(np.abs(true_slope), 1e-30))
    return np.where(forward_error > 3.0 * rounding, np.maximum(bound, 1.1 * propagated + 1e-6), bound)


def ulp(value, dtype):
    """The spacing of `dtype` at |value| (float16 subnormals included)."""
    mantissa = {"bfloat16": 7, "float16": 10}[dtype]
    exponent = np.floor(np.log2(np.maximum(np.abs(value), 1e-38)))
    if dtype == "float16":
        exponent = np.maximum(exponent, -14)
    return 2.0 ** (exponent - mantissa)


# max |d f' / d y| where f' varies (|y| <= 2): sigmoid |1 - 2y|, tanh |2y|,
# softsign 2(1 - |y|), softplus exp(-y), elu / selu 1.
MONOTONE_LIPSCHITZ = {
    "sigmoid": 1.0,
    "tanh": 2.0,
    "softsign": 2.0,
    "softplus": 1.0,
    "elu": 1.0,
    "elu_alpha_0.5": 1.0,
    "selu": 1.0,
}


def low_precision_bound(case, dtype):
    """|f'_recovered - f'(a)| for y = f(a) computed and stored in `dtype`.

    y's error is taken as 3 ulps of the dtype (0.5 storing, up to ~2.5 of
    Keras's forward computed in that dtype, measured on the three backends).
    Near a non-monotone activation's minimum f' ~ sqrt(2 f''(a*)(y - y*)),
    so 3 ulps of y* cost sqrt(2 f''(a*) 3 ulp(y*)): about 0.04-0.05 for
    bfloat16, 0.015-0.02 for float16, the largest error on the whole line
    (the left tails, where Keras's 1 + tanh / 1 + erf loses y entirely,
    stay below it: f' is small there). A monotone one moves f' by at most
    L |dy|, L = max |d f'/d y| (`MONOTONE_LIPSCHITZ`), where |y| <= 2.
    """
    if REFERENCE[case][4] == "non-monotone":
        _, y_star, curvature = true_minimum(case)
        return math.sqrt(2.0 * curvature * 3.0 * ulp(y_star, dtype))
    return MONOTONE_LIPSCHITZ[case] * 3.0 * ulp(1.0, dtype)


def report(case, label, error):
    # Shown with `pytest -s`: the measured numbers behind the bounds.
    print(f"[from_output] {BACKEND} {case} {label}: max error {np.max(error):.3g}")


# --- the table -----------------------------------------------------------------------


def test_names_cover_the_keras_activations():
    expected = {name for name, *_ in REFERENCE.values()}
    assert set(_from_output.names()) == expected
    for name in _from_output.names():
        spec = _from_output.DERIVATIVE_FROM_OUTPUT[name]
        assert spec.needs_branch == (name in ("gelu", "silu", "mish", "hard_silu"))
        assert (spec.minimum is not None) == spec.needs_branch
        assert callable(keras_function(name))
    assert _from_output.DERIVATIVE_FROM_OUTPUT["elu"].params == {"alpha": 1.0}
    assert _from_output.DERIVATIVE_FROM_OUTPUT["leaky_relu"].params == {"negative_slope": 0.2}
    assert _from_output.DERIVATIVE_FROM_OUTPUT["gelu"].params == {"approximate": False}


@pytest.mark.parametrize("case", NON_MONOTONE)
def test_minimum_matches_mpmath(case):
    name, params = REFERENCE[case][:2]
    a_star, y_star, _ = true_minimum(case)
    found = _from_output.minimum(name, **params)
    np.testing.assert_allclose(found, (a_star, y_star), rtol=0, atol=1e-12)


def test_minimum_stated_values():
    # DESIGN.md's numbers, and the two this module computes (mish, tanh GELU).
    np.testing.assert_allclose(_from_output.minimum("gelu"), (-0.75179, -0.16997), atol=5e-6)
    np.testing.assert_allclose(_from_output.minimum("silu"), (-1.27846, -0.27846), atol=5e-6)
    np.testing.assert_allclose(_from_output.minimum("gelu", approximate=True), (-0.75246, -0.17004), atol=5e-6)
    np.testing.assert_allclose(_from_output.minimum("mish"), (-1.19243, -0.30884), atol=5e-6)
    assert _from_output.minimum("swish") == _from_output.minimum("silu")
    assert _from_output.minimum("tanh") is None


def test_branch_bits():
    a = tensor([-2.0, -0.7530, -0.7520, -0.7517, 0.0, 3.0])
    assert _from_output.branch_bits(a, "tanh") is None
    exact = keras.ops.convert_to_numpy(_from_output.branch_bits(a, "gelu"))
    assert exact.tolist() == [False, False, False, True, True, True]
    # The tanh GELU's minimum is 7e-4 left of the exact one.
    approximate = keras.ops.convert_to_numpy(_from_output.branch_bits(a, "gelu", approximate=True))
    assert approximate.tolist() == [False, False, True, True, True, True]
    hard = keras.ops.convert_to_numpy(_from_output.branch_bits(tensor([-1.6, -1.5, -1.4]), "hard_swish"))
    assert hard.tolist() == [False, True, True]


def test_spec_derivative_computes_in_float32():
    # The table's own `derivative`, as a rule calls it: bfloat16 y, the
    # branch as unpacked uint8 bits.
    spec = _from_output.DERIVATIVE_FROM_OUTPUT["gelu"]
    a = np.array([-3.0, -0.5, 2.0], "float32")
    y = tensor(REFERENCE["gelu"][2](a.astype(np.float64)), "bfloat16")
    slope = spec.derivative(y, keras.ops.cast(tensor(a >= spec.minimum[0]), "uint8"))
    assert keras.backend.standardize_dtype(slope.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(slope), REFERENCE["gelu"][3](a.astype(np.float64)), atol=0.02)


def test_errors():
    y = tensor([0.5])
    with pytest.raises(ValueError, match="No from-output derivative"):
        _from_output.derivative_from_output("softmax", y)
    with pytest.raises(ValueError, match="branch bits"):
        _from_output.derivative_from_output("gelu", y)
    with pytest.raises(TypeError, match="no parameter"):
        _from_output.derivative_from_output("tanh", y, alpha=2.0)


# --- float32 accuracy ----------------------------------------------------------------


@pytest.mark.parametrize("case", list(REFERENCE))
def test_float32_matches_numpy_reference(case):
    a = tensor(GRID)
    y = keras_forward(case, a)
    recovered = recover(case, a, y)
    true_slope = REFERENCE[case][3](GRID.astype(np.float64))
    error = np.abs(recovered - true_slope)
    report(case, "float32 vs numpy", error)
    if REFERENCE[case][4] == "step":
        np.testing.assert_array_equal(recovered, true_slope.astype("float32"))
    assert np.all(error <= float32_bound(case, true_slope, y, GRID))


@pytest.mark.parametrize("case", list(REFERENCE))
def test_float32_matches_keras_autodiff(case):
    keep = ~np.isin(GRID, KINKS.get(case, []))
    points = GRID[keep]
    a = tensor(points)
    name, params = REFERENCE[case][:2]
    autodiff = _backend.elementwise_derivative(keras_function(name), a, kwargs=params)
    y = keras_forward(case, a)
    recovered = recover(case, a, y)
    error = np.abs(recovered - autodiff)
    report(case, "float32 vs autodiff", error)
    # autodiff's own float32 error: 1e-6 more.
    assert np.all(error <= float32_bound(case, autodiff, y, points) + 1e-6)


@pytest.mark.parametrize("case", NON_MONOTONE)
def test_correctly_rounded_output_reaches_the_float32_limit(case):
    # y = f(a) rounded once to float32: the only error left near the
    # minimum is that rounding, half an ulp of y*: sqrt(2 f'' ulp / 2) <= 1e-4.
    _, y_star, curvature = true_minimum(case)
    bound = math.sqrt(curvature * float(np.spacing(np.float32(abs(y_star))))) + 2e-6
    points = np.concatenate([GRID, np.linspace(-1.6, -0.5, 200001, dtype="float32")])
    exact_y = REFERENCE[case][2](points.astype(np.float64))
    recovered = recover(case, tensor(points), tensor(exact_y))
    error = np.abs(recovered - REFERENCE[case][3](points.astype(np.float64)))
    report(case, f"float32, y rounded once (bound {bound:.3g})", error)
    assert np.max(error) <= bound


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("case", NON_MONOTONE)
def test_inverse_of_the_stored_output(case, dtype):
    # The inverse itself: f' at the exact (float64) inverse of the stored y,
    # whatever its dtype, to 1e-6; the left tail down to y ~ -1e-35.
    far_left = {"gelu": -13.0, "gelu_tanh": -10.0, "hard_silu": -3.5}.get(case, -80.0)
    points = np.concatenate([np.linspace(far_left, 12.0, 200001), np.geomspace(12.0, 1e4, 1000)])
    a = tensor(points, dtype)
    stored = keras.ops.cast(keras.ops.cast(tensor(REFERENCE[case][2](points)), dtype), "float32")
    y = to_numpy(stored)
    a_star, y_star, _ = true_minimum(case)
    right = to_numpy(a) >= a_star
    expected = np.where(y <= y_star, 0.0, REFERENCE[case][3](inverse(case, y, right)))
    name, params = REFERENCE[case][:2]
    recovered = to_numpy(
        _from_output.derivative_from_output(name, stored, keras.ops.convert_to_tensor(right), **params)
    )
    error = np.abs(recovered - expected)
    report(case, f"inverse of stored {dtype} y", error)
    assert np.max(error) <= 1e-6


# --- low precision -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", list(REFERENCE))
def test_low_precision_output(case, dtype):
    a = tensor(GRID, dtype)
    points = to_numpy(a)  # the low-precision a itself: f'(a) is its truth
    y = keras_forward(case, a)
    recovered = recover(case, a, y)
    assert keras.backend.standardize_dtype(
        _from_output.derivative_from_output(REFERENCE[case][0], y, _from_output.branch_bits(a, REFERENCE[case][0]))
        .dtype
    ) == "float32"
    true_slope = REFERENCE[case][3](points)
    error = np.abs(recovered - true_slope)
    report(case, dtype, error)
    if REFERENCE[case][4] == "step":
        # Exact, except where y rounds onto a piece's edge (the flat side).
        stored = to_numpy(y)
        inside = ~np.isin(stored, [0.0, 1.0, -1.0, 6.0]) | (case in ("linear", "sign"))
        np.testing.assert_array_equal(recovered[inside], true_slope[inside].astype("float32"))
        return
    assert np.max(error) <= low_precision_bound(case, dtype)


# --- special values ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("case", list(REFERENCE))
def test_no_nan_or_inf(case, dtype):
    big = [6e4] if dtype == "float16" else [1e4, 1e30]  # float16's max: 65504
    points = np.array(big + [-200.0, -30.0, -13.0, -1.0, 0.0, 1e-30, 30.0])
    a = tensor(np.concatenate([points, -np.array(big)]), dtype)
    assert np.all(np.isfinite(recover(case, a, keras_forward(case, a))))
    if REFERENCE[case][4] != "non-monotone":
        return
    # Outputs with no preimage or at the edges: y*, below it, 0, tiny, huge.
    y_star = true_minimum(case)[1]
    edges = np.array([y_star, np.nextafter(np.float32(y_star), -1), y_star - 0.1, 0.0, -1e-40, -1e-30, 3e38, -3e38])
    name, params = REFERENCE[case][:2]
    for right in (True, False):
        branch = keras.ops.convert_to_tensor(np.full(edges.shape, right))
        slope = to_numpy(_from_output.derivative_from_output(name, tensor(edges, dtype), branch, **params))
        assert np.all(np.isfinite(slope)), (right, slope)
        # At y* (as stored) f' is ~0; below it (rounding): the minimum, 0.
        assert abs(slope[0]) <= low_precision_bound(case, "bfloat16")
        assert slope[2] == 0.0
        if dtype == "float32":
            assert abs(slope[0]) <= 2e-4 and slope[1] == 0.0
    # The left tail's end: f' -> 0 (hard_silu: -0.5 just right of its kink at -3).
    left_end = _from_output.derivative_from_output(name, tensor([0.0, -1e-35]), tensor([0.0, 0.0], "bool"), **params)
    np.testing.assert_array_equal(to_numpy(left_end), [0.0, -0.5 if case == "hard_silu" else 0.0])


@pytest.mark.parametrize("case", list(KINKS))
def test_kinks(case):
    # The documented side (REFERENCE's f'), and Keras's autodiff where all
    # three backends agree on it (relu, relu6, hard_sigmoid, elu, hard_silu;
    # leaky_relu: TF / torch; selu: JAX / torch; hard_tanh: torch).
    kinks = np.array(KINKS[case], "float32")
    a = tensor(kinks)
    recovered = recover(case, a, keras_forward(case, a))
    expected = REFERENCE[case][3](kinks.astype(np.float64)).astype("float32")
    np.testing.assert_array_equal(recovered, expected)
    disagree = {
        "leaky_relu": ["jax"],
        "leaky_relu_0.1": ["jax"],
        "selu": ["tensorflow"],
        "hard_tanh": ["tensorflow", "jax"],
    }
    if BACKEND in disagree.get(case, []) or case == "sign":
        return
    name, params = REFERENCE[case][:2]
    autodiff = _backend.elementwise_derivative(keras_function(name), a, kwargs=params)
    np.testing.assert_allclose(recovered, autodiff, rtol=0, atol=1e-7)


# --- dtypes and tracing ----------------------------------------------------------------


def test_float64_output():
    if BACKEND == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX without x64 has no float64")
    points = np.linspace(-12.0, 12.0, 4001)
    for case in SMOOTH_NON_MONOTONE + ["tanh", "softplus"]:
        name, params = REFERENCE[case][:2]
        a = keras.ops.convert_to_tensor(points, "float64")
        y = keras.ops.convert_to_tensor(REFERENCE[case][2](points), "float64")
        slope = _from_output.derivative_from_output(name, y, _from_output.branch_bits(a, name, **params), **params)
        assert keras.backend.standardize_dtype(slope.dtype) == "float64"
        error = np.abs(keras.ops.convert_to_numpy(slope) - REFERENCE[case][3](points))
        report(case, "float64", error)
        # Fit and Newton tuned for float32 reach ~1e-9 in float64.
        assert np.max(error) <= 1e-7


def _traced_matches_eager(trace):
    for case in NON_MONOTONE + ["tanh", "elu", "relu6"]:
        name, params = REFERENCE[case][:2]
        a = tensor(GRID[:5000])
        y = keras_forward(case, a)
        branch = _from_output.branch_bits(a, name, **params)

        def slope(y, branch, name=name, params=params):
            return _from_output.derivative_from_output(name, y, branch, **params)

        eager = to_numpy(slope(y, branch))
        traced = to_numpy(trace(slope)(y, branch) if branch is not None else trace(lambda y: slope(y, None))(y))
        np.testing.assert_allclose(traced, eager, rtol=0, atol=1e-6)


def test_under_tf_function():
    if BACKEND != "tensorflow":
        pytest.skip("tf.function is TensorFlow's")
    import tensorflow as tf

    _traced_matches_eager(lambda fn: tf.function(fn, jit_compile=False))
    _traced_matches_eager(lambda fn: tf.function(fn, jit_compile=True))


def test_under_jax_jit():
    if BACKEND != "jax":
        pytest.skip("jax.jit is JAX's")
    import jax

    _traced_matches_eager(jax.jit)


def test_erfc_without_keras_ops_erfc_is_the_backends_own(monkeypatch):
    # Keras 3.11 (the declared minimum) has no `keras.ops.erfc`; the exact
    # GELU's left tail needs erfc's relative precision, not 1 - erf.
    from keras_linbp._from_output import _common

    x = np.array([-3.0, 0.0, 2.0, 6.0, 9.0], "float32")
    monkeypatch.delattr(keras.ops, "erfc", raising=False)
    got = keras.ops.convert_to_numpy(_common.erfc(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got, special.erfc(x.astype("float64")), rtol=1e-5)
