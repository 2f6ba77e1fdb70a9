"""Per-site slopes that give the linear rule the gradient scale of exact
backprop (`slope="auto"`).

Exact backprop multiplies the gradient at each unit by `f'(a)`; the linear
rule by a constant `slope`. Over a deep network the factors multiply: at
slope 1 every dropped derivative that was below 1 on average (a ReLU passes
about half the units, a sigmoid at most 0.25) makes the linear gradient
grow layer after layer, and plain SGD diverges on batch-normalized nets.

`calibrate_slopes(model, x)` runs one forward pass on a probe batch,
records every selected site's pre-activation `a`, differentiates the
site's own function there (`f'(a)` per element, by autodiff) and returns
per site

- `"rms"` (the default): `sqrt(mean(f'(a)^2))`, the factor by which exact
  backprop scales the norm of a gradient with independent entries -- the
  slope that keeps the norm of the linear gradient at that site equal to
  the exact one;
- `"mean"`: `mean(f'(a))`, the average local derivative.

Both were measured on keras.applications nets (see the README's "Deep
normalized networks" section); `"rms"` is the package's choice.
"""

import contextlib

import keras
import numpy as np

from keras_linbp import _backend
from keras_linbp import _compat
from keras_linbp import _probe_data
from keras_linbp import options as linbp_options
from keras_linbp import sites as linbp_sites

__all__ = ["calibrate_slopes", "NonFiniteSlopesError", "STATISTICS"]


class NonFiniteSlopesError(ValueError):
    """The probe batch gave NaN or infinite slopes (non-finite weights or
    inputs, e.g. after training diverged)."""

STATISTICS = ("rms", "mean")


def _recurrent_layers(layer):
    for child in _compat.child_layers(layer):
        if isinstance(child, keras.layers.RNN):
            yield child
        yield from _recurrent_layers(child)


@contextlib.contextmanager
def _unrolled(model):
    """Within the block, the model's recurrent layers run unrolled (the
    same values): their cell then runs once per time step on every
    backend. A symbolic loop calls it once more, at step 0, to learn the
    output's shape (TensorFlow, and PyTorch's generic loop), which the
    statistic would count twice; JAX's `lax.scan` body holds tracers; a
    GPU's cuDNN kernel calls no activation at all."""
    rolled = [layer for layer in _recurrent_layers(model) if not layer.unroll]
    for layer in rolled:
        layer.unroll = True
    try:
        yield
    finally:
        for layer in rolled:
            layer.unroll = False


def calibrate_slopes(model, x, statistic="rms", options=None, max_samples=256, **overrides):
    """Per-site slopes from the local derivatives on a probe batch.

    >>> import keras, numpy as np, keras_linbp
    >>> hidden = keras.layers.Dense(3, "relu", kernel_initializer="identity", name="hidden")
    >>> model = keras.Sequential([keras.Input((2,)), hidden, keras.layers.Dense(1)])
    >>> x = np.array([[1.0, -1.0], [1.0, 1.0]], dtype="float32")
    >>> keras_linbp.calibrate_slopes(model, x)  # relu'(a): 1, 0, 0 and 1, 1, 0
    {'hidden': 0.7071067811865476}
    >>> keras_linbp.calibrate_slopes(model, x, statistic="mean")
    {'hidden': 0.5}

    Args:
        model: a built Keras model.
        x: a probe batch of model inputs (arrays or tensors; at most
            `max_samples` examples are used).
        statistic: `"rms"` (default, `sqrt(mean(f'(a)^2))`) or `"mean"`
            (`mean(f'(a))`).
        options: a `keras_linbp.LinearizeOptions` whose selection fields
            say which sites to calibrate (see there). Default: a
            `LinearBackpropModel`'s own options, else the defaults.
        max_samples: the number of examples used.
        **overrides: `LinearizeOptions` fields by name (`sites=[...]`,
            `include_gates=True`, ...), replacing those of `options`.

    Returns:
        `{site path: slope}`, usable as `slope=` of `linearize` and
        `LinearBackpropModel`.

    Raises:
        NonFiniteSlopesError (a `ValueError`): when a slope comes out NaN or
            infinite (non-finite weights or inputs), naming the sites.
        TypeError / ValueError: for an invalid option, naming it.

    The forward runs with `training=True` (batch normalization uses batch
    statistics, as in training); the model's non-trainable variables
    (moving statistics, seed state) are restored afterwards. It runs op
    by op, recurrent layers unrolled (same values), so every time step of
    an RNN cell counts once, on every backend.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"`statistic` must be one of {STATISTICS}, got {statistic!r}.")
    if not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1:
        raise ValueError(f"`max_samples` must be a positive integer, got {max_samples!r}.")
    options = linbp_options.resolve(options, overrides, default=linbp_options.options_of(model))
    x = _probe_data.truncate(x, max_samples)
    all_sites = linbp_sites.find_activation_sites(model, inputs=x)
    selected = linbp_sites.select_sites(all_sites, options)
    captured = {}

    def record(site, original):
        def fn(a, *args, **kwargs):
            captured.setdefault(site.path, []).append((original, a, args, kwargs))
            return original(a, *args, **kwargs)

        return fn

    # Copied through an op: numpy reading a TensorFlow variable directly
    # warns (its `__array__` takes no `copy` argument, NumPy 2).
    saved = [keras.ops.convert_to_numpy(keras.ops.copy(v.value)) for v in model.non_trainable_variables]
    try:
        # Op by op (JAX: no `lax.scan` trace), so the recorded
        # pre-activations inside a loop are values, not tracers.
        with _backend.eager_scope(), _unrolled(model), linbp_sites.swap_sites(selected, record):
            model(x, training=True)
    finally:
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)
    slopes = {}
    for site in selected:
        calls = captured.get(site.path)
        if not calls:
            continue
        derivatives = np.concatenate(
            [_backend.elementwise_derivative(fn, a, args, kwargs).ravel() for fn, a, args, kwargs in calls]
        )
        if statistic == "rms":
            value = float(np.sqrt(np.mean(derivatives**2)))
        else:
            value = float(np.mean(derivatives))
        slopes[site.path] = value
    bad = [path for path, value in slopes.items() if not np.isfinite(value)]
    if bad:
        raise NonFiniteSlopesError(
            f"calibrate_slopes: the probe batch gives non-finite local "
            f"derivatives at {len(bad)} of {len(slopes)} sites ({bad[:5]}"
            f"{' ...' if len(bad) > 5 else ''}): the model's weights or the "
            "probe inputs hold NaN or infinite values (has training diverged?)."
        )
    return slopes
