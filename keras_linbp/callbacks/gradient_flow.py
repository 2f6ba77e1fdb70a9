"""`GradientFlow`: per-layer loss-gradient norms under exact backprop and
under linear backprop, in TensorBoard."""

import tensorflow as tf

from keras_linbp import ops as linbp_ops
from keras_linbp import sites as linbp_sites
from keras_linbp.callbacks import _probe


def _kernel(layer):
    """The layer's own trainable variable named `kernel`, or None."""
    for variable in layer._trainable_variables:
        if variable.name == "kernel":
            return variable
    return None


class GradientFlow(_probe.ProbeCallback):
    """Logs how much gradient reaches each layer, exact vs linear backprop.

    Every `freq` epochs, on a fixed probe batch `(x, y)` and the model's
    compiled loss (`model.compute_loss`, forward with `training=False`),
    the callback computes the loss gradient twice -- with exact backprop
    (every site differentiates its activation, even sites that train
    linearly: `LinearBackprop` layers, `linbp_*` activations) and with
    linear backprop -- whatever the model itself currently trains with.
    The linear rule converts the sites a `LinearBackpropModel` converts
    (its `linear_sites()` and `slope`); for any other model, the default
    selection of `keras_linbp.sites.select_sites` (all sites but the
    output layer's and softmax), slope 1; sites that are linear by
    construction stay linear. Both run
    in one `tf.function`; the results are written with `tf.summary` to
    `<log_dir>/train`.

    Tags, per activation-site layer (`<layer>` as in
    `SaturationHistograms`):

    - `gradient_flow/<layer>/exact_norm`, `gradient_flow/<layer>/linear_norm`:
      the L2 norm of the loss gradient with respect to the layer's
      `kernel`. Layers without a kernel (`Activation`, `ReLU`,
      `LinearBackprop`, ...) report the gradient with respect to their
      input, the pre-activation `a`, instead.
    - histograms `gradient_flow/<layer>/exact_gradient`,
      `gradient_flow/<layer>/linear_gradient`.

    A vanishing `exact_norm` in the early layers next to a healthy
    `linear_norm` is the situation linear backprop is designed for.

    Args:
        log_dir: the TensorBoard log directory.
        data: the probe batch with labels: a tuple `(x, y[, sample_weight])`,
            a batched `tf.data.Dataset` or a `keras.utils.PyDataset`.
            Default: the first validation batch of `fit`, else its first
            training batch.
        freq: probe every `freq` epochs (the step is the epoch).
        sites: which sites to log (as in `SaturationHistograms`); the
            linear rule always converts the default selection.
        max_samples: use at most this many examples of the probe batch.
        histograms: also write the gradient histograms.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        keras_linbp.callbacks.GradientFlow("logs", data=(x[:256], y[:256])),
    ])
    ```
    """

    _needs_labels = True

    def __init__(
        self,
        log_dir,
        data=None,
        freq=1,
        sites=None,
        max_samples=_probe.DEFAULT_MAX_SAMPLES,
        histograms=True,
    ):
        super().__init__(
            log_dir, data=data, freq=freq, sites=sites, max_samples=max_samples
        )
        self.histograms = bool(histograms)

    def _build(self):
        all_sites = linbp_sites.find_activation_sites(self.model)
        model_selection = getattr(self.model, "linear_sites", None)
        if callable(model_selection):
            # A LinearBackpropModel: its own selection and slope.
            linear = model_selection()
            slope = float(getattr(self.model, "slope", 1.0))
        else:
            linear = linbp_sites.select_sites(all_sites)
            slope = 1.0
        linear_keys = {_probe.site_key(site) for site in linear}
        self._all_sites = all_sites
        self._layer_tags = _probe.site_tags(self._selected, per_layer_only=True)
        self._kernels = {
            _probe.site_key(site): _kernel(site.layer) for site in self._selected
        }

        def exact(site, original):
            # Sites that fix their own rule get their plain function.
            if site.fixed_rule is not None:
                return _probe.plain_function(site, original)
            return original

        def linear_rule(site, original):
            if _probe.site_key(site) in linear_keys:
                return linbp_ops.linear_backprop(original, slope=slope)
            return original

        self._exact_recorder = _probe.SiteRecorder(exact, on_input=self._watch)
        self._linear_recorder = _probe.SiteRecorder(linear_rule, on_input=self._watch)
        self._recorder = self._exact_recorder
        self._tape = None
        # autograph=False: the loops are over Python lists of sites.
        self._probe_function = tf.function(self._probe_graph, autograph=False)

    def _skipped_sites(self):
        # Only kernel-less sites need their input recorded.
        return [
            site
            for site in self._exact_recorder.skipped
            if self._kernels.get(_probe.site_key(site)) is None
        ]

    def _watch(self, inputs):
        # Kernel-less sites report d loss / d a: the tape must watch `a`
        # even where it does not depend on a variable (a first layer).
        self._tape.watch(inputs)

    def _gradients(self, recorder, x, y, sample_weight):
        model = self.model
        recorder.start()
        with linbp_sites.swap_sites(self._all_sites, recorder):
            with tf.GradientTape() as tape:
                self._tape = tape
                y_pred = model(x, training=False)
                loss = model._compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
                )
                # Keras divides the loss by the replica count under a
                # tf.distribute strategy; the probe runs on the whole batch.
                loss *= tf.cast(
                    tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype
                )
            self._tape = None
        targets = {}
        for site in self._selected:
            key = _probe.site_key(site)
            target = self._kernels[key]
            if target is None:
                target = recorder.inputs.get(key)
            if target is not None:
                targets[key] = target
        gradients = tape.gradient(
            loss, targets, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return gradients

    def _probe_graph(self, x, y, sample_weight, step):
        exact = self._gradients(self._exact_recorder, x, y, sample_weight)
        linear = self._gradients(self._linear_recorder, x, y, sample_weight)
        logged_layers = set()
        with self._writer.as_default(step=step):
            for site in self._selected:
                key = _probe.site_key(site)
                if key not in exact or id(site.layer) in logged_layers:
                    continue
                # One entry per layer (an RNN cell's two sites share a kernel).
                logged_layers.add(id(site.layer))
                tag = self._layer_tags[key]
                for rule, gradient in (("exact", exact[key]), ("linear", linear[key])):
                    gradient = tf.cast(gradient, tf.float32)
                    tf.summary.scalar(
                        f"gradient_flow/{tag}/{rule}_norm", tf.norm(gradient), step=step
                    )
                    if self.histograms:
                        flat = tf.reshape(gradient, [-1])
                        _probe.write_histogram(
                            f"gradient_flow/{tag}/{rule}_gradient",
                            flat,
                            tf.math.is_finite(flat),
                            step,
                            _probe.DEFAULT_BUCKETS,
                        )

    def _probe(self, step):
        self._probe_function(
            self._probe_x, self._probe_y, self._probe_sample_weight, step
        )

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "freq": self.freq,
            "sites": self.sites,
            "max_samples": self.max_samples,
            "histograms": self.histograms,
        }
