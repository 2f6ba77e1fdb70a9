"""The per-site statistics and histograms.

On the TensorFlow backend they are TensorFlow ops of static shape, run on
the device inside the callbacks' traced probe function; nothing leaves the
device but what the callers return. On JAX and PyTorch the same statistics
are computed in numpy (`*_numpy`, the same definitions and the same
histogram layout) on the probe's values, and written with `write_histogram`
(TensorFlow only writes the summary).
"""

import numpy as np

from keras_linbp import tags
from keras_linbp.callbacks._tensorflow import tf

DEFAULT_THRESHOLD = 0.1
DEFAULT_BUCKETS = 30


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
        tags.NONFINITE: tf.reduce_sum(tf.cast(~tf.math.is_finite(a), tf.int64)),
        tags.MEAN_ABS_PRE_ACTIVATION: tf.where(
            count > 0,
            tf.reduce_sum(tf.where(valid, abs_a, 0.0)) / tf.maximum(count, 1.0),
            float("nan"),
        ),
    }
    values = {tags.PRE_ACTIVATION: a, tags.ACTIVATION: h}
    if d is None:
        return scalars, values, valid
    values[tags.DERIVATIVE] = d
    if kind in ("bounded", "unknown"):
        if max_derivative is None:
            # Outside the table: measure against the largest slope seen.
            reference = tf.reduce_max(tf.where(valid, d, 0.0))
        else:
            reference = tf.constant(max_derivative, tf.float32)
        scalars[tags.SATURATED_FRACTION] = fraction(d < threshold * reference, valid, count)
    if kind in ("rectifier", "unknown"):
        scalars[tags.DEAD_FRACTION] = fraction(tf.equal(d, 0.0), valid, count)
    if kind == "binary":
        # Where a clipped straight-through estimator blocks the gradient.
        scalars[tags.CLIPPED_FRACTION] = fraction(abs_a > 1.0, valid, count)
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


def write_histogram(tag, values, valid, step, bucket_count, description=None):
    """Writes `histogram_buckets(...)` as a TensorBoard histogram summary."""
    from tensorboard.plugins.histogram import metadata as histogram_metadata

    if isinstance(values, np.ndarray):
        buckets = histogram_buckets_numpy(values, valid, bucket_count)
    else:
        buckets = histogram_buckets(values, valid, bucket_count)
    return tf.summary.write(
        tag,
        buckets,
        step=step,
        metadata=histogram_metadata.create_summary_metadata(
            display_name=None, description=description
        ),
    )


def image_histogram(values, valid, bins):
    """Bucket counts of the valid `values` over `[min, max]` (for the image
    summary): `(counts, [low, high])`."""
    values, low, high = _masked_range(values, valid)
    high = tf.where(high > low, high, low + tf.constant(1.0, tf.float64))
    counts = _bucket_counts(values, valid, low, (high - low) / bins, bins)
    return counts, tf.stack([low, high])


# --- numpy (JAX and PyTorch backends) ----------------------------------------


def _fraction_numpy(condition, valid, count):
    if count == 0:
        return np.float32("nan")
    return np.float32(np.count_nonzero(condition & valid) / count)


def site_statistics_numpy(a, h, d, kind, max_derivative, threshold):
    """`site_statistics` in numpy: `a`, `h`, `d` (None for softmax) are
    arrays of any shape; the values are float32 (as the TF path's)."""
    a = np.asarray(a, np.float32).reshape(-1)
    h = np.asarray(h, np.float32).reshape(-1)
    valid = np.isfinite(a) & np.isfinite(h)
    if d is not None:
        d = np.asarray(d, np.float32).reshape(-1)
        valid &= np.isfinite(d)
    count = int(np.count_nonzero(valid))
    abs_a = np.abs(a)
    with np.errstate(invalid="ignore", over="ignore"):
        mean_abs = (
            np.float32(np.sum(np.where(valid, abs_a, 0.0), dtype=np.float32) / count)
            if count
            else np.float32("nan")
        )
    scalars = {
        tags.NONFINITE: np.int64(np.count_nonzero(~np.isfinite(a))),
        tags.MEAN_ABS_PRE_ACTIVATION: mean_abs,
    }
    values = {tags.PRE_ACTIVATION: a, tags.ACTIVATION: h}
    if d is None:
        return scalars, values, valid
    values[tags.DERIVATIVE] = d
    with np.errstate(invalid="ignore"):
        if kind in ("bounded", "unknown"):
            if max_derivative is None:
                reference = np.float32(np.max(np.where(valid, d, 0.0))) if d.size else 0.0
            else:
                reference = np.float32(max_derivative)
            scalars[tags.SATURATED_FRACTION] = _fraction_numpy(
                d < np.float32(threshold) * reference, valid, count
            )
        if kind in ("rectifier", "unknown"):
            scalars[tags.DEAD_FRACTION] = _fraction_numpy(d == 0.0, valid, count)
        if kind == "binary":
            scalars[tags.CLIPPED_FRACTION] = _fraction_numpy(abs_a > 1.0, valid, count)
    return scalars, values, valid


def _masked_range_numpy(values, valid):
    values = np.asarray(values, np.float64).reshape(-1)
    if not np.any(valid):
        return values, 0.0, 0.0
    return values, float(np.min(values[valid])), float(np.max(values[valid]))


def _bucket_counts_numpy(values, valid, low, width, bucket_count):
    with np.errstate(invalid="ignore", over="ignore"):
        index = np.floor((values - low) / width)
    index = np.where(np.isfinite(index), index, 0.0)
    index = np.clip(index, 0, bucket_count - 1).astype(np.int64)
    return np.bincount(
        index, weights=valid.astype(np.float64), minlength=bucket_count
    )[:bucket_count]


def histogram_buckets_numpy(values, valid, bucket_count):
    """`histogram_buckets` in numpy: rows `[left, right, count]`, float64."""
    values, low, high = _masked_range_numpy(values, valid)
    valid = np.asarray(valid, bool).reshape(-1)
    spread = high - low
    if spread == 0.0:
        counts = np.zeros(bucket_count)
        counts[-1] = np.count_nonzero(valid)
        left = right = np.full(bucket_count, low)
    else:
        width = spread / bucket_count
        counts = _bucket_counts_numpy(values, valid, low, width, bucket_count)
        edges = low + width * np.arange(bucket_count + 1, dtype=np.float64)
        left, right = edges[:-1], edges[1:]
    return np.stack([left, right, counts], axis=1)


def image_histogram_numpy(values, valid, bins):
    """`image_histogram` in numpy: `(counts, [low, high])`."""
    values, low, high = _masked_range_numpy(values, valid)
    valid = np.asarray(valid, bool).reshape(-1)
    if not high > low:
        high = low + 1.0
    counts = _bucket_counts_numpy(values, valid, low, (high - low) / bins, bins)
    return counts, np.array([low, high])
