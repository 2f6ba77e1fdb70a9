"""`GradientFlow`: per-layer loss-gradient norms under exact backprop and
under the rule the model trains with (linear backprop for other models),
in TensorBoard. Its tags are listed in
`keras_linbp.tags`."""

import keras

from keras_linbp import _probe_data
from keras_linbp import _validation
from keras_linbp import options as linbp_options
from keras_linbp import rules
from keras_linbp import sites as linbp_sites
from keras_linbp import tags
from keras_linbp.callbacks import _base
from keras_linbp.callbacks import _eager
from keras_linbp.callbacks import _gradients
from keras_linbp.callbacks import _sites
from keras_linbp.callbacks import _statistics
from keras_linbp.callbacks._tensorflow import tf

__all__ = ["GradientFlow"]


def _kernel(site):
    """The trainable kernel the site's activation follows, or None.

    Only for sites on a layer's activation attribute (`Dense`, `Conv*`,
    RNN cells: `f(kernel-op(x))`): a kernel-less layer (`Activation`,
    `ReLU`, `LinearBackprop`) or an activation called inside a custom
    `call()` has no kernel the activation follows.
    """
    if site.kind != "attribute":
        return None
    kernel = getattr(site.layer, "kernel", None)
    if isinstance(kernel, keras.Variable) and kernel.trainable:
        return kernel
    return None


def _slope_reader(model):
    """`site -> slope` in force for the linear rule of `model`: its
    `site_slope(site)` method, else its `slope`, else 1.0."""
    site_slope = getattr(model, "site_slope", None)
    if callable(site_slope):
        return lambda site: float(site_slope(site))
    slope = float(getattr(model, "slope", 1.0))
    return lambda site: slope


def _trained_rule(model):
    """`(rule class, options)` the probe compares exact backprop with: the
    model's own mode (few-bit on a `backprop="few_bit"` model), linear
    backprop where the model trains exact or is a plain model (what
    `linearize` applies to it)."""
    own = linbp_options.options_of(model)
    if rules.get(own.backprop).exact:
        own = own.replace(backprop="linear")
    return rules.get(own.backprop), own


def _site_function(rule, options, site, original, slope):
    """`original` under the model's `rule` at `site` (`slope`: the slope in
    force, a number or tensor, read where the rule is linear)."""
    made, _ = rule.for_site(site, options)
    if made is None:
        return original  # e.g. no few-bit table: exact in training too
    return made.wrap_with_slope(original, slope)


def _linear_selection(model, all_sites):
    """The sites the linear rule converts: a `LinearBackpropModel`'s
    `linear_sites()`, else the default `select_sites` selection."""
    model_selection = getattr(model, "linear_sites", None)
    if callable(model_selection):
        return list(model_selection())
    return linbp_sites.select_sites(all_sites)


def _exact_rule(site, original):
    """The exact rule: the site's own function, and the plain function for
    sites that fix their own rule."""
    if site.fixed_rule is not None:
        return _sites.plain_function(site, original)
    return original


def _write_gradients(logged, exact, linear, step, histograms, rule_name=tags.LINEAR):
    """Each logged site's gradient norm (and histogram) under both rules,
    to the default summary writer; `rule_name` names the second rule's
    tags."""
    for key, stem, kernel in logged:
        if key not in exact:
            continue  # a kernel-less site inside a loop
        description = tags.GRADIENT_DESCRIPTIONS[tags.INPUT if kernel is None else tags.KERNEL]
        for rule, gradient in ((tags.EXACT, exact[key]), (rule_name, linear[key])):
            flat, norm, finite = _statistics.gradient_statistics(gradient)
            _statistics.write_scalar(tags.gradient_norm(stem, rule), norm, step, description)
            if histograms:
                _statistics.write_histogram(
                    tags.gradient_histogram(stem, rule), flat, finite,
                    step, _statistics.DEFAULT_BUCKETS, description=description,
                )


class GradientFlow(_base.ProbeCallback):
    """Logs how much gradient reaches each layer, exact vs linear backprop.

    Every `freq` epochs, on a fixed probe batch `(x, y)` and the model's
    compiled loss (forward with `training=False`), the callback computes
    the loss gradient twice -- two extra forward and backward passes, in
    one `tf.function` on TensorFlow, eager `jax.grad` / `torch.autograd`
    passes on JAX / PyTorch -- with exact backprop (every site differentiates its
    activation, even sites that train linearly: `LinearBackprop` layers,
    `linbp_*` activations) and with linear backprop, whatever the model
    itself currently trains with. The linear rule converts the sites a
    `LinearBackpropModel` converts (its `linear_sites()`), each with the
    slope in force at that probe (the model's `site_slope(site)`, else its
    `slope`: a change mid-fit or between fits is followed); for any other
    model, the default selection of `keras_linbp.sites.select_sites` (all
    but output, softmax, gate and recurrent sites), slope 1. Sites that fix
    their own rule (`LinearBackprop` layers, binary signs) keep it. The
    results are written with `tf.summary` (on every backend, as
    `keras.callbacks.TensorBoard` does) to `<log_dir>/train`.

    Tags (`keras_linbp.tags`), per activation-site layer
    (`<layer>` as in `SaturationHistograms`):

    - `gradient_flow/<layer>/exact_norm`, `gradient_flow/<layer>/linear_norm`:
      the L2 norm of the loss gradient with respect to the layer's
      `kernel`. Layers without a kernel (`Activation`, `ReLU`,
      `LinearBackprop`, ...) and activations called inside a custom
      `call()` report the gradient with respect to the site's input, the
      pre-activation `a`, instead: one entry per site, the gradient that
      flows back through that activation (not through other uses of `a`,
      such as a skip connection). Each summary's description says which
      (`tags.GRADIENT_DESCRIPTIONS`). A kernel the loss does not reach (a
      `stop_gradient` branch, an output the loss ignores, a layer before a
      sign under exact backprop) logs 0.
    - histograms `gradient_flow/<layer>/exact_gradient`,
      `gradient_flow/<layer>/linear_gradient`.

    A vanishing `exact_norm` in the early layers next to a healthy
    `linear_norm` is the situation linear backprop is designed for.

    Args:
        log_dir: the TensorBoard log directory.
        data: the probe batch with labels: a tuple `(x, y[, sample_weight])`
            (`x` an array, or a list / dict of arrays for several inputs),
            a batched `tf.data.Dataset` or a `keras.utils.PyDataset`.
            Default: the first validation batch of `fit`, else its first
            training batch. Generators and iterators are refused
            (`TypeError`).
        freq: probe every `freq` epochs (an int >= 1; the step is the epoch).
        sites: which sites to log, as in `SaturationHistograms`; the
            linear rule always converts the model's own selection.
        max_samples: as in `SaturationHistograms`.
        histograms: also write the gradient histograms (True or False).

    Raises:
        TypeError, ValueError: for a bad argument, when the callback is
            made; for a `sites` name that matches no site, when `fit`
            starts (as for `SaturationHistograms`).
        ImportError, NotImplementedError: as for `SaturationHistograms`
            (without TensorFlow; on another Keras backend).

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        keras_linbp.callbacks.GradientFlow("logs", data=(x[:256], y[:256])),
    ])
    ```
    """

    _needs_labels = True

    def __init__(self, log_dir, data=None, freq=1, sites=None,
                 max_samples=_probe_data.DEFAULT_MAX_SAMPLES, histograms=True):
        super().__init__(log_dir, data=data, freq=freq, sites=sites, max_samples=max_samples)
        self.histograms = _validation.check_bool("histograms", histograms)
        self._linear_sites = []
        self._linear_index = {}
        self._probe_function = None

    def _build(self):
        self._targets = {}  # site key -> the kernel, or None (d loss / d a)
        per_layer = tags.site_stems(self._selected, per_layer=True)
        self._logged = []  # (key, stem, kernel): one per layer or site
        logged_layers = set()
        for site, layer_stem in zip(self._selected, per_layer):
            key = _sites.site_key(site)
            kernel = _kernel(site)
            self._targets[key] = kernel
            if kernel is None:
                self._logged.append((key, self._tags[key], None))
            elif id(site.layer) not in logged_layers:
                # One entry per layer (an RNN cell's two sites share a kernel).
                logged_layers.add(id(site.layer))
                self._logged.append((key, layer_stem, kernel))
        self._kernels = {key: kernel for key, _, kernel in self._logged if kernel is not None}
        self._input_keys = [key for key, _, kernel in self._logged if kernel is None]
        # Eager: records the inputs (their shapes) once per fit; the gradient
        # passes take d loss / d a through a zero added at each site.
        self._recorder = _sites.SiteRecorder(isolate=not self._eager)
        self._probe_function = None

    def _prepare_fit(self):
        # The model's linear selection, read at each fit (its options may
        # have changed; a new selection is traced anew); the slopes are read
        # at each probe and passed as a tensor (no retrace when they change).
        self._rule, self._rule_options = _trained_rule(self.model)
        self._linear_sites = _linear_selection(self.model, self._all_sites)
        linear_index = {
            _sites.site_key(site): index for index, site in enumerate(self._linear_sites)
        }
        if self._eager:
            self._linear_index = linear_index
            self._eager_inputs = _eager.gradient_targets(
                self.model, self._all_sites, self._recorder, self._probe_x, self._input_keys
            )
            self._probe_function = self._probe_step
        elif linear_index != self._linear_index or self._probe_function is None:
            self._linear_index = linear_index
            # autograph=False: the loops are over Python lists of sites.
            self._probe_function = tf.function(self._probe_step, autograph=False)

    def _skipped_sites(self):
        # Only kernel-less sites need their input recorded.
        return [
            site
            for site in self._recorder.skipped
            if self._targets.get(_sites.site_key(site)) is None
        ]

    def _loss_gradients(self, make_replacement, x, y, sample_weight):
        if self._eager:
            return _gradients.eager_loss_gradients(
                self.model, self._all_sites, make_replacement, x, y, sample_weight,
                self._kernels, self._eager_inputs,
            )
        return _gradients.traced_loss_gradients(
            self.model, self._all_sites, self._recorder, make_replacement, x, y,
            sample_weight, self._kernels, self._input_keys,
        )

    def _linear_rule(self, slopes):
        """The rule training applies: each linear site at its slope
        (`slopes[index]`, a tensor's entry in the traced probe)."""

        def linear_rule(site, original):
            index = self._linear_index.get(_sites.site_key(site))
            if index is None:
                return original
            return _site_function(self._rule, self._rule_options, site, original, slopes[index])

        return linear_rule

    def _probe_step(self, x, y, sample_weight, step, slopes):
        """The probe: traced once on TensorFlow, run as it is on JAX and PyTorch."""
        exact = self._loss_gradients(_exact_rule, x, y, sample_weight)
        linear = self._loss_gradients(self._linear_rule(slopes), x, y, sample_weight)
        with self._writer.as_default(step=step):
            _write_gradients(
                self._logged, exact, linear, step, self.histograms, self._rule.name
            )

    def _probe(self, step):
        # The slope in force at each linear site, in `_linear_sites` order.
        slope_of = _slope_reader(self.model)
        slopes = [slope_of(site) for site in self._linear_sites]
        if not self._eager:
            slopes = tf.constant(slopes, tf.float32)
        self._probe_function(
            self._probe_x, self._probe_y, self._probe_sample_weight, step, slopes
        )

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "freq": self.freq,
            "sites": self.sites,
            "max_samples": self.max_samples,
            "histograms": self.histograms,
        }
