"""`f'(a)` recovered from an activation's output `y = f(a)` (see `table.py`
for the method and the conventions at kinks)."""

from keras_linbp._from_output.table import ALIASES
from keras_linbp._from_output.table import DERIVATIVE_FROM_OUTPUT
from keras_linbp._from_output.table import FromOutputSpec
from keras_linbp._from_output.table import branch_bits
from keras_linbp._from_output.table import derivative_from_output
from keras_linbp._from_output.table import minimum
from keras_linbp._from_output.table import names

__all__ = [
    "ALIASES",
    "DERIVATIVE_FROM_OUTPUT",
    "FromOutputSpec",
    "branch_bits",
    "derivative_from_output",
    "minimum",
    "names",
]
