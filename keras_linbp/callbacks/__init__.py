"""Keras callbacks: backprop schedules and TensorBoard inspection.

- `BackpropSchedule`: switches a `LinearBackpropModel` between linear and
  exact backprop by epoch (every backend).
- `SaturationHistograms`: activation histograms and saturation fractions.
- `GradientFlow`: loss-gradient norms per layer, exact vs linear backprop.

The last two run their probe as a `tf.function` and write `tf.summary`
events: they need Keras's TensorFlow backend (elsewhere they raise
`NotImplementedError` when made) and are imported on first use, so that
`BackpropSchedule` imports no TensorFlow on the JAX and PyTorch backends.
The TensorBoard tags they write are listed in `keras_linbp.callbacks.tags`.
"""

import importlib

from keras_linbp.callbacks import tags
from keras_linbp.callbacks.schedule import BackpropSchedule

__all__ = ["BackpropSchedule", "GradientFlow", "SaturationHistograms", "tags"]

_TENSORFLOW_CALLBACKS = {
    "GradientFlow": "keras_linbp.callbacks.gradient_flow",
    "SaturationHistograms": "keras_linbp.callbacks.saturation",
}


def __getattr__(name):
    module = _TENSORFLOW_CALLBACKS.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_linbp.callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(_TENSORFLOW_CALLBACKS))
