"""`StraightThroughRule`: the clipped straight-through estimator,
`g <- g * 1[|a| <= clip]` (BinaryNet; Larq's `ste_sign` default).

A layer's or function's own rule (binary signs, `straight_through(...)`);
no `backprop=` mode makes it for a model's sites.
"""

import dataclasses

import keras

from keras_linbp import _validation
from keras_linbp.rules import _registry
from keras_linbp.rules import _rule

__all__ = ["StraightThroughRule"]


@_registry.register
@dataclasses.dataclass(frozen=True)
class StraightThroughRule(_rule.Rule):
    """`g <- g * 1[|x| <= clip]` (`clip=None`: `g <- g`); keeps a mask."""

    clip: float | None = 1.0

    name = "straight_through"
    label = "ste"
    model_mode = False

    def __post_init__(self):
        object.__setattr__(self, "clip", _validation.check_clip(self.clip))

    def residual(self, x):
        if self.clip is None:
            return None
        return keras.ops.less_equal(keras.ops.abs(x), self.clip)

    def input_gradient(self, upstream, residual):
        if residual is None:
            return upstream
        return keras.ops.where(residual, upstream, keras.ops.zeros_like(upstream))

    def bytes_per_element(self):
        return 0.0 if self.clip is None else 1.0  # a bool mask

    def describe(self):
        return {"slope": "" if self.clip is None else f"clip {self.clip:g}", "kept": f"{self.bytes_per_element():g}"}
