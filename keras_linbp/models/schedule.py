"""What changes a `LinearBackpropModel`'s backward rule during `fit`.

- `BackpropSchedule`: switches `model.backprop` between the model's own
  rule (linear, few-bit, ...) and exact backprop by epoch (public; also `keras_linbp.callbacks.BackpropSchedule`);
- `_AutoSlopes`: the callback `fit` adds with `slope="auto"`, which
  calibrates the slopes at the start of `fit` (and of each epoch).
"""

import warnings

import keras

from keras_linbp import rules
from keras_linbp.calibration import NonFiniteSlopesError
from keras_linbp.options import BACKPROP_MODES

__all__ = ["BackpropSchedule"]


class _AutoSlopes(keras.callbacks.Callback):
    """Calibrates `slope="auto"` at the start of `fit` (and each epoch)."""

    def __init__(self, probe_x, every_epoch):
        super().__init__()
        self.probe_x = probe_x
        self.every_epoch = every_epoch

    def on_train_begin(self, logs=None):
        self.model.calibrate_slopes(self.probe_x)

    def on_epoch_begin(self, epoch, logs=None):
        if not (self.every_epoch and epoch > 0):
            return
        try:
            self.model.calibrate_slopes(self.probe_x)
        except NonFiniteSlopesError as error:
            # Training diverged (NaN weights): keep the slopes in force and
            # let the loss say so, as Keras would (TerminateOnNaN stops it).
            warnings.warn(
                f"Epoch {epoch}: recalibrating the slopes failed, the previous "
                f"ones stay in force. {error}",
                stacklevel=2,
            )


def _is_linear_backprop_model(model):
    # Read through the options, not `isinstance`: this module sits below
    # `model.py`, whose `fit` adds `_AutoSlopes`.
    return isinstance(model, keras.Model) and callable(getattr(model, "linearize_options", None))


class BackpropSchedule(keras.callbacks.Callback):
    """Sets `model.backprop` at the start of every epoch.

    >>> schedule = BackpropSchedule(3)
    >>> [schedule.backprop_for_epoch(epoch) for epoch in range(5)]
    ['linear', 'linear', 'linear', 'exact', 'exact']
    >>> alternate = BackpropSchedule(lambda epoch: "linear" if epoch % 2 == 0 else "exact")
    >>> [alternate.backprop_for_epoch(epoch) for epoch in range(3)]
    ['linear', 'exact', 'linear']

    Args:
        schedule: either an int `N` -- the model's own rule for the first
            `N` epochs (epochs `0 .. N-1`: linear backprop, or few-bit on a
            `backprop="few_bit"` model; linear on a model made exact),
            exact backprop from epoch `N` on -- or a callable `epoch ->
            mode` returning one of `keras_linbp.rules.MODES` (`epoch` counts
            from 0, as in `keras.callbacks.LearningRateScheduler`).
        verbose: 1 prints a line whenever the rule changes.

    The model must be a `keras_linbp.LinearBackpropModel`; the new rule
    takes effect at the epoch's first step (the training step is retraced).
    In `fit` (a sketch):

    ```python
    # Linear backprop for 3 epochs, then exact backprop to fine-tune.
    model.fit(x, y, epochs=10, callbacks=[BackpropSchedule(3)])
    ```
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if isinstance(schedule, bool) or not (
            isinstance(schedule, int) or callable(schedule)
        ):
            raise ValueError(
                "`schedule` must be an int N (the model's own rule for the first "
                "N epochs, then exact) or a callable epoch -> one of "
                f"{BACKPROP_MODES}; got {schedule!r}."
            )
        if isinstance(schedule, int) and schedule < 0:
            raise ValueError(f"`schedule` must be >= 0 epochs, got {schedule}.")
        if verbose not in (0, 1) or isinstance(verbose, float):
            raise ValueError(f"`verbose` must be 0 or 1 (or False / True); got {verbose!r}.")
        self.schedule = schedule
        self.verbose = int(verbose)
        # The rule an int schedule trains with before epoch N: the model's
        # own, read at `on_train_begin` (linear until then).
        self.own_rule = "linear"

    def backprop_for_epoch(self, epoch):
        """The mode (`"linear"`, `"few_bit"`, `"exact"`, ...) for a 0-based epoch."""
        if isinstance(self.schedule, int):
            return self.own_rule if epoch < self.schedule else "exact"
        rule = self.schedule(epoch)
        if rule not in BACKPROP_MODES:
            raise ValueError(
                f"The schedule returned {rule!r} for epoch {epoch}; expected "
                f"one of {BACKPROP_MODES}."
            )
        return rule

    def on_train_begin(self, logs=None):
        if not _is_linear_backprop_model(self.model):
            raise ValueError(
                "BackpropSchedule needs a keras_linbp.LinearBackpropModel, got "
                f"{type(self.model).__name__}. Wrap the model with "
                "`keras_linbp.LinearBackpropModel.from_model(model)`."
            )
        if not rules.get(self.model.backprop).exact:
            self.own_rule = self.model.backprop

    def on_epoch_begin(self, epoch, logs=None):
        rule = self.backprop_for_epoch(epoch)
        if rule != self.model.backprop:
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: BackpropSchedule sets backprop={rule!r}.")
            self.model.backprop = rule
