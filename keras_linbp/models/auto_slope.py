"""`slope="auto"`: the per-site slopes a `LinearBackpropModel` calibrates
on a probe batch, where its traced step reads them, and when `fit`
recalibrates them."""

import keras

from keras_linbp import _probe_data
from keras_linbp import _validation
from keras_linbp.calibration import calibrate_slopes
from keras_linbp.models.schedule import _AutoSlopes

RECALIBRATE_MODES = ("epoch", "fit", "never")


def check_recalibrate(value):
    return _validation.check_choice("recalibrate", value, RECALIBRATE_MODES)


class AutoSlopeMixin:
    """The `slope="auto"` state of a `LinearBackpropModel`.

    Expects of the class it is mixed into: `slope` and `backprop`,
    `linearize_options()` and `_retrace_train_function()`. Call
    `_init_auto_slope(recalibrate, calibrated_slopes)` after
    `keras.Model.__init__`.
    """

    def _init_auto_slope(self, recalibrate, calibrated_slopes):
        self._recalibrate = check_recalibrate(recalibrate)
        # TensorFlow: the "auto" slopes the traced step reads (untracked:
        # they are options, saved in the config, not weights).
        object.__setattr__(self, "_linbp_slope_variables", None)
        self._calibrated_slopes = None
        self.calibrated_slopes = calibrated_slopes

    @property
    def recalibrate(self):
        """When `slope="auto"` recalibrates: `"epoch"`, `"fit"` or `"never"`."""
        return self._recalibrate

    def calibrate_slopes(self, x, statistic="rms"):
        """Calibrates the per-site slopes `slope="auto"` uses, on inputs `x`.

        Runs one forward pass on (at most 256 examples of) `x` and sets
        `calibrated_slopes` to `{site path: sqrt(mean(f'(a)^2))}` for the
        linear sites (see `keras_linbp.calibrate_slopes`). Takes effect at
        the next training step.

        Returns:
            The new `calibrated_slopes`.
        """
        slopes = calibrate_slopes(self, x, statistic=statistic)
        self.calibrated_slopes = slopes
        return slopes

    @property
    def calibrated_slopes(self):
        """The `"auto"` slopes in force, `{site path: slope}` (None before
        the first calibration). Assigning a dict takes effect at the next
        step (on TensorFlow without retracing the step when the same sites
        are calibrated again: the traced step reads them from variables)."""
        return self._calibrated_slopes

    @calibrated_slopes.setter
    def calibrated_slopes(self, value):
        value = None if not value else _validation.check_slope(dict(value), allow_dict=True)
        if value != self._calibrated_slopes:
            self._calibrated_slopes = value
            self._hold_calibrated_slopes()

    def _hold_calibrated_slopes(self):
        """With `slope="auto"`, puts the calibrated slopes where the step
        reads them: into the TensorFlow variables when they hold the same
        sites (no retrace), else into new ones (or, on JAX/PyTorch, into a
        new trace of the step)."""
        value = self._calibrated_slopes
        if self.slope != "auto" or value is None:
            return
        variables = self._linbp_slope_variables
        if variables is not None and set(variables) == set(value):
            for path, slope in value.items():
                variables[path].assign(slope)
            return
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            object.__setattr__(self, "_linbp_slope_variables", {
                path: tf.Variable(slope, dtype="float32", trainable=False, name="linbp_slope")
                for path, slope in value.items()
            })
        # New sites (or JAX/PyTorch, whose compiled steps take no captured
        # state): the step is traced again with the new slopes.
        self._retrace_train_function()

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`; with `slope="auto"` it first calibrates the
        slopes on the first batch of `x` (and again each epoch unless
        `recalibrate` says otherwise)."""
        if self.slope == "auto" and self.backprop == "linear" and self._recalibrate != "never":
            probe = _probe_data.first_inputs(x, _probe_data.DEFAULT_MAX_SAMPLES)
            if probe is None:
                if self.calibrated_slopes is None:
                    raise ValueError(
                        '`slope="auto"` calibrates on the first batch of `x`, '
                        "but `x` is a generator (reading it would take a "
                        "batch from training). Call "
                        "`model.calibrate_slopes(x_batch)` before `fit`, or "
                        "pass a tf.data.Dataset, a PyDataset or arrays."
                    )
            else:
                auto = _AutoSlopes(probe, every_epoch=self._recalibrate == "epoch")
                callbacks = [auto] + list(callbacks or [])
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)
