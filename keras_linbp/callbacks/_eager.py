"""The callbacks' probe passes on the JAX and PyTorch backends.

On TensorFlow a probe is one traced `tf.function` (see `saturation.py`,
`gradient_flow.py`). On JAX and PyTorch it runs eagerly, with the same site
swap (`keras_linbp.sites.swap_sites`) and the same `_sites.SiteRecorder`:

- `forward`: one inference forward recording each site's input (and the
  extra arguments it was called with);
- `gradient_targets`: from one such forward, the site inputs (their shapes
  and call numbers) that `_gradients.eager_loss_gradients` differentiates
  with respect to.

Both run the model's call inside a `keras.StatelessScope`, so that the
probe changes no variable (a compiled loss's trackers, for one).
"""

import contextlib

import keras

from keras_linbp import sites as linbp_sites


@contextlib.contextmanager
def no_gradients():
    """No autodiff graph for an inference pass (PyTorch); nothing elsewhere."""
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            yield
    else:
        yield


def forward(model, sites, recorder, x):
    """One inference forward of `model` on `x` with `sites` recorded."""
    recorder.start()
    with no_gradients(), keras.StatelessScope():
        with linbp_sites.swap_sites(sites, recorder):
            model(x, training=False)


def input_spec(value):
    """`(shape, dtype, device)` of a recorded input: what its zero needs."""
    return tuple(value.shape), value.dtype, getattr(value, "device", None)


def gradient_targets(model, sites, recorder, x, input_keys):
    """`{site key: (input_spec, call number)}` of the sites in `input_keys`
    that one recording forward on `x` reached (the inputs' shapes are those
    of every probe); `recorder` is cleared again afterwards (no activation
    stays alive between probes)."""
    forward(model, sites, recorder, x)
    site_inputs = {
        key: (input_spec(recorder.inputs[key]), recorder.calls[key])
        for key in input_keys
        if key in recorder.inputs
    }
    recorder.start()
    return site_inputs
