"""Keras callbacks: backprop schedules and TensorBoard inspection.

- `BackpropSchedule`: switches a `LinearBackpropModel` between linear and
  exact backprop by epoch (every backend).
- `SaturationHistograms`: activation histograms and saturation fractions.
- `GradientFlow`: loss-gradient norms per layer, exact vs linear backprop.

The last two work on the TensorFlow, JAX and PyTorch backends and write
`tf.summary` events, as `keras.callbacks.TensorBoard` does on every
backend: on TensorFlow their probe is one `tf.function`; on JAX and
PyTorch it runs eagerly (`jax.grad` / `torch.autograd`) and TensorFlow
only writes the summaries. TensorFlow is imported when one of them is made
(an `ImportError` saying what to install without it), not when this
package or their modules are imported. The TensorBoard tags they write are
listed in `keras_linbp.tags`, also importable as `keras_linbp.callbacks.tags`.
"""

import importlib
import sys

from keras_linbp import tags
from keras_linbp.models import schedule
from keras_linbp.models.schedule import BackpropSchedule

__all__ = ["BackpropSchedule", "GradientFlow", "SaturationHistograms", "tags"]

# Modules that lived here until 0.3: `import keras_linbp.callbacks.tags`
# (or `.schedule`) still gives the one module, not a copy.
sys.modules[__name__ + ".tags"] = tags
sys.modules[__name__ + ".schedule"] = schedule

_PROBE_CALLBACKS = {
    "GradientFlow": "keras_linbp.callbacks.gradient_flow",
    "SaturationHistograms": "keras_linbp.callbacks.saturation",
}


def __getattr__(name):
    module = _PROBE_CALLBACKS.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_linbp.callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(_PROBE_CALLBACKS))
