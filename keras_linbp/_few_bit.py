"""`FewBitRule`: the few-bit backward rule of `keras_linbp._backend.apply_rule`.

Forward unchanged; backward `g * levels[code]`, `code` = the number of
`bounds` at or below the forward input (Novikov et al., "Few-Bit Backward",
ICML 2023). The residual is the codes bit-packed into uint8, written in
`keras.ops` bitwise ops. Eager PyTorch and TensorFlow graphs gather the
levels of each packed byte from a 256-row table; under XLA (JAX, and a
TensorFlow step with `jit_compile=True`) the codes are packed with a
reduction and unpacked with comparisons, the forms XLA does not fuse
across the forward/backward boundary (see `_pack_codes`). Re-exported by
`keras_linbp._backend` beside `LinearRule` and `StraightThroughRule`; a
file of its own only to keep each module short.

Example:

>>> import keras, numpy as np
>>> from keras_linbp import _backend
>>> from keras_linbp import _few_bit
>>> rule = _few_bit.FewBitRule(bounds=(0.0,), levels=(0.1, 0.9))
>>> x = keras.ops.convert_to_tensor(np.array([-1.0, 0.0, 2.0], "float32"))
>>> print(keras.ops.convert_to_numpy(rule.residual(x)))  # codes 0, 1, 1 in bits 0, 1, 2
[6]
>>> fn = lambda a: _backend.apply_rule(keras.activations.gelu, a, (), {}, rule)
>>> print(np.round(_backend.elementwise_derivative(fn, x), 3))
[0.1 0.9 0.9]
"""

import dataclasses

import keras

__all__ = ["FewBitRule"]


@dataclasses.dataclass(frozen=True)
class FewBitRule:
    """`g <- g * levels[code]`, `code` = the number of `bounds` <= x; keeps
    the codes bit-packed into uint8 (the few-bit rule, Novikov et al. 2023).

    `bits = log2(len(levels))` (0 to 4). Codes take `slot` bits in the
    packed residual (1, 2, 4, 4 for 1-4 bits: a byte holds whole codes
    only), so `ceil(N * slot / 8)` bytes are kept for N elements and
    nothing else: the shape is the upstream's. The backward looks each
    packed byte up in a `(256, codes per byte)` table of levels in the
    upstream's dtype, so no full-size integer tensor is made.
    """

    bounds: tuple = ()
    levels: tuple = (1.0,)

    def __post_init__(self):
        object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))
        object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))
        if len(self.levels) not in (1, 2, 4, 8, 16) or len(self.bounds) != len(self.levels) - 1:
            raise ValueError(
                f"A few-bit rule needs 2^b levels (b = 0..4) and one bound fewer; got "
                f"{len(self.levels)} levels and {len(self.bounds)} bounds."
            )
        if list(self.bounds) != sorted(self.bounds):
            raise ValueError(f"The bounds of a few-bit rule must ascend; got {self.bounds}.")

    @property
    def bits(self):
        return len(self.levels).bit_length() - 1

    @property
    def slot(self):
        return {0: 0, 1: 1, 2: 2, 3: 4, 4: 4}[self.bits]

    def residual(self, x):
        if self.bits == 0:
            return None
        return _pack_codes(keras.ops.reshape(_codes(x, self.bounds), (-1,)), self.slot)

    def input_gradient(self, upstream, residual):
        if residual is None:
            return upstream * self.levels[0]
        if _under_xla():
            factors = _unpack_levels(residual, self.slot, self.levels, upstream.dtype)
        else:
            table = keras.ops.convert_to_tensor(self._byte_table(), dtype=upstream.dtype)
            factors = _gather_rows(table, residual)
        factors = keras.ops.reshape(factors, (-1,))
        size = keras.ops.size(upstream)
        if not isinstance(size, int) or size % (8 // self.slot):
            factors = factors[:size]  # the padding codes of the last byte
        return upstream * keras.ops.reshape(factors, keras.ops.shape(upstream))

    def _byte_table(self):
        import numpy as np

        per_byte = 8 // self.slot
        byte = np.arange(256)[:, None]
        codes = (byte >> (self.slot * np.arange(per_byte))[None, :]) & ((1 << self.slot) - 1)
        levels = np.array(self.levels + (0.0,) * ((1 << self.slot) - len(self.levels)))
        return levels[codes]


def _codes(x, bounds):
    """uint8 codes: the number of `bounds` <= x, elementwise.

    The same codes on every backend and input dtype:
    `np.searchsorted(bounds, x.astype("float32"), side="right")`, the
    bounds being the exact (float64) numbers given. Each bound is replaced
    by the least number of the input's dtype at or above it (for an input of
    that dtype, `x >= bound` exactly when `x >= that number`), so the
    comparison is exact in the input's own dtype: a bfloat16 / float16
    input is neither copied to float32 nor compared with a bound rounded to
    the nearest 16-bit number (-0.78 -> -0.78125 gave ~0.08 % of random
    bfloat16 inputs the neighbouring level on JAX and PyTorch). NaN gets the
    top code, `len(bounds)`, as in TensorFlow's Bucketize and numpy's
    searchsorted (which sort NaN last). Subnormal inputs may be read as zero
    where the backend flushes them (TensorFlow and XLA on CPU). Float64
    inputs on TensorFlow are compared with the bounds rounded up to float32
    (Bucketize's boundaries are float32).
    """

    def _least_at_or_above(bounds, dtype):
        """For each bound, the least number of `dtype` (bfloat16, float16,
        float32 or float64) at or above it, as Python floats (exact: each is a
        float32 or float64 number): a comparison of a `dtype` input with it in
        `dtype` is the exact comparison with the bound."""
        import numpy as np

        exact = np.asarray(bounds, np.float64)
        if dtype == "float64":
            return exact.tolist()
        narrow = np.float16 if dtype == "float16" else np.float32
        rounded = exact.astype(narrow)
        up = np.nextafter(rounded, narrow(np.inf))
        rounded = np.where(rounded.astype(np.float64) < exact, up, rounded)
        if dtype == "bfloat16":
            # bfloat16 is the upper half of a float32: round the float32 up to
            # it (away from zero when positive, towards zero when negative).
            bits = rounded.view(np.uint32)
            low = bits & np.uint32(0xFFFF)
            bits = bits - low
            bits = np.where((low != 0) & (rounded > 0), bits + np.uint32(0x10000), bits)
            rounded = bits.astype(np.uint32).view(np.float32)
        return rounded.astype(np.float64).tolist()

    dtype = keras.backend.standardize_dtype(x.dtype)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # One op: TensorFlow's executor would run every comparison of a
        # Python loop before the sums, holding 2 * len(bounds) full-size
        # temporaries at once. Bucketize takes no float16 / bfloat16: the
        # float32 cast is a forward temporary (the residual is the codes).
        if dtype not in ("float32", "float64"):
            x = tf.cast(x, tf.float32)
        boundaries = _least_at_or_above(bounds, "float32")
        return tf.cast(tf.raw_ops.Bucketize(input=x, boundaries=boundaries), tf.uint8)
    if dtype not in ("bfloat16", "float16", "float32", "float64"):
        x, dtype = keras.ops.cast(x, "float32"), "float32"
    # Counted down from the top by `x < bound`, which is False for NaN.
    codes = keras.ops.full_like(x, len(bounds), dtype="uint8")
    for threshold in _least_at_or_above(bounds, dtype):
        codes = codes - keras.ops.cast(keras.ops.less(x, threshold), "uint8")
    return codes


def _pack_codes(flat, slot):
    """uint8 codes (< 2^slot) of a 1-D tensor, `8 // slot` to a byte
    (element `i` in bits `slot * (i % per_byte)` of byte `i // per_byte`)."""
    per_byte = 8 // slot
    size = keras.ops.shape(flat)[0]
    if not isinstance(size, int) or size % per_byte:
        pad = (-size) % per_byte
        flat = keras.ops.concatenate([flat, keras.ops.zeros((pad,), dtype="uint8")])
    rows = keras.ops.reshape(flat, (-1, per_byte))
    if _under_xla():
        # A reduction: XLA fuses a chain of elementwise ops into their
        # consumer, and the consumer of the codes is the backward pass, so
        # it kept the full-size fp32 input alive and packed it there (on
        # keras-hub Gemma the JAX step took as much memory as exact backprop).
        # XLA does not fuse a reduce into its consumer: the packed bytes
        # are made in the forward pass and the input is freed.
        weights = keras.ops.convert_to_tensor([1 << (slot * j) for j in range(per_byte)], "uint8")
        return keras.ops.cast(keras.ops.sum(rows * weights[None, :], axis=1), "uint8")
    packed = rows[:, 0]
    for j in range(1, per_byte):
        packed = keras.ops.bitwise_or(packed, keras.ops.left_shift(rows[:, j], slot * j))
    return packed


def _under_xla():
    """Whether the rule is being traced for XLA: always on JAX; on
    TensorFlow inside a `jit_compile=True` function (Keras's step with
    `compile(jit_compile=True)`), which TensorFlow traces in an XLA
    control-flow context. Both forms keep the same packed bytes."""
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend != "tensorflow":
        return False
    import tensorflow as tf

    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # a TensorFlow without it: the graph forms
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _unpack_levels(packed, slot, levels, dtype):
    """`(len(packed), 8 // slot)` factors `levels[code]` of packed codes, by
    comparisons (under XLA): elementwise ops XLA fuses into the multiply by
    the upstream gradient, where a gather left a full-size factor tensor
    (TensorFlow-XLA EfficientNetB0: few-bit took exact's 373.5 MiB with the
    gather, 351.4 with comparisons)."""
    per_byte = 8 // slot
    shifts = keras.ops.convert_to_tensor([slot * j for j in range(per_byte)], "uint8")
    codes = keras.ops.bitwise_and(keras.ops.right_shift(packed[:, None], shifts[None, :]), (1 << slot) - 1)
    factors = keras.ops.full(keras.ops.shape(codes), levels[0], dtype=dtype)
    for code in range(1, len(levels)):
        level = keras.ops.convert_to_tensor(levels[code], dtype)
        factors = keras.ops.where(keras.ops.equal(codes, code), level, factors)
    return factors


def _gather_rows(table, indices):
    """`table[indices]` for uint8 `indices` outside XLA (TensorFlow graphs
    and eager, PyTorch), with the smallest index dtype each takes
    (TensorFlow: int16; PyTorch: int32)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.gather(table, tf.cast(indices, tf.int16))
    import torch

    return torch.nn.functional.embedding(indices.int(), table)
