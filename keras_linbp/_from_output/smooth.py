"""`f'` from `y` for the smooth non-monotone activations (gelu in both
forms, silu, mish): the inverse on one branch, in the three regions the
docstring of `table.py` describes, with the near-minimum fit made at import."""

import math

import keras
import numpy as np

from keras_linbp._from_output._common import _LEFT_STEPS
from keras_linbp._from_output._common import _NEAR_DEGREE
from keras_linbp._from_output._common import _NEAR_WIDTH
from keras_linbp._from_output._common import _RIGHT_CAP
from keras_linbp._from_output._common import _RIGHT_STEPS
from keras_linbp._from_output._common import _SQRT_2
from keras_linbp._from_output._common import _SQRT_2PI
from keras_linbp._from_output._common import _TANH_GELU_C
from keras_linbp._from_output._common import _TANH_GELU_K
from keras_linbp._from_output._common import _TINY
from keras_linbp._from_output._common import erfc

ops = keras.ops

# --- smooth non-monotone activations: keras.ops pieces ------------------------------
#
# Each gives `value(a)` and `slope(a)` (= f, f'), the left branch's
# `log_neg(a)` = log(-f(a)) and `log_neg_slope(a)` = f'/f for a < a*, and
# Newton starts; numpy float64 `f`, `f'` for the fits made at import.


def _normal_cdf(a):
    # erfc keeps its relative precision in the left tail, where 1 + erf is 0.
    return 0.5 * erfc(-a / _SQRT_2)


def _normal_pdf(a):
    return ops.exp(-0.5 * ops.square(a)) / _SQRT_2PI


class Gelu:
    """Exact GELU, `a Phi(a)`."""

    @staticmethod
    def value(a):
        return a * _normal_cdf(a)

    @staticmethod
    def slope(a):
        return _normal_cdf(a) + a * _normal_pdf(a)

    @staticmethod
    def log_neg(a):
        return ops.log(-a) + ops.log(_normal_cdf(a))

    @staticmethod
    def log_neg_slope(a):
        return 1.0 / a + _normal_pdf(a) / _normal_cdf(a)

    @staticmethod
    def left_start(log_neg_y):
        # -y ~ pdf(a) as a -> -inf: a ~ -sqrt(-2 log(-y sqrt(2 pi))).
        return -ops.sqrt(ops.maximum(-2.0 * log_neg_y - math.log(2.0 * math.pi), 0.0))

    left_floor = -12.5  # log(-f) = log(1e-30) near -11.6; erfc stays normal

    @staticmethod
    def numpy_value(a):
        return a * 0.5 * np.vectorize(math.erfc)(-a / _SQRT_2)

    @staticmethod
    def numpy_slope(a):
        return 0.5 * np.vectorize(math.erfc)(-a / _SQRT_2) + a * np.exp(-0.5 * a * a) / _SQRT_2PI


def _tanh_gelu_inner(a):
    """`2u` and `du/da` of the tanh GELU, `u = c (a + k a^3)`: f = a sigmoid(2u)."""
    a = ops.convert_to_tensor(a)
    square = ops.square(a)
    return 2.0 * _TANH_GELU_C * a * (1.0 + _TANH_GELU_K * square), _TANH_GELU_C * (1.0 + 3.0 * _TANH_GELU_K * square)


class TanhGelu:
    """GELU's tanh approximation, `0.5 a (1 + tanh(c (a + k a^3)))` = `a sigmoid(2u)`."""

    @staticmethod
    def value(a):
        two_u, _ = _tanh_gelu_inner(a)
        return a * ops.sigmoid(two_u)

    @staticmethod
    def slope(a):
        two_u, du = _tanh_gelu_inner(a)
        cdf = ops.sigmoid(two_u)
        return cdf + 2.0 * a * cdf * ops.sigmoid(-two_u) * du

    @staticmethod
    def log_neg(a):
        two_u, _ = _tanh_gelu_inner(a)
        return ops.log(-a) - ops.softplus(-two_u)

    @staticmethod
    def log_neg_slope(a):
        two_u, du = _tanh_gelu_inner(a)
        return 1.0 / a + 2.0 * ops.sigmoid(-two_u) * du

    @staticmethod
    def left_start(log_neg_y):
        # log(-y) ~ 2u + log(-a): the real root of k a^3 + a = v, v = log(-y) / 2c
        # (log(-a) left to Newton), by the hyperbolic form of Cardano's formula.
        v = log_neg_y / (2.0 * _TANH_GELU_C)
        scale = 2.0 / math.sqrt(3.0 * _TANH_GELU_K)
        return scale * ops.sinh(ops.arcsinh(v * 1.5 * math.sqrt(3.0 * _TANH_GELU_K)) / 3.0)

    left_floor = -10.0  # log(-f) = log(1e-30) near -9.3

    @staticmethod
    def numpy_value(a):
        return 0.5 * a * (1.0 + np.tanh(_TANH_GELU_C * (a + _TANH_GELU_K * a**3)))

    @staticmethod
    def numpy_slope(a):
        t = np.tanh(_TANH_GELU_C * (a + _TANH_GELU_K * a**3))
        return 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * _TANH_GELU_C * (1.0 + 3.0 * _TANH_GELU_K * a * a)


class Silu:
    """SiLU (swish), `a sigmoid(a)`."""

    @staticmethod
    def value(a):
        return a * ops.sigmoid(a)

    @staticmethod
    def slope(a):
        # sigmoid(-a) for 1 - sigmoid(a): exact in the right tail.
        return ops.sigmoid(a) * (1.0 + a * ops.sigmoid(-a))

    @staticmethod
    def log_neg(a):
        return ops.log(-a) - ops.softplus(-a)

    @staticmethod
    def log_neg_slope(a):
        return 1.0 / a + ops.sigmoid(-a)

    @staticmethod
    def left_start(log_neg_y):
        # -y ~ -a exp(a): a ~ log(-y) - log(-log(-y)); -y <= 0.28, so log(-y) < -1.
        return log_neg_y - ops.log(-log_neg_y)

    left_floor = -80.0  # log(-f) = log(1e-30) near -73.3

    @staticmethod
    def numpy_value(a):
        return a / (1.0 + np.exp(-a))

    @staticmethod
    def numpy_slope(a):
        s = 1.0 / (1.0 + np.exp(-a))
        return s * (1.0 + a * (1.0 - s))


class Mish:
    """Mish, `a tanh(softplus(a))`. With e = exp(a), tanh(softplus(a)) =
    n / (n + 2), n = e (e + 2): the left branch's logs in closed form."""

    @staticmethod
    def value(a):
        return a * ops.tanh(ops.softplus(a))

    @staticmethod
    def slope(a):
        # exp(-2 softplus(a)) = sigmoid(-a)^2 = q: tanh = (1 - q) / (1 + q) and
        # sech^2 = 4q / (1 + q)^2 keep sech^2's relative precision as a grows
        # (1 - tanh^2 in float32 is 0 or 2 ulps there, times a).
        q = ops.square(ops.sigmoid(-a))
        return (1.0 - q) / (1.0 + q) + a * (4.0 * q / ops.square(1.0 + q)) * ops.sigmoid(a)

    @staticmethod
    def log_neg(a):
        e = ops.exp(a)
        return ops.log(-a) + a + ops.log(e + 2.0) - ops.log(e * (e + 2.0) + 2.0)

    @staticmethod
    def log_neg_slope(a):
        # sigmoid(a) sech^2 / tanh of softplus(a) = 4 (1 + e) / ((e + 2)(n + 2)).
        e = ops.exp(a)
        return 1.0 / a + 4.0 * (1.0 + e) / ((e + 2.0) * (e * (e + 2.0) + 2.0))

    left_start = Silu.left_start  # the same tail: -y ~ -a exp(a)
    left_floor = -80.0

    @staticmethod
    def numpy_value(a):
        return a * np.tanh(np.logaddexp(0.0, a))

    @staticmethod
    def numpy_slope(a):
        t = np.tanh(np.logaddexp(0.0, a))
        return t + a * (1.0 - t * t) / (1.0 + np.exp(-a))


# --- import-time float64 set-up: minimum, near-minimum polynomial -------------------


def _bisect(fn, low, high, steps=100):
    """The root of `fn`, negative at `low` and positive at `high` (arrays)."""
    low, high = np.array(low, np.float64), np.array(high, np.float64)
    for _ in range(steps):
        middle = 0.5 * (low + high)
        positive = fn(middle) > 0
        high, low = np.where(positive, middle, high), np.where(positive, low, middle)
    return 0.5 * (low + high)


def _branch_offset(fn, excess, right):
    """`t` on one branch with `fn(t) = excess` (fn: f(a* + t) - y*)."""
    if right:
        return _bisect(lambda t: fn(t) - excess, np.zeros_like(excess), np.full_like(excess, 8.0))
    return _bisect(lambda t: excess - fn(t), np.full_like(excess, -12.0), np.zeros_like(excess))


def _set_up(activation):
    """Computes `activation`'s minimum (bisection on f' in float64), its
    near-region edges and the polynomial `Q` with `f' = w Q(w / W)`."""
    a_star = float(_bisect(activation.numpy_slope, -3.0, -0.1))
    y_star = float(activation.numpy_value(np.float64(a_star)))
    activation.minimum = (a_star, y_star)
    # y* as float32 high + low halves: (y - hi) - lo is y - y* to float32.
    activation.y_star_high = float(np.float32(y_star))
    activation.y_star_low = float(np.float32(y_star - activation.y_star_high))

    def excess(t):
        return activation.numpy_value(a_star + t) - y_star

    width = _NEAR_WIDTH
    activation.right_edge = a_star + float(_branch_offset(excess, np.array(width**2), True))
    activation.left_edge = a_star + float(_branch_offset(excess, np.array(width**2), False))
    count = 64  # Chebyshev nodes on [-W, W]; an even count leaves out w = 0
    w = width * np.cos(np.pi * (np.arange(count) + 0.5) / count)
    t = np.where(w > 0, _branch_offset(excess, w * w, True), _branch_offset(excess, w * w, False))
    chebyshev = np.polynomial.chebyshev.chebfit(w / width, activation.numpy_slope(a_star + t) / w, _NEAR_DEGREE)
    # Power basis in x = w / W: its coefficients stay below 1 in size, so
    # Horner's rule in float32 loses nothing.
    activation.near_coefficients = tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(chebyshev))
    return activation


for _activation in (Gelu, TanhGelu, Silu, Mish):
    _set_up(_activation)


# --- the inverse ---------------------------------------------------------------------


def _horner(coefficients, x):
    """`sum(c_k x^k)` for power-basis `coefficients` (lowest first, >= 2 of them)."""
    result = coefficients[-1] * x + coefficients[-2]
    for coefficient in reversed(coefficients[:-2]):
        result = result * x + coefficient
    return result


def _near_minimum(activation, w):
    """`f' = w Q(w / W)` near the minimum (w: +-sqrt(y - y*), the branch's sign)."""
    return w * _horner(activation.near_coefficients, w / _NEAR_WIDTH)


def _right_branch(activation, y):
    """`f'` on the right branch away from the minimum: Newton on f(a) = y."""
    positive = ops.maximum(y, 1e-20)  # no 0 / 0 where y <= 0 (not used there)
    # a = y / cdf(a) for y > 0 (f = a cdf(a)): one fixed-point step from a = y.
    start = ops.where(y > 0, positive * (positive / activation.value(ops.minimum(positive, _RIGHT_CAP))), y)
    a = ops.clip(start, activation.right_edge, _RIGHT_CAP)
    for _ in range(_RIGHT_STEPS):
        # The slope is >= f'(right edge) > 0.1 here: no division by ~0.
        a = a - (activation.value(a) - y) / activation.slope(a)
        a = ops.clip(a, activation.right_edge, _RIGHT_CAP)
    return activation.slope(a)


def _left_branch(activation, y):
    """`f'` on the left branch away from the minimum: Newton on
    log(-f(a)) = log(-y), which is concave there (converges from either side)."""
    log_neg_y = ops.log(ops.maximum(-y, _TINY))
    a = ops.clip(activation.left_start(log_neg_y), activation.left_floor, activation.left_edge)
    for _ in range(_LEFT_STEPS):
        a = a - (activation.log_neg(a) - log_neg_y) / activation.log_neg_slope(a)
        a = ops.clip(a, activation.left_floor, activation.left_edge)
    # f' = f (f'/f) = y log_neg_slope(a): relative precision as y -> 0-.
    # y -> 0- (or 0 itself): a -> -inf and f' -> 0; below _TINY, |f'| < 1e-28.
    return ops.where(-y < _TINY, ops.zeros_like(y), y * activation.log_neg_slope(a))


def _smooth_derivative(activation, y, branch):
    """`f'(f^-1(y))` on the branch `branch` (a >= a*) of a smooth
    non-monotone activation (see the module docstring)."""
    excess = (y - activation.y_star_high) - activation.y_star_low
    # y below y* by rounding: the minimum itself, f' = 0.
    root = ops.sqrt(ops.maximum(excess, 0.0))
    w = ops.where(branch, root, -root)
    far = ops.where(branch, _right_branch(activation, y), _left_branch(activation, y))
    return ops.where(root <= _NEAR_WIDTH, _near_minimum(activation, w), far)


def gelu(y, branch, approximate=False):
    return _smooth_derivative(TanhGelu if approximate else Gelu, y, branch)


def silu(y, branch):
    return _smooth_derivative(Silu, y, branch)


def mish(y, branch):
    return _smooth_derivative(Mish, y, branch)
