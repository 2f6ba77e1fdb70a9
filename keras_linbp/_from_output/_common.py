"""Shared pieces of the from-output derivatives: the constants and the
compute dtype (float32 for float16 / bfloat16 / float32, float64 for float64)."""

import math

import keras

ops = keras.ops

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_SQRT_2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_TANH_GELU_C = math.sqrt(2.0 / math.pi)
_TANH_GELU_K = 0.044715
# Near the minimum: |w| = sqrt(y - y*) <= _NEAR_WIDTH, polynomial degree.
_NEAR_WIDTH = 0.2
_NEAR_DEGREE = 10
_RIGHT_STEPS = 4
_LEFT_STEPS = 3
# |y| below this on the left branch: f' is below 1e-28 and taken as 0.
_TINY = 1e-30
# Newton's `a` stays below this: f' = 1 to float precision long before, and
# cubes / squares of a larger `a` would overflow float32.
_RIGHT_CAP = 1e4



def _compute_dtype(x):
    """float64 for float64 tensors, float32 for every other float."""
    return "float64" if keras.backend.standardize_dtype(x.dtype) == "float64" else "float32"


def erfc(x):
    """`keras.ops.erfc` where Keras has it (3.15 does, 3.11 not); else the
    backend's own.

    Not `1 - erf(x)`: that is 0 in float32 for x > ~4, where the exact
    GELU's left tail needs erfc's relative precision.
    """
    if hasattr(keras.ops, "erfc"):
        return keras.ops.erfc(x)
    backend = keras.backend.backend()
    x = keras.ops.convert_to_tensor(x)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.math.erfc(x)
    if backend == "jax":
        import jax

        return jax.lax.erfc(x)
    if backend == "torch":
        import torch

        return torch.special.erfc(x)
    raise NotImplementedError(f"erfc on the {backend} backend")  # pragma: no cover
