"""`LinearRule`: linear backprop, `g <- slope * g` (Yazdani 2018).

Keeps nothing for the backward pass. Made for a site from the options'
`slope`: a number, a `{site path: number}` dict, or `"auto"` (the
calibrated slope of each site: a variable a traced step reads, so a new
calibration needs no retrace; see `site_function`).
"""

import dataclasses
import functools

from keras_linbp import _backend
from keras_linbp import _validation
from keras_linbp.rules import _registry
from keras_linbp.rules import _rule
from keras_linbp.rules._function import RuleFunction

__all__ = ["LinearRule"]


@_registry.register
@dataclasses.dataclass(frozen=True)
class LinearRule(_rule.Rule):
    """`g <- slope * g`; keeps nothing."""

    slope: float = 1.0

    name = "linear"
    label = "linear"
    reads_slope = True

    def __post_init__(self):
        object.__setattr__(self, "slope", _validation.check_slope(self.slope))

    def input_gradient(self, upstream, residual):
        if self.slope == 1.0:
            return upstream
        # A Python float keeps the upstream's dtype and device on every backend.
        return upstream * self.slope

    def describe(self):
        return {"slope": f"{self.slope:g}", "kept": "0"}

    @classmethod
    def for_site(cls, site, options, calibrated=None):
        return cls(options.slope_at(site.path, calibrated)), ""

    @classmethod
    def site_functions(cls, sites, options, model=None):
        if options.slope != _validation.AUTO:
            return super().site_functions(sites, options, model)
        # The calibrated slopes as the variables a traced step reads.
        slopes = _calibrated_slopes(model, sites)
        makers = {
            site.path: functools.partial(cls.site_function, slope=slopes[site.path]) for site in sites
        }
        return makers, {}

    def wrap_with_slope(self, forward, slope):
        if isinstance(slope, (int, float)):
            return LinearRule(slope).wrap(forward)
        return self.site_function(forward, slope)

    @staticmethod
    def site_function(original, slope):
        """`original` with `g <- slope * g`, `slope` a tensor or variable
        (`slope="auto"`'s calibrated variables, `GradientFlow`'s traced
        slopes): new values need no retrace.

        TensorFlow reads a variable here, in the traced step and before the
        forward (so outside any RNN while loop, whose gradient cannot
        capture a variable). JAX and PyTorch read it when the site runs:
        inside Keras's stateless JAX step the variable's value is the one
        the step was given, while here it would be the stored value baked
        into the trace.
        """
        unit = RuleFunction(original, LinearRule(1.0))
        if _backend.backend_name() == "tensorflow":
            value = _backend.read_variable(slope)
            return lambda a, *args, **kwargs: unit(_backend.scale_gradient(a, value), *args, **kwargs)

        def scaled(a, *args, **kwargs):
            return unit(_backend.scale_gradient(a, _backend.read_variable(slope)), *args, **kwargs)

        return scaled


def _calibrated_slopes(model, sites):
    """`{site path: slope}` of a `slope="auto"` model's calibration: the
    variables its step reads, where it has them (a `LinearBackpropModel`),
    else the calibrated numbers."""
    calibrated = getattr(model, "calibrated_slopes", None)
    if not sites:
        return {}  # nothing to calibrate (nor, at fit, calibrated)
    if calibrated is None:
        raise ValueError(
            '`slope="auto"` needs calibrated slopes: a LinearBackpropModel '
            "calibrates them in `fit` or with `model.calibrate_slopes(x)`; "
            "for another model compute them with "
            "`keras_linbp.calibrate_slopes(model, x)` and pass the dict "
            "as `slope=`."
        )
    variables = getattr(model, "_linbp_slope_variables", None) or {}
    return {site.path: variables.get(site.path, calibrated.get(site.path, 1.0)) for site in sites}
