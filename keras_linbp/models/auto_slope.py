"""`slope="auto"`: the per-site slopes a `LinearBackpropModel` calibrates
on a probe batch, where its traced step reads them, and when `fit`
recalibrates them."""

import keras

from keras_linbp import _probe_data
from keras_linbp import _validation
from keras_linbp import rules
from keras_linbp.calibration import calibrate_slopes
from keras_linbp.models.schedule import _AutoSlopes

RECALIBRATE_MODES = ("epoch", "fit", "never")


def check_recalibrate(value):
    return _validation.check_choice("recalibrate", value, RECALIBRATE_MODES)


def _recalibrate_needs_auto(recalibrate, slope):
    return (
        f'`recalibrate={recalibrate!r}` applies only with `slope="auto"`, but '
        f"slope={slope!r}. Pass `slope=\"auto\"`, or leave `recalibrate` at "
        'its default; to switch to "auto" later, assign `model.slope = "auto"` '
        "and then `model.recalibrate`."
    )


def _slope_variables(slopes):
    """One float32 scalar variable per site (`{path: variable}`): a
    `tf.Variable` on TensorFlow, where the traced step captures it and no
    tracking is needed; a non-trainable `keras.Variable` elsewhere."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return {
            path: tf.Variable(slope, dtype="float32", trainable=False, name="linbp_slope")
            for path, slope in slopes.items()
        }
    # Distinct names: `get_state_tree()` keys variables by path.
    return {
        path: keras.Variable(slope, dtype="float32", trainable=False, name=f"linbp_slope_{index}")
        for index, (path, slope) in enumerate(slopes.items())
    }


class AutoSlopeMixin:
    """The `slope="auto"` state of a `LinearBackpropModel`.

    Expects of the class it is mixed into: `slope` and `backprop`,
    `linearize_options()` and `_retrace_train_function()`. Call
    `_init_auto_slope(recalibrate, calibrated_slopes)` after
    `keras.Model.__init__`.

    The calibrated slopes are held twice: as numbers (`calibrated_slopes`,
    saved in the config) and in one float32 variable per site, which the
    traced step reads, so recalibrating changes no trace. TensorFlow's
    traced step captures its `tf.Variable`s. Keras's JAX step is stateless,
    it sees only the model's variables passed in: there the slopes are
    `keras.Variable`s listed in `model.variables` (hence in
    `non_trainable_variables`, like a `SeedGenerator`'s state) but not in
    `weights`, so `get_weights()`, `set_weights()` and the weights file
    are those of the plain model. PyTorch lists them the same way.
    """

    def _init_auto_slope(self, recalibrate, calibrated_slopes):
        recalibrate = check_recalibrate(recalibrate)
        if recalibrate != RECALIBRATE_MODES[0] and self.slope != "auto":
            raise ValueError(_recalibrate_needs_auto(recalibrate, self.slope))
        self._recalibrate = recalibrate
        object.__setattr__(self, "_linbp_slope_variables", None)
        self._calibrated_slopes = None
        self.calibrated_slopes = calibrated_slopes

    @property
    def recalibrate(self):
        """When `slope="auto"` recalibrates: `"epoch"`, `"fit"` or
        `"never"`. Assignable while `slope == "auto"`."""
        return self._recalibrate

    @recalibrate.setter
    def recalibrate(self, value):
        value = check_recalibrate(value)
        if value != self._recalibrate and self.slope != "auto":
            raise ValueError(_recalibrate_needs_auto(value, self.slope))
        self._recalibrate = value

    @property
    def variables(self):
        # The slope variables are state the step reads (see the class
        # docstring), not weights.
        variables = super().variables
        slope_variables = getattr(self, "_linbp_slope_variables", None)
        if slope_variables and keras.backend.backend() != "tensorflow":
            variables = variables + list(slope_variables.values())
        return variables

    def calibrate_slopes(self, x, statistic="rms"):
        """Calibrates the per-site slopes `slope="auto"` uses, on inputs `x`.

        Runs one forward pass on (at most 256 examples of) `x` and sets
        `calibrated_slopes` to `{site path: sqrt(mean(f'(a)^2))}` for the
        linear sites (see `keras_linbp.calibrate_slopes`). Takes effect at
        the next training step.

        Returns:
            The new `calibrated_slopes`.
        """
        self._sync_jax_state()
        slopes = calibrate_slopes(self, x, statistic=statistic)
        self.calibrated_slopes = slopes
        return slopes

    @property
    def calibrated_slopes(self):
        """The `"auto"` slopes in force, `{site path: slope}` (None before
        the first calibration). Assigning a dict takes effect at the next
        step, without retracing the step when the same sites are
        calibrated again (the traced step reads them from variables)."""
        return self._calibrated_slopes

    @calibrated_slopes.setter
    def calibrated_slopes(self, value):
        value = None if not value else _validation.check_slope(dict(value), allow_dict=True)
        if value != self._calibrated_slopes:
            self._calibrated_slopes = value
            self._hold_calibrated_slopes()

    def _sync_jax_state(self):
        # Mid-epoch, Keras's JAX `fit` holds the variables' values in its
        # own state (the model's are purged): write them back, and mark the
        # state synced so that the next step is given the variables' values
        # again, new slopes included (what Keras's callbacks rely on).
        sync = getattr(self, "jax_state_sync", None)
        if sync is not None:
            sync()

    def _hold_calibrated_slopes(self):
        """With `slope="auto"`, puts the calibrated slopes where the step
        reads them: into the variables when they hold the same sites (no
        retrace), else into new ones (and a new trace of the step)."""
        value = self._calibrated_slopes
        if self.slope != "auto" or value is None:
            return
        self._sync_jax_state()
        variables = self._linbp_slope_variables
        if variables is not None and set(variables) == set(value):
            for path, slope in value.items():
                variables[path].assign(slope)
            return
        object.__setattr__(self, "_linbp_slope_variables", _slope_variables(value))
        # New sites: the step reads other variables (on JAX it is also
        # given a longer state), so it is traced again.
        self._retrace_train_function()

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`; with `slope="auto"` it first calibrates the
        slopes on the first batch of `x` (and again each epoch unless
        `recalibrate` says otherwise)."""
        if self.slope == "auto" and rules.get(self.backprop).reads_slope and self._recalibrate != "never":
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
