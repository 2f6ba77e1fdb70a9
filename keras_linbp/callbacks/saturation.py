"""`SaturationHistograms`: activation, pre-activation and local-derivative
histograms and saturation fractions of every activation site, in
TensorBoard. Its tags are listed in `keras_linbp.tags`."""

from keras_linbp import _probe_data
from keras_linbp import _validation
from keras_linbp import sites as linbp_sites
from keras_linbp import tags
from keras_linbp.callbacks import _base
from keras_linbp.callbacks import _eager
from keras_linbp.callbacks import _gradients
from keras_linbp.callbacks import _histogram_grid
from keras_linbp.callbacks import _sites
from keras_linbp.callbacks import _statistics
from keras_linbp.callbacks._tensorflow import tf

__all__ = ["SaturationHistograms", "IMAGE_BINS", "IMAGE_TIME_BUDGET"]

IMAGE_BINS = 50
# `image=True` draws the grid at a logged epoch only while drawing has cost
# at most this share of the training time so far.
IMAGE_TIME_BUDGET = 0.03


class SaturationHistograms(_base.ProbeCallback):
    """Logs how saturated each activation site is, for TensorBoard.

    Every `freq` epochs the callback runs one extra inference forward
    (`training=False`) on a fixed probe batch and records, for each
    activation site (see `keras_linbp.sites.find_activation_sites`; the
    output layer included), its pre-activation `a`, activation `f(a)` and
    local derivative `|f'(a)|` (by autodiff of the plain activation). On
    TensorFlow the statistics are computed on device in one `tf.function`;
    on JAX and PyTorch the forward and the same statistics run eagerly.
    They are written with `tf.summary` (on every backend, as
    `keras.callbacks.TensorBoard` does) to `<log_dir>/train` -- the
    directory `keras.callbacks.TensorBoard(log_dir)` writes its training
    summaries to, so both show as one run.

    Tags (`keras_linbp.tags`; `<layer>` is the layer name, the
    path `outer/inner` where two layers share a name, with `/<attribute>`
    added where one layer has two sites, as an LSTM cell):

    - `saturation/<layer>/saturated_fraction` (bounded units: sigmoid,
      tanh, ...): the fraction with `|f'(a)| < threshold * max|f'|`.
    - `saturation/<layer>/dead_fraction` (rectifiers: relu, elu, ...):
      the fraction with `f'(a) == 0`.
    - `saturation/<layer>/clipped_fraction` (binary units: sign): the
      fraction with `|a| > 1`, where a clipped straight-through estimator
      passes no gradient.
    - `saturation/<layer>/mean_abs_pre_activation`: mean `|a|`.
    - `saturation/<layer>/nonfinite`: count of NaN/Inf pre-activations
      (they are excluded from everything else).
    - histograms `activations/<layer>/pre_activation`,
      `activations/<layer>/activation`, `activations/<layer>/derivative`
      (softmax sites: no derivative; it is not elementwise).
    - image `activations/histogram_grid`: one activation histogram per
      site (needs matplotlib; skipped with a warning without it).

    Activations outside the table (`site.saturation == "unknown"`) get both
    fractions, `saturated_fraction` measured against the largest `|f'|`
    in the probe batch. Sites inside a loop (RNN cells) cannot be recorded
    and are left out, with one warning.

    The step is the epoch (0-based, as `keras.callbacks.TensorBoard`
    uses). With `batch_freq=N` the callback instead probes every N training
    batches and the step is the number of training batches seen in this
    `fit` call (no epoch-end probes then, so each tag has one x-axis).

    Args:
        log_dir: the TensorBoard log directory (as given to
            `keras.callbacks.TensorBoard`).
        data: the probe batch: an array or a dict of arrays (`x`); for a
            model with several inputs, a list or tuple of one array per
            input (`x`); a tuple `(x, y[, sample_weight])`; a batched
            `tf.data.Dataset` or a `keras.utils.PyDataset` (its first
            batch, read as `fit` reads it). Default: the first validation
            batch of `fit`, else its first training batch. Generators and
            iterators are refused (`TypeError`): reading them consumes them.
        freq: probe every `freq` epochs (an int >= 1).
        sites: which sites to log: None (all), a list of layer names or
            paths (a name matching no site raises `ValueError` listing the
            sites), a regex (matched against the path; one matching nothing
            gives a warning naming it) or a callable `site -> bool`.
        threshold: a bounded unit counts as saturated when
            `|f'(a)| < threshold * max|f'|`, in (0, 1). Default 0.1: tanh
            beyond `|a| > 1.82`, sigmoid beyond `|a| > 3.64`.
        max_samples: use at most this many examples of the probe batch
            (an int >= 1, or None for all).
        batch_freq: if set (an int >= 1), probe every `batch_freq` training
            batches instead of at epoch ends. Callbacks run between
            executions, so with `compile(steps_per_execution=S)` it must be
            a multiple of S (else `ValueError` at the start of `fit`); a
            probe runs at the first execution end at or past each multiple
            of `batch_freq` (later than the multiple only after a partial
            last execution of an epoch), and its step is the number of
            batches trained when it ran.
        buckets: number of histogram buckets (an int >= 1).
        image: the histogram-grid image. `True` (default): at every probe,
            as long as drawing has cost at most 3 % of the training time so
            far (`IMAGE_TIME_BUDGET`) -- matplotlib needs 0.1-0.2 s of CPU
            per image, so on sub-second epochs it skips probes to stay
            within that budget, on longer ones it draws every probe. An int
            N: exactly every N-th probe (the first included), whatever it
            costs. `False`: never. The image is drawn in a separate
            low-priority process (started at the first image), so training
            neither waits for it nor shares the GIL with it. All images are
            written, and the process ended, when `fit` ends -- also when it
            raises or is interrupted (then within a fraction of a second).

    Raises:
        TypeError, ValueError: for an argument outside what is listed above,
            when the callback is made; for a `sites` name matching no site,
            when `fit` starts (`set_model`), before any step.
        ImportError: without TensorFlow, which writes the summaries (on
            every backend, as for `keras.callbacks.TensorBoard`).
        NotImplementedError: on a Keras backend other than TensorFlow, JAX
            and PyTorch.

    Example:

    ```python
    model.fit(
        x, y, epochs=10, validation_data=(x_val, y_val),
        callbacks=[
            keras.callbacks.TensorBoard("logs"),
            keras_linbp.callbacks.SaturationHistograms("logs"),
        ],
    )
    ```
    """

    def __init__(
        self,
        log_dir,
        data=None,
        freq=1,
        sites=None,
        threshold=_statistics.DEFAULT_THRESHOLD,
        max_samples=_probe_data.DEFAULT_MAX_SAMPLES,
        batch_freq=None,
        buckets=_statistics.DEFAULT_BUCKETS,
        image=True,
    ):
        super().__init__(
            log_dir,
            data=data,
            freq=freq,
            sites=sites,
            max_samples=max_samples,
            batch_freq=batch_freq,
        )
        self.threshold = _validation.check_open_fraction("threshold", threshold)
        self.buckets = _validation.check_int("buckets", buckets, minimum=1)
        self.image = _validation.check_flag_or_int(
            "image", image, minimum=1, int_means="every N-th probe"
        )
        self._images = _histogram_grid.HistogramGridImages(
            self.image, IMAGE_TIME_BUDGET, type(self).__name__
        )

    def _build(self):
        self._recorder = _sites.SiteRecorder()
        self._plain = {}
        self._kinds = {}
        for site in self._selected:
            key = _sites.site_key(site)
            plain = _sites.plain_function(site, linbp_sites.original_function(site))
            self._plain[key] = plain
            self._kinds[key] = _sites.saturation_kind(site, plain)
        self._kind_names = {
            self._tags[key]: kind for key, (kind, _) in self._kinds.items()
        }
        if self._eager:
            self._probe_function = self._probe_step
        else:
            # autograph=False: the loops are over Python lists of sites.
            self._probe_function = tf.function(self._probe_step, autograph=False)

    def _forward(self, x):
        """One inference forward recording the selected sites' inputs."""
        if self._eager:
            _eager.forward(self.model, self._selected, self._recorder, x)
            return
        self._recorder.start()
        with linbp_sites.swap_sites(self._selected, self._recorder):
            self.model(x, training=False)

    def _recorded_sites(self):
        """`(stem, a, f, kind, max_derivative)` for each selected site the
        last recording forward reached: its tag stem, its input, `f(t)` =
        the site's plain function with the call's extra arguments, its
        saturation kind and largest derivative."""
        for site in self._selected:
            key = _sites.site_key(site)
            if key not in self._recorder.inputs:
                continue
            args, kwargs = self._recorder.extra_args[key]
            plain = self._plain[key]

            def f(t, plain=plain, args=args, kwargs=kwargs):
                return plain(t, *args, **kwargs)

            kind, max_derivative = self._kinds[key]
            yield self._tags[key], self._recorder.inputs[key], f, kind, max_derivative

    def _write_site(self, stem, scalars, values, valid, step):
        """One site's scalars and histograms."""
        for name, value in scalars.items():
            _statistics.write_scalar(tags.saturation_scalar(stem, name), value, step)
        for name, value in values.items():
            _statistics.write_histogram(
                tags.activation_histogram(stem, name), value, valid, step, self.buckets
            )

    def _probe_step(self, x, step):
        """The probe: traced once on TensorFlow, run as it is on JAX and
        PyTorch. `f(a)` and `|f'(a)|` per site (the backend's autodiff of
        the plain function), then the statistics; returns the image's
        bucket counts."""
        self._forward(x)
        image_counts = {}
        with self._writer.as_default(step=step):
            for stem, a, f, kind, max_derivative in self._recorded_sites():
                if kind == "softmax":
                    with _eager.no_gradients():
                        h, d = f(a), None
                else:
                    h, d = _gradients.activation_and_derivative(f, a)
                scalars, values, valid = _statistics.site_statistics(
                    a, h, d, kind, max_derivative, self.threshold
                )
                self._write_site(stem, scalars, values, valid, step)
                if self.image:
                    image_counts[stem] = _statistics.image_histogram(
                        values[tags.ACTIVATION], valid, IMAGE_BINS
                    )
        return image_counts

    def _probe(self, step):
        image_counts = self._probe_function(self._probe_x, step)
        if self.image:
            self._images.after_probe(self._writer, image_counts, self._kind_names, step)

    def _prepare_fit(self):
        self._images.start_fit()

    def _finish_fit(self):
        self._images.finish_fit()

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "freq": self.freq,
            "sites": self.sites,
            "threshold": self.threshold,
            "max_samples": self.max_samples,
            "batch_freq": self.batch_freq,
            "buckets": self.buckets,
            "image": self.image,
        }
