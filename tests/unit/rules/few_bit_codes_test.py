"""The few-bit codes on every backend and input dtype equal numpy's
`np.searchsorted(bounds, x.astype("float32"), side="right")` exactly: the
number of bounds at or below the input, the bounds taken as the float64
numbers the tables give, NaN the top code (where numpy sorts it).

Each 16-bit dtype is checked on all of its 65536 values (every value next to
every bound included); float32 on the float32 neighbours of each bound.
Subnormal inputs may get the code of zero instead, where the backend flushes
them (TensorFlow and XLA on CPU). The
bounds are few-bit tables' and three made ones: a bound that is a bfloat16 /
float16 number (0.5), one just above one (0.5 + 1e-9, which float32 rounds
down onto 0.5) and the -0.78 that bfloat16 rounds to -0.78125.
"""

import keras
import numpy as np
import pytest

from keras_linbp import _backend
from keras_linbp import _few_bit
from keras_linbp import tables

pytestmark = pytest.mark.all_backends

BOUNDS = {
    "gelu_2": tuple(tables.few_bit_table("gelu", 2)[0]),
    "silu_3": tuple(tables.few_bit_table("silu", 3)[0]),
    "tanh_4": tuple(tables.few_bit_table("tanh", 4)[0]),
    "made": (-0.78, 0.5, 0.5 + 1e-9),
}


def every_value(dtype):
    """All 65536 values of a 16-bit float dtype, as float32 (NaNs, ±inf and
    both zeros included)."""
    bits = np.arange(1 << 16, dtype=np.uint32)
    if dtype == "bfloat16":  # the upper half of a float32
        return (bits << 16).view(np.float32)
    return bits.astype(np.uint16).view(np.float16).astype(np.float32)


def float32_neighbours(bounds):
    """The float32 numbers within 3 ulps of each bound."""
    values = []
    for bound in bounds:
        below = above = np.float32(bound)
        values.append(below)
        for _ in range(3):
            below = np.nextafter(below, np.float32(-np.inf))
            above = np.nextafter(above, np.float32(np.inf))
            values += [below, above]
    return np.array(values + [np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)


def codes(values, dtype, bounds):
    """`_codes` of `values` (float32 numpy, exact in `dtype`) given as a
    `dtype` tensor of the backend."""
    x = keras.ops.cast(keras.ops.convert_to_tensor(values), dtype)
    return keras.ops.convert_to_numpy(_few_bit._codes(x, bounds)).astype(np.int64)


def reference(values, bounds):
    return np.searchsorted(np.asarray(bounds, np.float64), values.astype(np.float32), side="right")


def assert_codes_equal(got, want, values, bounds):
    # TensorFlow and XLA on CPU flush subnormal inputs to zero: a subnormal
    # may get the code of 0 instead (numpy's differs from it only where a
    # bound is 0).
    subnormal = (values != 0) & (np.abs(values) < np.finfo(np.float32).tiny)
    flushed = subnormal & (got == reference(np.zeros_like(values), bounds))
    wrong = np.flatnonzero((got != want) & ~flushed)
    assert wrong.size == 0, (
        f"{wrong.size} of {values.size} codes differ from numpy's, e.g. at "
        f"{values[wrong[:5]].tolist()}: got {got[wrong[:5]].tolist()}, want {want[wrong[:5]].tolist()}"
    )


@pytest.mark.parametrize("bounds", BOUNDS.values(), ids=BOUNDS.keys())
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_codes_of_every_16_bit_value_equal_numpy(dtype, bounds):
    values = every_value(dtype)
    assert_codes_equal(codes(values, dtype, bounds), reference(values, bounds), values, bounds)


@pytest.mark.parametrize("bounds", BOUNDS.values(), ids=BOUNDS.keys())
def test_codes_of_float32_values_next_to_the_bounds_equal_numpy(bounds):
    values = float32_neighbours(bounds)
    assert_codes_equal(codes(values, "float32", bounds), reference(values, bounds), values, bounds)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_nan_gets_the_top_code(dtype):
    # TensorFlow's Bucketize and numpy's searchsorted give NaN the top code;
    # every backend does the same.
    bounds = BOUNDS["gelu_2"]
    values = np.array([np.nan, -np.nan, 0.0], np.float32)
    np.testing.assert_array_equal(codes(values, dtype, bounds), [len(bounds), len(bounds), 2])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_few_bit_gradient_takes_the_level_of_numpy_code(dtype):
    # Through the rule: the input gradient of a 16-bit input next to the
    # bounds is the level numpy's code picks.
    bounds, levels = tables.few_bit_table("silu", 3)
    rule = _few_bit.FewBitRule(tuple(bounds), tuple(levels))
    values = every_value(dtype)
    normal = (values == 0) | (np.abs(values) >= np.finfo(np.float32).tiny)  # see assert_codes_equal
    values = values[np.isfinite(values) & (np.abs(values) < 2.0) & normal]
    x = keras.ops.cast(keras.ops.convert_to_tensor(values), dtype)

    def fn(a):
        return _backend.apply_rule(keras.activations.silu, a, (), {}, rule)

    got = np.asarray(_backend.elementwise_derivative(fn, x), np.float32)
    want = keras.ops.convert_to_numpy(
        keras.ops.cast(keras.ops.convert_to_tensor(levels[reference(values, bounds)].astype(np.float32)), dtype)
    ).astype(np.float32)
    np.testing.assert_array_equal(got, want)
