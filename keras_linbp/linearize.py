"""`keras_linbp.linearize`: linear-backprop gradients for any forward call.

Inside a `with linearize(model):` block every forward call of `model` in
this thread applies the linear backward rule at the selected activation
sites; outside it (and in other threads) the model is exactly as before.
`LinearBackpropModel`'s training step is
`with linearize(self): return super().train_step(data)`.

>>> import keras
>>> import numpy as np
>>> import keras_linbp
>>> inputs = keras.Input((2,))
>>> hidden = keras.layers.Dense(2, activation="relu", name="hidden")(inputs)
>>> model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
>>> with keras_linbp.linearize(model, slope=0.5) as linear_sites:
...     print([site.path for site in linear_sites])
['hidden']

A custom loop takes its gradients inside the block (a sketch, TensorFlow):

```python
with keras_linbp.linearize(model, from_depth=3):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(y, model(x))
grad_x = tape.gradient(loss, x)   # LinBP input gradient (Guo et al. 2020)
```
"""

import contextlib
import warnings

from keras_linbp import _backend
from keras_linbp import ops
from keras_linbp import options as linbp_options
from keras_linbp import sites as linbp_sites
from keras_linbp import tables
from keras_linbp.options import LinearizeOptions

__all__ = ["linearize", "LinearizeOptions"]

_warned = set()


def _warn_once(model, key, message):
    token = (id(model), key)
    if token in _warned:
        return
    _warned.add(token)
    warnings.warn(message, stacklevel=4)


def _linear_site_rule(original, slope):
    """`original` with the linear rule `g <- slope * g`.

    `slope` is a number, or a tensor or variable: `slope="auto"` steps read
    the calibrated slopes from variables, and `GradientFlow`'s traced probe
    takes them as arguments, so new values need no retrace.

    TensorFlow reads a variable here, in the traced step and before the
    forward (so outside any RNN while loop, whose gradient cannot capture a
    variable). JAX and PyTorch read it when the site runs: inside Keras's
    stateless JAX step the variable's value is the one the step was given
    (a loop body may close over it), while here, before the step's
    stateless scope, it would be the stored value baked into the trace.
    """
    if isinstance(slope, (int, float)):
        return ops.linear_backprop(original, slope=slope)
    unit = ops.linear_backprop(original, slope=1.0)
    if _backend.backend_name() == "tensorflow":
        value = _backend.read_variable(slope)
        return lambda a, *args, **kwargs: unit(_backend.scale_gradient(a, value), *args, **kwargs)

    def rule(a, *args, **kwargs):
        return unit(_backend.scale_gradient(a, _backend.read_variable(slope)), *args, **kwargs)

    return rule


def _calibrated_slopes(model, selected):
    """`{site path: slope}` of a `slope="auto"` model's calibration: the
    variables its step reads, where it has them (a `LinearBackpropModel`),
    else the calibrated numbers."""
    calibrated = getattr(model, "calibrated_slopes", None)
    if not selected:
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
    return {
        site.path: variables.get(site.path, calibrated.get(site.path, 1.0))
        for site in selected
    }


def _few_bit_sites(selected, options):
    """`(sites, make)` of `backprop="few_bit"`: the selected sites with a
    few-bit table (the others stay exact; `linbp_summary` says why) and
    their rule maker.

    A `bits` dict naming no site is refused by `explain_selection`.
    """
    found = {site.path: tables.site_table(site) for site in selected}
    chosen = [site for site in selected if found[site.path][0] is not None]

    def make(site, original):
        name, params, _ = found[site.path]
        return ops._few_bit_function(original, options.bits_at(site.path), name, params)

    return chosen, make


@contextlib.contextmanager
def linearize(model, options=None, *, inputs=None, **overrides):
    """Within the block, `model`'s forward calls backpropagate linearly.

    Every forward call of `model` inside the block (in this thread) keeps
    its forward values but, at each selected activation site, passes the
    upstream gradient on as `slope * g` instead of `g * f'(a)` -- for the
    weights' gradients and for the inputs' (`tape.gradient(loss, x)`).
    Works in eager mode and inside a traced step (enter the block inside
    the traced function: a graph traced inside the block keeps the linear
    rule, one traced outside keeps exact backprop). Blocks nest (the inner
    one wins) and are per thread; on exit, exceptions included, the model
    is exactly as before.

    Args:
        model: a built Keras model (plain or `LinearBackpropModel`).
        options: a `keras_linbp.LinearizeOptions` (which sites, which
            slope; see there). Default: a `LinearBackpropModel`'s own
            options with `backprop="linear"` (the block linearizes whatever
            mode the model trains in; a `backprop="few_bit"` model's block
            applies its few-bit rule), else the defaults.
        inputs: optional example inputs used to observe the model's sites
            when they are not known yet (see `find_activation_sites`).
        **overrides: `LinearizeOptions` fields by name (`slope=0.5`,
            `from_depth=3`, ...), replacing those of `options`.
            `backprop="exact"` makes the block change nothing;
            `backprop="few_bit", bits=2` applies the few-bit rule
            (`keras_linbp.few_bit`) at the selected sites that have a
            table, and keeps the others exact.

    Yields:
        The list of linear sites.

    Raises:
        TypeError / ValueError: for an invalid option, naming it; a `sites`
            list naming a layer with no activation site; a `slope` dict
            naming a path that is no site; `slope="auto"` on a model with
            no calibrated slopes.
    """
    own = linbp_options.options_of(model)
    default = own if own.backprop == "few_bit" else own.replace(backprop="linear")
    options = linbp_options.resolve(options, overrides, default=default)
    if options.backprop == "exact":
        yield []
        return
    all_sites = linbp_sites.find_activation_sites(model, inputs=inputs)
    rows = linbp_sites.explain_selection(all_sites, options)
    selected = [site for site, chosen, _ in rows if chosen]
    if not selected:
        _warn_once(
            model,
            ("no-sites", repr(options.selection_kwargs())),
            f"Linear backprop on {model.name!r} applies to no activation site, "
            f"so gradients are exact: {linbp_sites.no_selection_reason(all_sites, rows)}.",
        )
    if options.backprop == "few_bit":
        selected, make = _few_bit_sites(selected, options)
    else:
        if options.slope == "auto":
            slopes = _calibrated_slopes(model, selected)
        else:
            slopes = {site.path: options.slope_at(site.path) for site in selected}

        def make(site, original):
            return _linear_site_rule(original, slopes[site.path])

    with linbp_sites.swap_sites(selected, make):
        yield list(selected)
