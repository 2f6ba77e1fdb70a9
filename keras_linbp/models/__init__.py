"""`LinearBackpropModel` and what it is made of.

- `model`: `LinearBackpropModel` (options, training step, config) and
  `FunctionalLinearBackpropModel`, what `LinearBackpropModel(inputs,
  outputs)` builds;
- `auto_slope`: the `slope="auto"` state (calibration, recalibration in
  `fit`);
- `wrap`: how `LinearBackpropModel.from_model` wraps an existing model;
- `schedule`: `BackpropSchedule` and the auto-slope calibration callback.
"""

from keras_linbp.calibration import NonFiniteSlopesError
from keras_linbp.models.auto_slope import RECALIBRATE_MODES
from keras_linbp.models.model import FunctionalLinearBackpropModel
from keras_linbp.models.model import LinearBackpropModel
from keras_linbp.models.schedule import BackpropSchedule
from keras_linbp.options import BACKPROP_MODES
from keras_linbp.options import LinearizeOptions

__all__ = [
    "BACKPROP_MODES",
    "RECALIBRATE_MODES",
    "BackpropSchedule",
    "FunctionalLinearBackpropModel",
    "LinearBackpropModel",
    "LinearizeOptions",
    "NonFiniteSlopesError",
]
