"""Shared machinery of the inspection callbacks (`SaturationHistograms`,
`GradientFlow`): the probe batch, the log directory, site selection and
the per-site statistics computed on device.

Both callbacks run ONE extra forward on a fixed probe batch, outside the
training step, with the model's activation sites swapped (via
`keras_linbp.sites.swap_sites`) for wrappers that record the
pre-activation `a`. Everything after that -- statistics, histograms, the
`tf.summary` writes -- happens inside one `tf.function`, so nothing but a
few small arrays (for the image summary) leaves the device.
"""

import inspect
import os
import tempfile
import warnings

import keras
import tensorflow as tf

from keras_linbp import activations as linbp_activations
from keras_linbp import layers as linbp_layers
from keras_linbp import sites as linbp_sites

DEFAULT_THRESHOLD = 0.1
DEFAULT_MAX_SAMPLES = 256
DEFAULT_BUCKETS = 30


# --- the probe batch ---------------------------------------------------------


def _first_element(dataset):
    for element in dataset.take(1):
        return element
    raise ValueError("The probe dataset is empty.")


def _first_batch(data):
    """The first batch of `data`: arrays, a tuple `(x, y[, sample_weight])`,
    a `tf.data.Dataset` (batched, as for `fit`) or a `keras.utils.PyDataset`."""
    if isinstance(data, tf.data.Dataset):
        return _first_element(data)
    if isinstance(data, keras.utils.PyDataset):
        return data[0]
    return data


def _truncate(structure, max_samples):
    if max_samples is None:
        return structure

    def cut(t):
        return None if t is None else t[:max_samples]

    return keras.tree.map_structure(cut, structure)


def _to_tensors(structure):
    def convert(t):
        if t is None:
            return None
        t = tf.convert_to_tensor(t)
        return t

    return keras.tree.map_structure(convert, structure)


def unpack_probe(data, max_samples):
    """`(x, y, sample_weight)` tensors of the first batch of `data`, cut to
    `max_samples` examples."""
    batch = _first_batch(data)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    x, y, sample_weight = _truncate((x, y, sample_weight), max_samples)
    return _to_tensors(x), _to_tensors(y), _to_tensors(sample_weight)


def _running_fit_locals(model):
    """The local variables of the `Model.fit` call that is running `model`.

    Keras 3 gives callbacks no handle on the data `fit` iterates over, so
    the callbacks look for the `fit` frame on the call stack (they are
    called from it, in `on_train_begin`). Returns None when not found.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            f_locals = frame.f_locals
            if (
                frame.f_code.co_name == "fit"
                and f_locals.get("self") is model
                and "epoch_iterator" in f_locals
            ):
                return dict(f_locals)
            frame = frame.f_back
    finally:
        del frame
    return None


def probe_from_fit(model):
    """The first validation batch of the running `fit`, else its first
    training batch (a fresh pass over the data: training is not affected).

    Raises:
        ValueError: if the running `fit` (and so its data) cannot be found,
            or its data is a Python generator (reading a batch would take
            it from training).
    """
    fit_locals = _running_fit_locals(model)
    if fit_locals is None:
        raise ValueError(
            "No probe data: pass `data=` (an array, a tuple (x, y), a "
            "tf.data.Dataset or a PyDataset) -- without it the callback "
            "takes the first validation (else training) batch of the "
            "running `model.fit`, which it could not find."
        )
    validation = fit_locals.get("validation_data")
    one_shot = (
        "a Python generator is consumed by reading it; pass `data=` "
        "(e.g. one batch as a tuple (x, y))."
    )
    if validation is not None:
        if isinstance(validation, (tf.data.Dataset, keras.utils.PyDataset)):
            return validation
        if inspect.isgenerator(validation) or hasattr(validation, "__next__"):
            raise ValueError(f"The validation data is an iterator: {one_shot}")
        batch_size = (
            fit_locals.get("validation_batch_size")
            or fit_locals.get("batch_size")
            or 32
        )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(validation)
        return _truncate((x, y, sample_weight), batch_size)
    adapter = fit_locals["epoch_iterator"].data_adapter
    if type(adapter).__name__ == "GeneratorDataAdapter":
        raise ValueError(f"The training data is an iterator: {one_shot}")
    py_dataset = getattr(adapter, "py_dataset", None)
    if py_dataset is not None:
        return py_dataset
    return adapter.get_tf_dataset()


# --- the log directory -------------------------------------------------------


def check_train_dir(log_dir, owner):
    """Creates `<log_dir>/train` (where `keras.callbacks.TensorBoard`
    writes training summaries), checks it is writable, returns its path.

    Raises:
        PermissionError: if the directory cannot be created or written.
    """
    train_dir = os.path.join(os.fspath(log_dir), "train")
    try:
        if not train_dir.startswith(("gs://", "s3://", "hdfs://")):
            os.makedirs(train_dir, exist_ok=True)
            # tf.summary defers errors to the first flush (and then only
            # logs them): try a real write now, before training starts.
            with tempfile.NamedTemporaryFile(dir=train_dir, prefix=".write_test"):
                pass
        else:
            tf.io.gfile.makedirs(train_dir)
    except OSError as error:
        raise PermissionError(
            f"{owner} cannot write its summaries to {train_dir!r}: {error}. "
            "Pass a writable `log_dir`."
        ) from error
    return train_dir


# --- sites -------------------------------------------------------------------


def choose_sites(model, sites):
    """The sites to inspect: all (output and softmax included, and sites
    that are already linear) or those `sites` names, as
    `keras_linbp.sites.select_sites` understands it.

    Raises:
        ValueError: if a name in `sites` matches no site.
    """
    all_sites = linbp_sites.find_activation_sites(model)
    if sites is None:
        return all_sites
    return linbp_sites.select_sites(
        all_sites,
        sites=sites,
        include_output=True,
        include_softmax=True,
        include_fixed=True,
    )


def site_key(site):
    return (id(site.layer), site.attribute)


def site_tags(sites, per_layer_only=False):
    """A unique tag stem per site: the layer name; the path where two
    layers share a name; `/<attribute>` appended where one layer has two
    sites (RNN cells: `activation` and `recurrent_activation`) unless
    `per_layer_only` (then such sites share their layer's stem)."""
    layers_by_name = {}
    for site in sites:
        layers_by_name.setdefault(site.name, set()).add(id(site.layer))
    stems = [
        site.path if len(layers_by_name[site.name]) > 1 else site.name
        for site in sites
    ]
    per_layer = {}
    for site in sites:
        per_layer[id(site.layer)] = per_layer.get(id(site.layer), 0) + 1
    tags = {}
    for site, stem in zip(sites, stems):
        if per_layer[id(site.layer)] > 1 and not per_layer_only:
            stem = f"{stem}/{site.attribute}"
        tags[site_key(site)] = stem
    return tags


def plain_function(site, original):
    """The site's activation with its ordinary (exact) gradient.

    For sites that are already linear (a `LinearBackprop` layer, a
    `linbp_*` activation, an `ops.linear_backprop` / `straight_through`
    wrapper) this is the forward function inside them.
    """
    if site.kind in ("call", "layer call") and isinstance(site.layer, linbp_layers.LinearBackprop):
        forward = site.layer.forward
        return lambda inputs, *args, **kwargs: forward(inputs)
    name = getattr(original, "_linbp_activation", None)
    if name is not None:
        return linbp_activations.ACTIVATIONS[name].forward
    wrapped = getattr(original, "forward", None)
    if callable(wrapped) and (hasattr(original, "slope") or hasattr(original, "clip")):
        return wrapped
    return original


def saturation_kind(site, plain):
    """(kind, max_derivative): the table's saturation kind and `max|f'|`,
    `"softmax"`, or `"unknown"` (max None) outside the table."""
    if site.is_softmax:
        return "softmax", None
    spec = site.spec or linbp_activations.find_spec(plain)
    if spec is None:
        return "unknown", None
    return spec.saturation, spec.max_derivative


def warn_no_sites(owner, model):
    notes = linbp_sites.find_unconverted(model)
    hint = f" Custom layers: {[path for path, _ in notes]}." if notes else ""
    warnings.warn(
        f"{owner}: the model {model.name!r} has no activation sites to "
        f"inspect; nothing will be logged.{hint}",
        stacklevel=3,
    )


class SiteRecorder:
    """Makes `swap_sites` replacements that keep each site's input.

    Only tensors of the graph being traced are kept: a site inside a
    `tf.while_loop` (an RNN cell) lives in the loop's body graph and cannot
    be read outside it; such sites are listed in `skipped`.
    """

    def __init__(self, replace=None, on_input=None):
        self.inputs = {}
        self.extra_args = {}
        self.skipped = []
        self._replace = replace
        self._on_input = on_input
        self._nested = set()
        self._graph = None

    def start(self):
        self.inputs.clear()
        self.extra_args.clear()
        self._nested = set()
        self._graph = tf.compat.v1.get_default_graph()

    def __call__(self, site, original):
        function = self._replace(site, original) if self._replace else original
        key = site_key(site)

        def record(inputs, *args, **kwargs):
            if tf.compat.v1.get_default_graph() is not self._graph:
                # Also drop what an earlier call outside the loop recorded
                # (Keras's RNN runs the cell once on step 0 for shapes):
                # one time step would pass for the whole sequence.
                self._nested.add(key)
                self.inputs.pop(key, None)
                if all(site_key(s) != key for s in self.skipped):
                    self.skipped.append(site)
            elif key not in self._nested:
                if self._on_input is not None:
                    self._on_input(inputs)
                self.inputs[key] = inputs
                self.extra_args[key] = (args, kwargs)
            return function(inputs, *args, **kwargs)

        return record


# --- statistics --------------------------------------------------------------


def local_derivative(plain, a):
    """`|f'(a)|` elementwise, by autodiff of the plain activation (correct
    for elementwise functions: the gradient of `sum f(a)` is `f'(a)`)."""
    with tf.GradientTape() as tape:
        tape.watch(a)
        h = plain(a)
    d = tape.gradient(h, a, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return h, tf.abs(d)


def fraction(condition, valid, count):
    """Share of `valid` entries where `condition` holds; NaN when there are
    none (undefined)."""
    hits = tf.reduce_sum(tf.cast(condition & valid, tf.float32))
    return tf.where(count > 0, hits / tf.maximum(count, 1.0), float("nan"))


def site_statistics(a, h, d, kind, max_derivative, threshold):
    """Statistics of one site, as float32 tensors of static shape.

    Units whose pre-activation, activation or derivative is NaN/Inf are
    excluded (masked out) from everything but `nonfinite`, the count of
    NaN/Inf pre-activations.

    Returns:
        `(scalars, values, valid)`: scalar tensors by name; the flattened
        `pre_activation`, `activation` and (unless softmax) `derivative`
        values; the mask of the units that count.
    """
    a = tf.reshape(tf.cast(a, tf.float32), [-1])
    h = tf.reshape(tf.cast(h, tf.float32), [-1])
    valid = tf.math.is_finite(a) & tf.math.is_finite(h)
    if d is not None:
        d = tf.reshape(tf.cast(d, tf.float32), [-1])
        valid &= tf.math.is_finite(d)
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    abs_a = tf.abs(a)
    scalars = {
        "nonfinite": tf.reduce_sum(tf.cast(~tf.math.is_finite(a), tf.int64)),
        "mean_abs_pre_activation": tf.where(
            count > 0,
            tf.reduce_sum(tf.where(valid, abs_a, 0.0)) / tf.maximum(count, 1.0),
            float("nan"),
        ),
    }
    values = {"pre_activation": a, "activation": h}
    if d is None:
        return scalars, values, valid
    values["derivative"] = d
    if kind in ("bounded", "unknown"):
        if max_derivative is None:
            # Outside the table: measure against the largest slope seen.
            reference = tf.reduce_max(tf.where(valid, d, 0.0))
        else:
            reference = tf.constant(max_derivative, tf.float32)
        scalars["saturated_fraction"] = fraction(d < threshold * reference, valid, count)
    if kind in ("rectifier", "unknown"):
        scalars["dead_fraction"] = fraction(tf.equal(d, 0.0), valid, count)
    if kind == "binary":
        # Where a clipped straight-through estimator blocks the gradient.
        scalars["clipped_fraction"] = fraction(abs_a > 1.0, valid, count)
    return scalars, values, valid


def _masked_range(values, valid):
    """(min, max, any) of the valid entries, float64."""
    values = tf.cast(values, tf.float64)
    any_valid = tf.reduce_any(valid)
    low = tf.reduce_min(tf.where(valid, values, tf.constant(float("inf"), tf.float64)))
    high = tf.reduce_max(tf.where(valid, values, tf.constant(float("-inf"), tf.float64)))
    zero = tf.constant(0.0, tf.float64)
    low = tf.where(any_valid, low, zero)
    high = tf.where(any_valid, high, zero)
    return values, low, high


def _bucket_counts(values, valid, low, width, bucket_count):
    index = tf.cast(tf.floor((values - low) / width), tf.int32)
    index = tf.clip_by_value(index, 0, bucket_count - 1)
    return tf.math.bincount(
        index,
        weights=tf.cast(valid, tf.float64),
        minlength=bucket_count,
        maxlength=bucket_count,
        dtype=tf.float64,
    )


def histogram_buckets(values, valid, bucket_count):
    """TensorBoard's histogram tensor (rows `[left, right, count]`, float64)
    of the `valid` entries of `values`, the same layout
    `tf.summary.histogram` writes.

    Not `tf.summary.histogram` itself: it needs a boolean-masked (dynamic
    shape) input and builds two `tf.cond`s per call, which made tracing
    the probe take seconds; this is static-shape and branch-free. Empty
    input gives zero rows; a single distinct value puts all counts in the
    last bucket with `left == right` (as TensorBoard does).
    """
    values, low, high = _masked_range(values, valid)
    spread = high - low
    single = tf.equal(spread, 0.0)
    one = tf.constant(1.0, tf.float64)
    width = tf.where(single, one, spread / bucket_count)
    counts = _bucket_counts(values, valid, low, width, bucket_count)
    total = tf.reduce_sum(counts)
    edges = low + width * tf.range(bucket_count + 1, dtype=tf.float64)
    left = tf.where(single, low, edges[:-1])
    right = tf.where(single, low, edges[1:])
    last = tf.one_hot(bucket_count - 1, bucket_count, dtype=tf.float64)
    counts = tf.where(single, total * last, counts)
    return tf.stack([left, right, counts], axis=1)


def write_histogram(tag, values, valid, step, bucket_count):
    """Writes `histogram_buckets(...)` as a TensorBoard histogram summary."""
    from tensorboard.plugins.histogram import metadata as histogram_metadata

    return tf.summary.write(
        tag,
        histogram_buckets(values, valid, bucket_count),
        step=step,
        metadata=histogram_metadata.create_summary_metadata(display_name=None, description=None),
    )


def image_histogram(values, valid, bins):
    """Bucket counts of the valid `values` over `[min, max]` (for the image
    summary): `(counts, [low, high])`."""
    values, low, high = _masked_range(values, valid)
    high = tf.where(high > low, high, low + tf.constant(1.0, tf.float64))
    counts = _bucket_counts(values, valid, low, (high - low) / bins, bins)
    return counts, tf.stack([low, high])


# --- the common callback -----------------------------------------------------


class ProbeCallback(keras.callbacks.Callback):
    """Base of the inspection callbacks: resolves the log directory, the
    probe batch and the sites at `on_train_begin`, and calls
    `self._probe(step)` every `freq` epochs (and every `batch_freq`
    training batches when set)."""

    _needs_labels = False

    def __init__(self, log_dir, data=None, freq=1, sites=None,
                 max_samples=DEFAULT_MAX_SAMPLES, batch_freq=None):
        super().__init__()
        if int(freq) < 1:
            raise ValueError(f"`freq` counts epochs and must be >= 1; got {freq}.")
        if batch_freq is not None and int(batch_freq) < 1:
            raise ValueError(f"`batch_freq` must be None or >= 1; got {batch_freq}.")
        if max_samples is not None and int(max_samples) < 1:
            raise ValueError(f"`max_samples` must be None or >= 1; got {max_samples}.")
        self.log_dir = os.fspath(log_dir)
        self.data = data
        self.freq = int(freq)
        self.batch_freq = None if batch_freq is None else int(batch_freq)
        self.sites = sites
        self.max_samples = None if max_samples is None else int(max_samples)
        self._writer = None
        self._selected = []
        self._probe_x = self._probe_y = self._probe_sample_weight = None
        self._probe_function = None
        self._batches_seen = 0
        self._signature = None
        self._warned_skipped = False
        if self.batch_freq is not None:
            # A batch hook only when asked for: any override of
            # on_train_batch_end turns off Keras's asynchronous batch-callback
            # dispatch, which costs more than the probe itself.
            self.on_train_batch_end = self._on_train_batch_end_probe

    # Subclasses: build what they need from the sites, run one probe.
    def _build(self):
        raise NotImplementedError

    def _probe(self, step):
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        owner = type(self).__name__
        # Cheap checks first: nothing of the training has run yet. The writer
        # is kept across `fit` calls: the traced probe function captures it.
        train_dir = check_train_dir(self.log_dir, owner)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(train_dir)
        selected = choose_sites(self.model, self.sites)
        self._batches_seen = 0
        if not selected:
            self._selected = []
            warn_no_sites(owner, self.model)
            return
        data = self.data if self.data is not None else probe_from_fit(self.model)
        x, y, sample_weight = unpack_probe(data, self.max_samples)
        if self._needs_labels and y is None:
            raise ValueError(
                f"{owner} needs labels to compute the loss: pass "
                "`data=(x, y)` or train with labelled data."
            )
        self._probe_x, self._probe_y, self._probe_sample_weight = x, y, sample_weight
        # Another fit of the same model reuses the traced probe function.
        signature = (id(self.model), [site_key(site) for site in selected])
        if self._probe_function is None or signature != self._signature:
            self._selected = selected
            self._signature = signature
            self._tags = site_tags(selected)
            self._build()

    def _skipped_sites(self):
        recorder = getattr(self, "_recorder", None)
        return recorder.skipped if recorder is not None else []

    def _active(self):
        return bool(self._selected) and self._writer is not None

    def on_epoch_end(self, epoch, logs=None):
        # Same schedule as keras.callbacks.TensorBoard(histogram_freq=...).
        if self._active() and self.batch_freq is None and epoch % self.freq == 0:
            self._run(epoch)

    def _on_train_batch_end_probe(self, batch, logs=None):
        self._batches_seen += 1
        if self._active() and self.batch_freq and self._batches_seen % self.batch_freq == 0:
            self._run(self._batches_seen)

    def _run(self, step):
        self._probe(tf.constant(step, tf.int64))
        skipped = self._skipped_sites()
        if skipped and not self._warned_skipped:
            self._warned_skipped = True
            warnings.warn(
                f"{type(self).__name__}: sites inside a loop (RNN cells) cannot "
                f"be recorded and are left out: "
                f"{[f'{s.path} ({s.attribute})' for s in skipped]}.",
                stacklevel=2,
            )

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
