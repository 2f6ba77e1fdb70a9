"""The callbacks on every Keras backend: `BackpropSchedule` works and imports
no TensorFlow; the TensorBoard callbacks are made (their numbers are checked
in `backend_numbers_test.py`)."""

import sys

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.all_backends

BACKEND = keras.backend.backend()


def test_tensorboard_callbacks_are_made_on_every_backend(tmp_path):
    from keras_linbp.callbacks import GradientFlow
    from keras_linbp.callbacks import SaturationHistograms

    for callback in (SaturationHistograms, GradientFlow):
        made = callback(str(tmp_path))
        assert made.log_dir == str(tmp_path)


def test_backprop_schedule_imports_no_tensorflow_off_tensorflow():
    if BACKEND == "tensorflow":
        pytest.skip("TensorFlow is the backend")
    import subprocess

    code = (
        "import sys; from keras_linbp.callbacks import BackpropSchedule; "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_backprop_schedule_switches_the_rule(tmp_path):
    from keras_linbp.callbacks import BackpropSchedule
    from keras_linbp.models import LinearBackpropModel

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    model = LinearBackpropModel(inputs, keras.layers.Dense(2)(hidden))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rules = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: rules.append(model.backprop)
    )
    x = np.random.default_rng(3).standard_normal((8, 4)).astype("float32")
    y = np.arange(8) % 2
    model.fit(x, y, epochs=3, batch_size=4, verbose=0,
              callbacks=[BackpropSchedule(2), record])
    assert rules == ["linear", "linear", "exact"]
