"""keras_linbp: linear backprop for Keras 3 (TensorFlow, JAX and PyTorch backends).

Forward pass: activations as usual, `h = f(a)`. Backward pass: the
activation derivative is skipped, `g <- g` instead of `g <- g * f'(a)`
(Yazdani 2018, "Linear Backprop in non-linear networks").
"""

# The one version number: setup.py reads it from this line.
__version__ = "0.2.0"

from keras_linbp import activations
from keras_linbp import layers
from keras_linbp import ops
from keras_linbp import rules
from keras_linbp import tables
from keras_linbp import sites
from keras_linbp.activations import linear_backprop
from keras_linbp.activations import straight_through
from keras_linbp.ops import few_bit
from keras_linbp.ops import from_output
from keras_linbp.tables import few_bit_table
from keras_linbp.layers import LinearBackprop
from keras_linbp import binary
from keras_linbp import models
from keras_linbp.models import LinearBackpropModel
from keras_linbp.linearize import linearize
from keras_linbp.calibration import calibrate_slopes
from keras_linbp.options import LinearizeOptions
from keras_linbp.summary import linbp_summary

__all__ = [
    "LinearBackprop",
    "LinearBackpropModel",
    "LinearizeOptions",
    "activations",
    "binary",
    "calibrate_slopes",
    "callbacks",
    "few_bit",
    "few_bit_table",
    "from_output",
    "layers",
    "linbp_summary",
    "linear_backprop",
    "linearize",
    "models",
    "ops",
    "rules",
    "sites",
    "straight_through",
    "tables",
]


def __getattr__(name):
    # The callbacks write TensorBoard summaries with TensorFlow; importing
    # them lazily keeps `import keras_linbp` free of TensorFlow on the JAX
    # and PyTorch backends.
    if name == "callbacks":
        import importlib

        return importlib.import_module("keras_linbp.callbacks")
    raise AttributeError(f"module 'keras_linbp' has no attribute {name!r}")
