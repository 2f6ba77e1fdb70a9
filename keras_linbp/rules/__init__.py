"""Backward rules, one file each: what a site trains with.

- `ExactRule` (`exact.py`): ordinary backprop.
- `LinearRule(slope)` (`linear.py`): `g <- slope * g` (Yazdani 2018).
- `StraightThroughRule(clip)` (`straight_through.py`): `g <- g * 1[|a| <= clip]`.
- `FewBitRule(bits)` (`few_bit.py`): `g <- g * q(a)`, q a few-bit table of `f'`.
- `FromOutputRule()` (`from_output.py`): the exact `g * f'(a)`, `f'` read off
  the output `y` (and one branch bit for gelu, silu, mish).

Each is a registered `Rule` (`_rule.py`): its backward (run by
`keras_linbp._backend.apply_rule`), how it is made for a site from the
options, its summary fields and its config. `MODES` (the values of
`backprop=`) derive from the registry. `RuleFunction` (`_function.py`) is
an activation with a rule, what the public rule functions return.

>>> from keras_linbp import rules
>>> rules.MODES
('linear', 'exact', 'few_bit', 'from_output')
>>> rules.deserialize(rules.serialize(rules.FewBitRule(bits=1, table="gelu")))
FewBitRule(bits=1, table='gelu', params=None)
"""

from keras_linbp.rules._function import RuleFunction
from keras_linbp.rules._function import check_floating
from keras_linbp.rules._rule import Rule
from keras_linbp.rules._registry import deserialize
from keras_linbp.rules._registry import get
from keras_linbp.rules._registry import model_modes
from keras_linbp.rules._registry import register
from keras_linbp.rules._registry import rule_of
from keras_linbp.rules._registry import serialize
# Imported in registration order, which `MODES` keeps: the default mode first.
from keras_linbp.rules.linear import LinearRule  # isort: skip
from keras_linbp.rules.exact import ExactRule  # isort: skip
from keras_linbp.rules.few_bit import FewBitRule  # isort: skip
from keras_linbp.rules.from_output import FromOutputRule  # isort: skip
from keras_linbp.rules.straight_through import StraightThroughRule  # isort: skip

# The values of `backprop=`: every registered rule a site can be given
# from the options.
MODES = model_modes()
# The activations `from_output` inverts.
FROM_OUTPUT_NAMES = FromOutputRule.names()

__all__ = [
    "MODES",
    "ExactRule",
    "FROM_OUTPUT_NAMES",
    "FewBitRule",
    "FromOutputRule",
    "LinearRule",
    "Rule",
    "RuleFunction",
    "StraightThroughRule",
    "check_floating",
    "deserialize",
    "get",
    "model_modes",
    "register",
    "rule_of",
    "serialize",
]
