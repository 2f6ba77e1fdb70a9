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

from keras_linbp import options as linbp_options
from keras_linbp import rules
from keras_linbp import sites as linbp_sites
from keras_linbp.options import LinearizeOptions

__all__ = ["linearize", "LinearizeOptions"]

_warned = set()


def _warn_once(model, key, message):
    token = (id(model), key)
    if token in _warned:
        return
    _warned.add(token)
    warnings.warn(message, stacklevel=4)


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
    # A model's block applies the rule it trains with; an exact model's, linear backprop.
    default = own if not rules.get(own.backprop).exact else own.replace(backprop="linear")
    options = linbp_options.resolve(options, overrides, default=default)
    rule = rules.get(options.backprop)
    if rule.exact:
        yield []
        return
    all_sites = linbp_sites.find_activation_sites(model, inputs=inputs)
    rows = linbp_sites.explain_selection(all_sites, options)
    selected = [site for site, chosen, _ in rows if chosen]
    makers, left_exact = rule.site_functions(selected, options, model)
    converted = [site for site in selected if site.path in makers]
    if not converted:
        reason = linbp_sites.no_selection_reason(all_sites, rows)
        if selected:  # chosen, but the rule applies to none of them
            reason = "; ".join(sorted(set(left_exact.values())))
        _warn_once(
            model,
            ("no-sites", options.backprop, repr(options.selection_kwargs())),
            f"The {options.backprop} backward rule on {model.name!r} applies to no activation site, "
            f"so gradients are exact: {reason}.",
        )

    def make(site, original):
        return makers[site.path](original)

    with linbp_sites.swap_sites(converted, make):
        yield list(converted)
