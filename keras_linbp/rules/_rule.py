"""`Rule`: what every backward rule is, and the registry of rules.

A rule is a small frozen dataclass (hashable by value: the JAX path builds
one `custom_vjp` per distinct rule) in the style of optax's transforms.
It knows

- its backward: `residual(x)` (what the backward keeps of the forward
  input, None for nothing) and `input_gradient(upstream, residual)`, run
  by the one primitive `keras_linbp._backend.apply_rule`; a rule whose
  numbers depend on the call (few-bit's table of `gelu(x, approximate=)`)
  gives the object that does so through `for_call`;
- how it is made for an activation site from a `LinearizeOptions`
  (`for_site`, with the reason where it leaves the site exact);
- what a summary shows of it (`describe`) and the bytes it keeps per
  element;
- its config (`get_config` / `from_config`, and `serialize` /
  `deserialize` by registered name).

Every room of the package asks the rule; none branches on its name. A new
rule is one file of this package that defines a subclass and registers it
(`keras_linbp.rules._registry.register`), plus its test.
"""

import dataclasses
from typing import ClassVar

from keras_linbp.rules._function import RuleFunction

__all__ = ["Rule"]

@dataclasses.dataclass(frozen=True)
class Rule:
    """A backward rule (see the module docstring). Subclasses are frozen
    dataclasses whose fields are their whole config."""

    name: ClassVar[str] = ""
    # The summary's word for it (`"ste"` for straight-through).
    label: ClassVar[str] = ""
    # Whether `backprop=<name>` makes it for a model's sites.
    model_mode: ClassVar[bool] = True
    # Whether a site under this rule keeps its activation's derivative.
    exact: ClassVar[bool] = False
    # Whether the rule reads the options' `slope` (only linear backprop does).
    reads_slope: ClassVar[bool] = False
    # The option a summary's header shows for this mode (few-bit: `bits`;
    # None: the mode has none).
    setting: ClassVar[str] = "slope"
    # The `describe` fields a summary of this mode shows as columns.
    summary_fields: ClassVar[tuple] = ("slope",)
    # Whether the backward keeps the activation's output (free only where
    # the next layer keeps it too: the summary says where it can tell).
    reads_output: ClassVar[bool] = False

    def residual(self, x):
        return None

    def input_gradient(self, upstream, residual):
        raise NotImplementedError

    def for_call(self, forward, args, kwargs):
        """The object whose `residual` / `input_gradient` one call
        `forward(x, *args, **kwargs)` runs with (default: the rule itself)."""
        return self

    def for_forward(self, forward):
        """This rule completed for `forward` (few-bit fills in its table);
        raises `ValueError` where the rule cannot apply to it."""
        return self

    def attributes(self, forward):
        """Attributes a rule function of `forward` shows besides the
        rule's fields (few-bit: its `bounds` and `levels`)."""
        return {}

    def bytes_per_element(self):
        """Bytes the backward keeps per activation element (besides what
        the next layer keeps anyway)."""
        return 0.0

    def describe(self):
        """`{field: text}` for a summary: `slope`, `bits`, `kept`."""
        return {"kept": f"{self.bytes_per_element():g}"}

    @classmethod
    def check_options(cls, options):
        """Raises `ValueError` for options this mode would silently ignore:
        a `slope` other than 1.0 where the rule reads none (an exact model
        keeps its slope for when a schedule makes it linear again)."""
        if not (cls.exact or cls.reads_slope) and options.slope != 1.0:
            raise ValueError(
                f"`slope` applies to backprop='linear'; a {cls.name} site has no slope, so "
                f"slope={options.slope!r} would be ignored. Leave `slope` at 1.0, or use "
                "backprop='linear'."
            )

    @classmethod
    def for_site(cls, site, options, calibrated=None):
        """`(rule, reason)`: the rule `options` give `site` (a selected
        site), or `(None, why it stays exact)`."""
        raise NotImplementedError

    def get_config(self):
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def site_functions(cls, sites, options, model=None):
        """`({path: make}, {path: why exact})` for the selected `sites`:
        `make(original)` is the site's function under this rule.

        Args:
            sites: the selected `ActivationSite`s.
            options: the `LinearizeOptions` in force.
            model: the model (its calibrated slopes, where it has them).
        """
        calibrated = getattr(model, "calibrated_slopes", None)
        makers, left_exact = {}, {}
        for site in sites:
            rule, reason = cls.for_site(site, options, calibrated)
            if rule is None:
                left_exact[site.path] = reason
            else:
                makers[site.path] = rule.wrap
        return makers, left_exact

    def wrap(self, forward):
        """`forward` (a function) with this rule's backward."""
        return RuleFunction(forward, self.for_forward(forward))

    def wrap_with_slope(self, forward, slope):
        """`wrap(forward)`; a rule with a slope (linear) takes `slope`, a
        number or a tensor a traced probe is given, instead of its own."""
        return self.wrap(forward)
