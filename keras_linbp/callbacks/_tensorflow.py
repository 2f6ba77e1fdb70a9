"""TensorFlow for the TensorBoard callbacks, imported on first use.

`SaturationHistograms` and `GradientFlow` write their summaries with
`tf.summary`, as `keras.callbacks.TensorBoard` does on every Keras backend.
On the TensorFlow backend they also run their probe as a `tf.function`; on
JAX and PyTorch TensorFlow only writes the event files. The modules of the
callbacks name TensorFlow as `tf` (the `LazyModule` below), so that
importing them imports no TensorFlow; `require()` (called when a callback is
made) imports it, or raises an `ImportError` saying what to install.
"""

import importlib
import sys

import keras

INSTALL_HINT = (
    "install TensorFlow, which writes TensorBoard's event files "
    "(`pip install tensorflow`, or `pip install tensorflow-cpu` next to JAX or "
    "PyTorch: it is used only to write summaries)"
)


class LazyModule:
    """A module imported at its first attribute access."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        module = importlib.import_module(self._name)
        return getattr(module, attribute)


tf = LazyModule("tensorflow")


def traced():
    """Whether the callbacks' probe is a traced `tf.function` (the
    TensorFlow backend) rather than eager passes (JAX, PyTorch)."""
    return keras.backend.backend() == "tensorflow"


def loaded():
    """Whether TensorFlow has been imported (by anyone) in this process."""
    return sys.modules.get("tensorflow") is not None


def require(owner):
    """Imports TensorFlow and TensorBoard's summary metadata.

    Off the TensorFlow backend, TensorFlow is kept off the GPUs (it only
    writes summaries, on the CPU) when its devices are not set up yet, so
    that it does not take the accelerator's memory from JAX or PyTorch.

    Raises:
        ImportError: naming the callback and what to install.
    """
    try:
        tensorflow = importlib.import_module("tensorflow")
        importlib.import_module("tensorboard.plugins.histogram.metadata")
    except ImportError as error:
        raise ImportError(
            f"{owner} writes TensorBoard summaries with tf.summary (as "
            f"keras.callbacks.TensorBoard does on every Keras backend) and could "
            f"not import it ({error}): {INSTALL_HINT}."
        ) from error
    if not traced():
        try:
            tensorflow.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):
            pass  # devices already set up (the user's own TensorFlow use)
    return tensorflow
