"""`f'` from `y` for the monotone and step-wise activations (and
hard_silu, a parabola between its kinks): closed forms in `y` (see
`keras_linbp._from_output` for the kinks' conventions)."""

import keras

from keras_linbp._from_output._common import _SELU_ALPHA
from keras_linbp._from_output._common import _SELU_SCALE

ops = keras.ops



def sigmoid(y, branch=None):
    return y * (1.0 - y)


def tanh(y, branch=None):
    # (1 - y)(1 + y): no cancellation in y^2 near |y| = 1.
    return (1.0 - y) * (1.0 + y)


def softsign(y, branch=None):
    return ops.square(1.0 - ops.abs(y))


def softplus(y, branch=None):
    # f' = sigmoid(a) = 1 - exp(-y); -expm1 keeps its relative precision
    # for the small y of very negative a.
    return -ops.expm1(-y)


def elu(y, branch=None, alpha=1.0):
    # alpha * exp(a) = y + alpha below 0; at a = 0 (y = 0) alpha, as autodiff.
    return ops.where(y > 0, ops.ones_like(y), y + alpha)


def selu(y, branch=None):
    # scale * alpha * exp(a) = y + scale * alpha below 0, taken at y = 0 too.
    return ops.where(y > 0, ops.full_like(y, _SELU_SCALE), y + _SELU_SCALE * _SELU_ALPHA)


def _step(condition, value, y):
    """`value` where `condition`, else 0, in `y`'s dtype."""
    return ops.where(condition, ops.full_like(y, value), ops.zeros_like(y))


def relu(y, branch=None):
    return _step(y > 0, 1.0, y)


def leaky_relu(y, branch=None, negative_slope=0.2):
    # y == 0 only at a == 0: the negative side, as TensorFlow and PyTorch.
    return ops.where(y > 0, ops.ones_like(y), ops.full_like(y, negative_slope))


def relu6(y, branch=None):
    return _step((y > 0) & (y < 6.0), 1.0, y)


def hard_sigmoid(y, branch=None):
    return _step((y > 0) & (y < 1.0), 1.0 / 6.0, y)


def hard_tanh(y, branch=None):
    return _step(ops.abs(y) < 1.0, 1.0, y)


def linear(y, branch=None):
    return ops.ones_like(y)


def sign(y, branch=None):
    return ops.zeros_like(y)


def hard_silu(y, branch):
    """hard_silu: `y = a (a + 3) / 6` on [-3, 3], minimum (-1.5, -0.375),
    so `f' = (2a + 3) / 6 = +-sqrt((2/3)(y + 3/8))` there; 1 at and above
    a = 3 (y >= 3); 0 at and below a = -3 (y == 0 on the left branch)."""
    # y + 0.375 is exact near the minimum (Sterbenz): only y's rounding counts.
    root = ops.sqrt(ops.maximum((2.0 / 3.0) * (y + 0.375), 0.0))
    right = ops.where(y >= 3.0, ops.ones_like(y), root)
    left = ops.where(y >= 0, ops.zeros_like(y), -root)
    return ops.where(branch, right, left)
