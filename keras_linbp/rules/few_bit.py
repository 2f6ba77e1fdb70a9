"""`FewBitRule`: `g <- g * q(a)`, q a `2^bits`-level piecewise-constant
stand-in for `f'` (Novikov et al., "Few-Bit Backward", ICML 2023).

The rule is the choice (`bits`, the activation's `table`, its fixed
`params` or None to read them from each call); the numbers of one call
(`bounds`, `levels`) come from `keras_linbp.tables`, and the packed codes
from `keras_linbp._few_bit.FewBitCodes`. Made for a site from the
options' `bits` (an int or a `{site path: int}` dict); a site whose
activation has no table stays exact, and says so.
"""

import dataclasses
import functools
from typing import Any

import numpy as np

from keras_linbp import _few_bit
from keras_linbp import _validation
from keras_linbp import tables
from keras_linbp.rules import _registry
from keras_linbp.rules import _rule

__all__ = ["FewBitRule", "check_bits"]


def check_bits(bits, name="bits"):
    """An int from 0 to `tables.MAX_BITS`, or a named error."""
    bits = _validation.check_int(name, bits, minimum=0)
    if bits > tables.MAX_BITS:
        raise ValueError(f"`{name}` must be an int from 0 to {tables.MAX_BITS}; got {bits}.")
    return bits


@functools.lru_cache(maxsize=None)
def _codes_rule(table, params, bits):
    bounds, levels = tables.few_bit_table(table, bits, **dict(params))
    return _few_bit.FewBitRule(tuple(bounds), tuple(levels))


@_registry.register
@dataclasses.dataclass(frozen=True)
class FewBitRule(_rule.Rule):
    """The few-bit rule of `bits` bits for the table `table` (None until
    completed for a forward function by `for_forward`).

    Attributes:
        bits: 0 to 4.
        table: the table name (`"gelu"`), or None.
        params: the table's fixed parameters as sorted `(name, value)`
            pairs (a `keras.layers.ELU`'s alpha), or None to read them from
            each call (`gelu(x, approximate=True)`).
    """

    bits: int = 2
    table: Any = None
    params: Any = None

    name = "few_bit"
    label = "few_bit"
    setting = "bits"
    summary_fields = ("bits", "kept")

    def __post_init__(self):
        object.__setattr__(self, "bits", check_bits(self.bits))
        if self.table is not None and self.table not in tables.table_names():
            raise ValueError(f"No few-bit table {self.table!r}; tables exist for {', '.join(tables.table_names())}.")
        if isinstance(self.params, dict):
            object.__setattr__(self, "params", tuple(sorted(self.params.items())))
        elif self.params is not None:
            object.__setattr__(self, "params", tuple(tuple(pair) for pair in self.params))

    def for_forward(self, forward):
        if self.table is not None:
            return self
        return dataclasses.replace(self, table=tables.table_name(forward))

    def for_call(self, forward, args, kwargs):
        params = self.params if self.params is not None else tables.table_params(self.table, forward, args, kwargs)
        return _codes_rule(self.table, params, self.bits)

    def attributes(self, forward):
        codes = self.for_call(forward, (), {})
        return {"bounds": np.array(codes.bounds), "levels": np.array(codes.levels)}

    def bytes_per_element(self):
        return tables.bytes_per_element(self.bits)

    def describe(self):
        return {"bits": str(self.bits), "kept": f"{self.bytes_per_element():g}"}

    @classmethod
    def for_site(cls, site, options, calibrated=None):
        table, params, reason = tables.site_table(site)
        if table is None:
            return None, reason
        return cls(options.bits_at(site.path), table, params), ""

    def get_config(self):
        return {"bits": self.bits, "table": self.table, "params": None if self.params is None else dict(self.params)}

