"""`keras_linbp.linearize`: linear-backprop gradients for any forward call.

```python
with keras_linbp.linearize(model, from_depth=3):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(y, model(x))
grad_x = tape.gradient(loss, x)   # LinBP input gradient (Guo et al. 2020)
```

Inside the block every forward call of `model` in this thread applies the
linear backward rule at the selected activation sites; outside it (and in
other threads) the model is exactly as before. `LinearBackpropModel`'s
training step is `with linearize(self): return super().train_step(data)`.
"""

import contextlib
import warnings

from keras_linbp import _backend
from keras_linbp import _validation
from keras_linbp import ops
from keras_linbp import sites as linbp_sites

__all__ = ["linearize", "LinearizeOptions"]

_UNSET = object()
_warned = set()


def _check_slope(slope):
    """A number, `"auto"`, or a dict `{site path: number}`."""
    return _validation.check_slope(slope, allow_auto=True, allow_dict=True)


class LinearizeOptions:
    """The options shared by `linearize` and `LinearBackpropModel`."""

    def __init__(
        self,
        slope=1.0,
        sites=None,
        from_depth=None,
        include_output=False,
        include_softmax=False,
        include_gates=False,
    ):
        self.slope = _check_slope(slope)
        self.sites = _validation.check_sites(sites)
        self.from_depth = _validation.check_from_depth(from_depth)
        self.include_output = _validation.check_bool("include_output", include_output)
        self.include_softmax = _validation.check_bool("include_softmax", include_softmax)
        self.include_gates = _validation.check_bool("include_gates", include_gates)

    def selection_kwargs(self):
        return dict(
            sites=self.sites,
            from_depth=self.from_depth,
            include_output=self.include_output,
            include_softmax=self.include_softmax,
            include_gates=self.include_gates,
        )


def _check_slope_paths(slope, all_sites):
    """Raises `ValueError` when a slope dict names a path that is no site."""
    if not isinstance(slope, dict):
        return
    paths = [site.path for site in all_sites]
    unknown = [path for path in slope if path not in paths]
    if unknown:
        raise ValueError(
            f"`slope` gives slopes for {unknown}, but the model has no "
            f"activation site there. Site paths: {paths or 'none'}."
        )


def _site_slopes(selected, slope, calibrated=None):
    """`{site path: slope}` for the selected sites.

    A number applies to every site; a dict gives per-site slopes (sites it
    does not name use 1.0); `"auto"` takes `calibrated` (sites not
    calibrated use 1.0).
    """
    if isinstance(slope, dict):
        return {s.path: slope.get(s.path, 1.0) for s in selected}
    if slope == "auto":
        calibrated = calibrated or {}
        return {s.path: calibrated.get(s.path, 1.0) for s in selected}
    return {s.path: slope for s in selected}


def _warn_once(model, key, message):
    token = (id(model), key)
    if token in _warned:
        return
    _warned.add(token)
    warnings.warn(message, stacklevel=4)


def _linear_site_rule(original, slope):
    """`original` with the linear rule `g <- slope * g`.

    `slope` is a number, or (TensorFlow) a tensor or variable: `slope="auto"`
    steps read the calibrated slopes from variables, and `GradientFlow`'s
    traced probe takes them as arguments, so new values need no retrace. A
    variable is read here, in the traced step and before the forward (so
    also outside any RNN while loop, whose gradient cannot capture a
    variable).
    """
    if isinstance(slope, (int, float)):
        return ops.linear_backprop(original, slope=slope)
    value = _backend.read_variable(slope)
    unit = ops.linear_backprop(original, slope=1.0)
    return lambda a, *args, **kwargs: unit(_backend.scale_gradient(a, value), *args, **kwargs)


@contextlib.contextmanager
def _linear_rule(model, selected, slopes):
    """Swaps `selected` sites of `model` to the linear rule with `slopes`."""

    def make(site, original):
        return _linear_site_rule(original, slopes.get(site.path, 1.0))

    with linbp_sites.swap_sites(selected, make):
        yield


def _resolve(model, slope, sites, from_depth, include_output, include_softmax, include_gates):
    """Options given explicitly win; the rest come from a
    `LinearBackpropModel`'s own options, else the defaults."""
    own = getattr(model, "linearize_options", None)
    base = own() if callable(own) else LinearizeOptions()
    given = dict(
        slope=slope,
        sites=sites,
        from_depth=from_depth,
        include_output=include_output,
        include_softmax=include_softmax,
        include_gates=include_gates,
    )
    merged = {
        "slope": base.slope,
        "sites": base.sites,
        "from_depth": base.from_depth,
        "include_output": base.include_output,
        "include_softmax": base.include_softmax,
        "include_gates": base.include_gates,
    }
    merged.update({k: v for k, v in given.items() if v is not _UNSET})
    return LinearizeOptions(**merged)


@contextlib.contextmanager
def linearize(
    model,
    *,
    slope=_UNSET,
    sites=_UNSET,
    from_depth=_UNSET,
    include_output=_UNSET,
    include_softmax=_UNSET,
    include_gates=_UNSET,
    inputs=None,
):
    """Within the block, `model`'s forward calls backpropagate linearly.

    Every forward call of `model` inside the block (in this thread) keeps
    its forward values but, at each selected activation site, passes the
    upstream gradient on as `slope * g` instead of `g * f'(a)` -- for the
    weights' gradients and for the inputs' (`tape.gradient(loss, x)`).
    Works in eager mode and inside `tf.function` (enter the block inside
    the traced function: a graph traced inside the block keeps the linear
    rule, one traced outside keeps exact backprop). Blocks nest (the inner
    one wins) and are per thread; on exit, exceptions included, the model
    is exactly as before.

    Args:
        model: a built Keras model (plain or `LinearBackpropModel`).
        slope: the gradient factor at linear sites: a number (default 1.0),
            a dict `{site path: number}` (unnamed sites: 1.0), or `"auto"`
            (a `LinearBackpropModel`'s calibrated per-site slopes).
        sites: None (all), a list of site paths / layer names, a regex, or
            a callable `ActivationSite -> bool`.
        from_depth: only sites at depth >= `from_depth` (1-based, call
            order): LinBP of Guo et al. 2020.
        include_output: also linearize the output's activation.
        include_softmax: also linearize softmax sites.
        include_gates: also linearize multiplicative gates (a sigmoid
            scaling another tensor, as in squeeze-and-excitation).
        inputs: optional example inputs used to observe the model's sites
            when they are not known yet (see `find_activation_sites`).

    Options not given come from a `LinearBackpropModel`'s own options (its
    `slope`, `sites`, ...), else from the defaults above.

    Yields:
        The list of linear sites.

    Raises:
        ValueError / TypeError: for an invalid option, naming it; a `sites`
            list naming a layer with no activation site; a `slope` dict
            naming a path that is no site.
    """
    options = _resolve(
        model, slope, sites, from_depth, include_output, include_softmax, include_gates
    )
    all_sites = linbp_sites.find_activation_sites(model, inputs=inputs)
    _check_slope_paths(options.slope, all_sites)
    rows = linbp_sites.explain_selection(all_sites, **options.selection_kwargs())
    selected = [site for site, chosen, _ in rows if chosen]
    if not selected:
        _warn_once(
            model,
            ("no-sites", repr(options.selection_kwargs())),
            f"Linear backprop on {model.name!r} applies to no activation site, "
            f"so gradients are exact: {linbp_sites.no_selection_reason(all_sites, rows)}.",
        )
    if options.slope == "auto":
        calibrated = getattr(model, "calibrated_slopes", None)
        if calibrated is None:
            raise ValueError(
                '`slope="auto"` needs calibrated slopes: a LinearBackpropModel '
                "calibrates them in `fit` or with `model.calibrate_slopes(x)`; "
                "for another model compute them with "
                "`keras_linbp.calibrate_slopes(model, x)` and pass the dict "
                "as `slope=`."
            )
        slopes = _site_slopes(selected, "auto", calibrated)
        variables = getattr(model, "_linbp_slope_variables", None) or {}
        slopes.update({path: variables[path] for path in slopes if path in variables})
    else:
        slopes = _site_slopes(selected, options.slope)
    with _linear_rule(model, selected, slopes):
        yield list(selected)
