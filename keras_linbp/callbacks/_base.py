"""`ProbeCallback`: what the inspection callbacks (`SaturationHistograms`,
`GradientFlow`) share -- checked arguments, the log directory, the probe
batch and the sites resolved at `on_train_begin`, the probe schedule, and
the end of a `fit` however it ends.

Each probe runs on a fixed probe batch, outside the training step, with
the model's activation sites swapped (`keras_linbp.sites.swap_sites`) for
wrappers that record their input `a`. On TensorFlow the statistics and the
`tf.summary` writes happen inside one traced function, so nothing but a few
small arrays (for the image summary) leaves the device; on JAX and PyTorch
the passes run eagerly (`_eager`), the same `keras.ops` statistics
(`_statistics`) run on their tensors and TensorFlow only writes the
summaries, as `keras.callbacks.TensorBoard` does there. Only the
derivatives are taken per backend (`_gradients`). How many passes a probe
runs is the subclass's: `SaturationHistograms` one inference forward,
`GradientFlow` two forward and backward passes.
"""

import threading
import warnings

import keras

from keras_linbp import _probe_data
from keras_linbp import _validation
from keras_linbp import tags
from keras_linbp.callbacks import _fit_watch
from keras_linbp.callbacks import _log_dir
from keras_linbp.callbacks import _sites
from keras_linbp.callbacks import _tensorflow
from keras_linbp.callbacks._tensorflow import tf


class ProbeCallback(keras.callbacks.Callback):
    """Base of the inspection callbacks: resolves the log directory, the
    probe batch and the sites at `on_train_begin`, and calls
    `self._probe(step)` every `freq` epochs (or every `batch_freq` training
    batches when set).

    Subclasses implement `_build()` (from `self._selected`, the sites to
    inspect, and `self._tags`, their tag stems) and `_probe(step)`; they
    may extend `_prepare_fit()` (each `fit`, after the probe batch) and
    `_finish_fit()` (each `fit`'s end, however it ends, possibly on another
    thread).

    The arguments taken here, and the errors raised here, are documented
    once for users, in `SaturationHistograms`; `GradientFlow` refers to it.
    """

    _needs_labels = False

    def __init__(self, log_dir, data=None, freq=1, sites=None,
                 max_samples=_probe_data.DEFAULT_MAX_SAMPLES, batch_freq=None):
        super().__init__()
        _validation.require_supported_backend(type(self).__name__)
        # tf.summary writes the events on every backend, as for
        # keras.callbacks.TensorBoard: an ImportError now, saying what to
        # install, rather than at the start of training.
        _tensorflow.require(type(self).__name__)
        self._eager = not _tensorflow.traced()
        self.log_dir = _validation.check_directory("log_dir", log_dir)
        _probe_data.check_data(data)
        self.data = data
        self.freq = _validation.check_int("freq", freq, minimum=1)
        self.batch_freq = _validation.check_optional_int(
            "batch_freq", batch_freq, minimum=1, none_means="probes at epoch ends, every `freq` epochs"
        )
        sites = _validation.check_inspected_sites(sites)
        # A list, as the config reads back from JSON.
        self.sites = list(sites) if isinstance(sites, tuple) else sites
        self.max_samples = _validation.check_optional_int(
            "max_samples", max_samples, minimum=1, none_means="the whole probe batch"
        )
        self._writer = None
        self._selected = []
        self._all_sites = []
        self._tags = {}
        self._probe_x = self._probe_y = self._probe_sample_weight = None
        self._signature = None
        self._built = False
        self._warned_skipped = False
        self._batches_seen = 0
        self._epoch_start_batches = 0
        self._last_probe_batches = 0
        self._fit_watch = None
        self._finish_lock = threading.Lock()
        self._fit_running = False
        if self.batch_freq is not None:
            # A batch hook only when asked for: any override of
            # on_train_batch_end turns off Keras's asynchronous batch-callback
            # dispatch, which costs more than the probe itself.
            self.on_train_batch_end = self._on_train_batch_end_probe
            self.on_epoch_begin = self._on_epoch_begin_count

    # Subclasses: build what they need from the sites, run one probe.
    def _build(self):
        raise NotImplementedError

    def _probe(self, step):
        raise NotImplementedError

    def _prepare_fit(self):
        """Called at each `on_train_begin` once the probe batch is known."""

    def _finish_fit(self):
        """Called once at the end of each `fit`, however it ends."""

    # --- the start of a fit -------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        # The model is known from here (Keras sets it when `fit` starts,
        # before any step): a misnamed site is reported now. A model that
        # is not built yet is checked at `on_train_begin`, once built.
        if isinstance(self.sites, (list, tuple)) and getattr(model, "built", False):
            _sites.check_names(model, self.sites, type(self).__name__)

    def _check_steps_per_execution(self):
        steps_per_execution = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if self.batch_freq is not None and self.batch_freq % steps_per_execution:
            raise ValueError(
                f"{type(self).__name__}: `batch_freq={self.batch_freq}` is not a "
                f"multiple of the model's `steps_per_execution={steps_per_execution}`: "
                "the callback runs between executions only, so it cannot probe "
                f"every {self.batch_freq} batches. Pass a multiple of "
                f"{steps_per_execution} as `batch_freq`, or compile with a "
                "`steps_per_execution` that divides it."
            )

    def on_train_begin(self, logs=None):
        # What an earlier fit that raised left behind (its watch may not
        # have noticed yet).
        self._end_fit()
        owner = type(self).__name__
        # Cheap checks first: nothing of the training has run yet. The writer
        # is kept across `fit` calls: the traced probe function captures it.
        train_dir = _log_dir.train_directory(self.log_dir, owner)
        self._check_steps_per_execution()
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(train_dir)
        self._batches_seen = self._epoch_start_batches = self._last_probe_batches = 0
        self._fit_running = True
        self._fit_watch = _fit_watch.FitWatch.start(self.model, self._on_fit_gone)
        probe = None
        if not self.model.built:
            # A subclassed model is built by its first training step, after
            # this hook; finding its sites needs it built: build it now on
            # the probe batch, as that step would.
            probe = self._probe_batch(owner)
            self.model(probe[0], training=False)
        all_sites, selected = _sites.choose_sites(self.model, self.sites, owner)
        if not selected:
            self._selected = []
            return
        x, y, sample_weight = probe or self._probe_batch(owner)
        if self._needs_labels and y is None:
            raise ValueError(
                f"{owner} needs labels to compute the loss: pass "
                "`data=(x, y)` or train with labelled data."
            )
        self._probe_x, self._probe_y, self._probe_sample_weight = x, y, sample_weight
        # Another fit of the same model reuses what was built (and traced).
        signature = (id(self.model), tuple(_sites.site_key(site) for site in selected))
        if not self._built or signature != self._signature:
            self._selected = selected
            self._all_sites = all_sites
            self._signature = signature
            self._tags = self._site_tags(selected)
            self._build()
            self._built = True
        self._prepare_fit()

    def _probe_batch(self, owner):
        """`(x, y, sample_weight)` of `data=`, else of the running `fit`."""
        if self.data is not None:
            return _probe_data.probe_batch(
                self.data, self.model, self.max_samples, owner, given=True
            )
        return _probe_data.probe_batch(
            _probe_data.probe_from_fit(self.model), self.model,
            self.max_samples, owner, given=False,
        )

    def _site_tags(self, selected):
        stems = tags.site_stems(selected)
        return {_sites.site_key(site): stem for site, stem in zip(selected, stems)}

    # --- the schedule -------------------------------------------------------

    def _active(self):
        return bool(self._selected) and self._writer is not None

    def on_epoch_end(self, epoch, logs=None):
        # Same schedule as keras.callbacks.TensorBoard(histogram_freq=...).
        if self._active() and self.batch_freq is None and epoch % self.freq == 0:
            self._run(epoch)

    def _on_epoch_begin_count(self, epoch, logs=None):
        self._epoch_start_batches = self._batches_seen

    def _on_train_batch_end_probe(self, batch, logs=None):
        # `batch` is the index of the last batch of the execution that
        # ended (steps_per_execution > 1 runs several per call); the last
        # execution of an epoch may be partial.
        in_epoch = batch + 1
        steps = (self.params or {}).get("steps")
        if steps:
            in_epoch = min(in_epoch, steps)
        self._batches_seen = self._epoch_start_batches + in_epoch
        # Probe at the first execution end at or past each multiple.
        if (
            self._active()
            and self._batches_seen // self.batch_freq
            > self._last_probe_batches // self.batch_freq
        ):
            self._last_probe_batches = self._batches_seen
            self._run(self._batches_seen)

    def _skipped_sites(self):
        recorder = getattr(self, "_recorder", None)
        return recorder.skipped if recorder is not None else []

    def _run(self, step):
        self._probe(int(step) if self._eager else tf.constant(step, tf.int64))
        skipped = self._skipped_sites()
        if skipped and not self._warned_skipped:
            self._warned_skipped = True
            warnings.warn(
                f"{type(self).__name__}: sites inside a loop (RNN cells) cannot "
                f"be recorded and are left out: "
                f"{[f'{s.path} ({s.attribute})' for s in skipped]}.",
                stacklevel=2,
            )

    # --- the end of a fit ---------------------------------------------------

    def on_train_end(self, logs=None):
        self._end_fit()

    def _end_fit(self):
        """Ends the current fit's watch, then finishes the fit (once)."""
        watch, self._fit_watch = self._fit_watch, None
        if watch is not None:
            watch.stop()
        self._finish()

    def _on_fit_gone(self):
        # On the watch's thread: the fit ended without on_train_end.
        self._finish()

    def _finish(self):
        with self._finish_lock:
            if not self._fit_running:
                return
            self._fit_running = False
            self._finish_fit()
            if self._writer is not None:
                self._writer.flush()
