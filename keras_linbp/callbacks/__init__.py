"""Keras callbacks: backprop schedules and TensorBoard inspection.

- `BackpropSchedule`: switches a `LinearBackpropModel` between linear and
  exact backprop by epoch.
- `SaturationHistograms`: activation histograms and saturation fractions.
- `GradientFlow`: loss-gradient norms per layer, exact vs linear backprop.

The TensorBoard tags the last two write are listed in
`keras_linbp.callbacks.tags`.
"""

from keras_linbp.callbacks import tags
from keras_linbp.callbacks.gradient_flow import GradientFlow
from keras_linbp.callbacks.saturation import SaturationHistograms
from keras_linbp.callbacks.schedule import BackpropSchedule

__all__ = ["BackpropSchedule", "GradientFlow", "SaturationHistograms", "tags"]
