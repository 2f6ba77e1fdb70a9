"""`ExactRule`: ordinary backprop, `g <- g * f'(a)`.

`backprop="exact"`: the model trains like a plain `keras.Model` and a
`linearize` block changes nothing. Its site function is the site's own.
"""

import dataclasses

from keras_linbp.rules import _registry
from keras_linbp.rules import _rule

__all__ = ["ExactRule"]


@_registry.register
@dataclasses.dataclass(frozen=True)
class ExactRule(_rule.Rule):
    """Exact backprop: the activation's own derivative (nothing to swap)."""

    name = "exact"
    label = "exact"
    exact = True

    def wrap(self, forward):
        return forward  # its own derivative: nothing to wrap

    @classmethod
    def for_site(cls, site, options, calibrated=None):
        return None, 'linear when backprop="linear"'
