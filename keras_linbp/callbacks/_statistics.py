"""The per-site statistics and histograms, written once in `keras.ops`.

On the TensorFlow backend they are TensorFlow ops of static shape, built
inside the callbacks' traced probe function: nothing leaves the device but
what the callers return. On JAX and PyTorch the same functions run eagerly
on the probe's tensors; `write_scalar` and `write_histogram` convert a
result to numpy only where `tf.summary` writes it (TensorFlow only writes
the summaries there).
"""

import contextlib
import functools

import keras
from keras import ops

from keras_linbp import tags
from keras_linbp.callbacks._tensorflow import tf
from keras_linbp.callbacks._tensorflow import traced

DEFAULT_THRESHOLD = 0.1
DEFAULT_BUCKETS = 30


def _summary_value(value):
    """What `tf.summary` is given: the TensorFlow tensor as it is (inside
    the traced probe), a JAX or PyTorch tensor as numpy."""
    return value if traced() else ops.convert_to_numpy(value)


def _float64():
    """Where the histograms compute in float64 (as TensorBoard stores
    them): JAX has no 64-bit types unless enabled, here for that only."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


@functools.lru_cache(maxsize=None)
def _compiled(fn, static_argnames):
    """`fn` jitted on JAX, as it is elsewhere. The JAX probe runs eagerly,
    and op-by-op dispatch of a statistic's ~20 small ops cost 2-3x the
    numpy it replaced; one compiled call per site shape costs less. On
    TensorFlow the caller is traced already; PyTorch's eager ops are cheap."""
    if keras.backend.backend() != "jax":
        return fn
    import jax

    return jax.jit(fn, static_argnames=static_argnames)


def _flat_float32(values):
    return ops.reshape(ops.cast(values, "float32"), [-1])


def _masked_mean(values, valid, count):
    """Mean of the `valid` entries; NaN when there are none (undefined)."""
    total = ops.sum(ops.where(valid, values, 0.0))
    return ops.where(count > 0, total / ops.maximum(count, 1.0), float("nan"))


def fraction(condition, valid, count):
    """Share of `valid` entries where `condition` holds; NaN when there are
    none (undefined)."""
    return _masked_mean(ops.cast(condition, "float32"), valid, count)


def site_statistics(a, h, d, kind, max_derivative, threshold):
    """`_site_statistics`, compiled on JAX."""
    compiled = _compiled(_site_statistics, ("kind", "max_derivative", "threshold"))
    return compiled(a, h, d, kind=kind, max_derivative=max_derivative, threshold=threshold)


def _site_statistics(a, h, d, kind, max_derivative, threshold):
    """Statistics of one site, as float32 tensors of static shape.

    Units whose pre-activation, activation or derivative is NaN/Inf are
    excluded (masked out) from everything but `nonfinite`, the count of
    NaN/Inf pre-activations.

    Args:
        a, h, d: the site's input, `f(a)` and `|f'(a)|` (None for
            softmax), tensors of any shape.
        kind, max_derivative: the site's saturation kind and `max|f'|`
            (None: measured against the largest `|f'|` seen).
        threshold: the saturation threshold.

    Returns:
        `(scalars, values, valid)`: scalar tensors by name; the flattened
        `pre_activation`, `activation` and (unless softmax) `derivative`
        values; the mask of the units that count.
    """
    a = _flat_float32(a)
    h = _flat_float32(h)
    valid = ops.logical_and(ops.isfinite(a), ops.isfinite(h))
    if d is not None:
        d = _flat_float32(d)
        valid = ops.logical_and(valid, ops.isfinite(d))
    count = ops.sum(ops.cast(valid, "float32"))
    abs_a = ops.abs(a)
    scalars = {
        tags.NONFINITE: ops.sum(ops.cast(ops.logical_not(ops.isfinite(a)), "int32")),
        tags.MEAN_ABS_PRE_ACTIVATION: _masked_mean(abs_a, valid, count),
    }
    values = {tags.PRE_ACTIVATION: a, tags.ACTIVATION: h}
    if d is None:
        return scalars, values, valid
    values[tags.DERIVATIVE] = d
    if kind in ("bounded", "unknown"):
        if max_derivative is None:
            # Outside the table: measure against the largest slope seen.
            reference = ops.max(ops.where(valid, d, 0.0), initial=0.0)
        else:
            reference = ops.convert_to_tensor(max_derivative, "float32")
        scalars[tags.SATURATED_FRACTION] = fraction(d < threshold * reference, valid, count)
    if kind in ("rectifier", "unknown"):
        scalars[tags.DEAD_FRACTION] = fraction(ops.equal(d, 0.0), valid, count)
    if kind == "binary":
        # Where a clipped straight-through estimator blocks the gradient.
        scalars[tags.CLIPPED_FRACTION] = fraction(abs_a > 1.0, valid, count)
    return scalars, values, valid


def gradient_statistics(gradient):
    """`(flat, norm, finite)` of one loss gradient: its float32 values
    flattened, their L2 norm and the mask of the finite ones."""
    return _compiled(_gradient_statistics, ())(gradient)


def _gradient_statistics(gradient):
    flat = _flat_float32(gradient)
    return flat, ops.norm(flat), ops.isfinite(flat)


def _masked_range(values, valid):
    """(values, min, max) of the valid entries, float64; 0 for none."""
    values = ops.cast(ops.reshape(values, [-1]), "float64")
    any_valid = ops.any(valid)
    low = ops.min(ops.where(valid, values, float("inf")), initial=float("inf"))
    high = ops.max(ops.where(valid, values, float("-inf")), initial=float("-inf"))
    return values, ops.where(any_valid, low, 0.0), ops.where(any_valid, high, 0.0)


def _bucket_counts(values, valid, low, width, bucket_count):
    # Invalid entries (weight 0) are counted at `low`: NaN has no bucket.
    values = ops.where(valid, values, low)
    index = ops.cast(ops.floor((values - low) / width), "int32")
    index = ops.clip(index, 0, bucket_count - 1)
    # A segment sum, not a bincount: its length is static under jax.jit.
    counts = ops.segment_sum(ops.cast(valid, "float64"), index, num_segments=bucket_count)
    return ops.reshape(counts, [bucket_count])


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
    with _float64():
        return _compiled(_histogram_rows, ("bucket_count",))(values, valid, bucket_count=bucket_count)


def _histogram_rows(values, valid, bucket_count):
    """`histogram_buckets`' rows, float64 (under `_float64()`)."""
    values, low, high = _masked_range(values, valid)
    spread = high - low
    single = ops.equal(spread, 0.0)
    width = ops.where(single, 1.0, spread / bucket_count)
    counts = _bucket_counts(values, valid, low, width, bucket_count)
    edges = low + width * ops.arange(bucket_count + 1, dtype="float64")
    left = ops.where(single, low, edges[:-1])
    right = ops.where(single, low, edges[1:])
    last = ops.equal(ops.arange(bucket_count), bucket_count - 1)
    counts = ops.where(single, ops.where(last, ops.sum(counts), 0.0), counts)
    return ops.stack([left, right, counts], axis=1)


def image_histogram(values, valid, bins):
    """Bucket counts of the valid `values` over `[min, max]` (for the image
    summary): `(counts, [low, high])`."""
    with _float64():
        return _compiled(_image_counts, ("bins",))(values, valid, bins=bins)


def _image_counts(values, valid, bins):
    """`image_histogram`'s counts and range, float64 (under `_float64()`)."""
    values, low, high = _masked_range(values, valid)
    high = ops.where(high > low, high, low + 1.0)
    counts = _bucket_counts(values, valid, low, (high - low) / bins, bins)
    return counts, ops.stack([low, high])


def write_scalar(tag, value, step, description=None):
    """Writes one scalar summary."""
    return tf.summary.scalar(tag, _summary_value(value), step=step, description=description)


def write_histogram(tag, values, valid, step, bucket_count, description=None):
    """Writes `histogram_buckets(...)` as a TensorBoard histogram summary."""
    from tensorboard.plugins.histogram import metadata as histogram_metadata

    return tf.summary.write(
        tag,
        _summary_value(histogram_buckets(values, valid, bucket_count)),
        step=step,
        metadata=histogram_metadata.create_summary_metadata(
            display_name=None, description=description
        ),
    )
