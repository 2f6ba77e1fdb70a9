"""`DERIVATIVES`: numpy formulas of the derivative `f'` of each activation
with a few-bit table (`keras_linbp.tables`), and their parameters.

Each is checked against the Keras backends' autodiff in
tests/unit/tables_test.py. A module of its own only to keep `tables` short.
"""

import math

import numpy as np

__all__ = ["DERIVATIVES", "normal_cdf"]

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def normal_cdf(x):
    return 0.5 * np.vectorize(math.erfc)(-np.asarray(x, np.float64) / math.sqrt(2.0))


def _gelu_derivative(x, approximate=False):
    if not approximate:
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return normal_cdf(x) + x * pdf
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
DERIVATIVES = {
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
