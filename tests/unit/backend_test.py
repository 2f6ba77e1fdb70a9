"""`_backend.apply_rule` takes any rule object (`residual(x)` /
`input_gradient(upstream, residual)`); rules are values.

References are numpy: the forward is `np.tanh`, the gradients are written
out by hand from each rule's definition.
"""

import dataclasses

import keras
import numpy as np
import pytest

from keras_linbp import _backend
from keras_linbp import rules

pytestmark = pytest.mark.all_backends

X = np.array([-2.0, -0.5, 0.0, 1.5], "float32")


@dataclasses.dataclass(frozen=True)
class HalfWhereNegativeRule:
    """A third rule written against the protocol only: `g * 0.5` where `x < 0`."""

    factor: float = 0.5

    def residual(self, x):
        return keras.ops.less(x, 0.0)

    def input_gradient(self, upstream, residual):
        return keras.ops.where(residual, upstream * self.factor, upstream)


def _apply(rule):
    return lambda a: _backend.apply_rule(keras.ops.tanh, a, (), {}, rule)


def _gradient(rule):
    return _backend.elementwise_derivative(_apply(rule), keras.ops.convert_to_tensor(X))


def test_a_new_rule_object_needs_no_change_to_apply_rule():
    y = keras.ops.convert_to_numpy(_apply(HalfWhereNegativeRule())(keras.ops.convert_to_tensor(X)))
    np.testing.assert_allclose(y, np.tanh(X), rtol=1e-6)
    np.testing.assert_array_equal(_gradient(HalfWhereNegativeRule()), [0.5, 0.5, 1.0, 1.0])
    # Two values of the same rule class are two rules (the JAX path caches
    # one custom_vjp per rule value).
    np.testing.assert_array_equal(_gradient(HalfWhereNegativeRule(0.25)), [0.25, 0.25, 1.0, 1.0])


def test_the_built_in_rules_are_values_with_their_gradients():
    assert rules.LinearRule(1) == rules.LinearRule(1.0)
    assert hash(rules.LinearRule(1)) == hash(rules.LinearRule(1.0))
    assert rules.LinearRule(0.5) != rules.LinearRule(1.0)
    assert rules.StraightThroughRule(None) != rules.LinearRule(1.0)
    assert type(rules.LinearRule(1).slope) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.LinearRule(1.0).slope = 2.0
    np.testing.assert_array_equal(_gradient(rules.LinearRule(1.0)), np.ones(4))
    np.testing.assert_array_equal(_gradient(rules.LinearRule(0.5)), np.full(4, 0.5))
    np.testing.assert_array_equal(_gradient(rules.LinearRule(2.0)), np.full(4, 2.0))
    np.testing.assert_array_equal(_gradient(rules.StraightThroughRule(1.0)), [0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(_gradient(rules.StraightThroughRule(None)), np.ones(4))
