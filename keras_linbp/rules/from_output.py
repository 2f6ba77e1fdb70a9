"""`FromOutputRule`: the exact derivative, recovered from the activation's
output (Tempo's in-place GELU, Andoorveedu et al., NeurIPS 2022).

Forward unchanged. The backward keeps `y = f(a)` -- the tensor the next
layer (a Dense, a Multiply) keeps anyway, so one buffer serves both -- and,
for an activation that is not monotone (gelu, silu, mish, hard_silu), one
branch bit per element (`a >= a*`, a* its minimum), packed 8 to a byte.
It then computes `g * f'(a)` with `f'` read off `y` (and the bit), in
float32 for float16 / bfloat16 (`keras_linbp._from_output`). An activation
it cannot invert stays exact, and says so.
"""

import dataclasses
import functools
from typing import Any

import keras

from keras_linbp import _few_bit
from keras_linbp import _from_output
from keras_linbp import _table
from keras_linbp import tables
from keras_linbp.rules import _registry
from keras_linbp.rules import _rule

__all__ = ["FromOutputRule", "from_output_name"]


def from_output_name(fn):
    """The `_from_output` name of an activation function, or None."""
    spec = _table.find_spec(fn)
    if spec is not None and spec.name in _from_output.names():
        return spec.name
    for name in _from_output.names():
        if fn is getattr(keras.activations, name, None) or _table.is_keras_op(fn, name):
            return name
    return None


def _call_params(name, forward, args, kwargs):
    """Sorted `(param, value)` pairs of one call (gelu's `approximate`,
    elu's `alpha`, leaky_relu's `negative_slope`), else the defaults."""
    defaults = _from_output.DERIVATIVE_FROM_OUTPUT[name].params
    return tables.call_params(defaults, forward, args, kwargs, needs="The from-output rule")


def _after_upstream(y, upstream):
    """`y`, made to depend on `upstream` where a compiler schedules the step.

    `f'` depends on the residual alone, so XLA (and TensorFlow's graph
    executor) may compute it for every site as soon as the forward has
    run, and keep it, with the temporaries of the inverse, until the
    backward reaches the site: a gated silu MLP (4 blocks, 8 x 128 x 1024)
    took 190 MiB of XLA temp memory against exact's 96 and linear's 64.
    A data dependency on the upstream gradient keeps the recovery in the
    backward (98 MiB there; `jax.lax.optimization_barrier` did not). Where
    the upstream is NaN or inf the product is NaN or inf anyway. PyTorch's
    autograd runs a backward function only in the backward: nothing added.
    """
    if keras.backend.backend() == "torch":
        return y
    return y + keras.ops.cast(upstream, y.dtype) * 0.0


@dataclasses.dataclass(frozen=True)
class _Backward:
    """The backward of one call: keeps `y` and the packed branch bits."""

    name: str
    params: tuple

    keeps_output = True

    def residual(self, x, y):
        if not _from_output.DERIVATIVE_FROM_OUTPUT[self.name].needs_branch:
            return (y, None)
        branch = keras.ops.cast(_from_output.branch_bits(x, self.name, **dict(self.params)), "uint8")
        return (y, _few_bit._pack_codes(keras.ops.reshape(branch, (-1,)), 1))

    def input_gradient(self, upstream, residual):
        y, packed = residual
        y = _after_upstream(y, upstream)
        branch = None
        if packed is not None:
            bits = keras.ops.reshape(_few_bit._unpack_levels(packed, 1, (0.0, 1.0), "float32"), (-1,))
            branch = keras.ops.reshape(bits[: keras.ops.size(y)], keras.ops.shape(y)) > 0.5
        derivative = _from_output.derivative_from_output(self.name, y, branch, **dict(self.params))
        return upstream * keras.ops.cast(derivative, upstream.dtype)


@functools.lru_cache(maxsize=None)
def _backward(name, params):
    return _Backward(name, params)


@_registry.register
@dataclasses.dataclass(frozen=True)
class FromOutputRule(_rule.Rule):
    """Exact `g * f'(a)`, `f'` recovered from the output (and a branch bit).

    Attributes:
        activation: the `_from_output` name (`"gelu"`), or None until
            completed for a forward function by `for_forward`.
        params: fixed activation parameters as sorted pairs, or None to
            read them from each call.
    """

    activation: Any = None
    params: Any = None

    name = "from_output"
    label = "from_output"
    setting = None
    summary_fields = ("kept",)
    reads_output = True

    def __post_init__(self):
        if self.activation is not None and self.activation not in _from_output.names():
            raise ValueError(
                f"The from-output rule cannot invert {self.activation!r}; it inverts "
                f"{', '.join(_from_output.names())}."
            )
        if isinstance(self.params, dict):
            object.__setattr__(self, "params", tuple(sorted(self.params.items())))
        elif self.params is not None:
            object.__setattr__(self, "params", tuple(tuple(pair) for pair in self.params))

    @staticmethod
    def names():
        """The activations it inverts, sorted."""
        return _from_output.names()

    def for_forward(self, forward):
        if self.activation is not None:
            return self
        name = from_output_name(forward)
        if name is None:
            shown = getattr(forward, "__name__", forward)
            raise ValueError(
                f"The from-output rule cannot invert {shown!r}; it inverts "
                f"{', '.join(_from_output.names())} (Keras's functions of these names)."
            )
        return dataclasses.replace(self, activation=name)

    def for_call(self, forward, args, kwargs):
        params = self.params if self.params is not None else _call_params(self.activation, forward, args, kwargs)
        return _backward(self.activation, params)

    def bytes_per_element(self):
        # The output is the next layer's; the branch bit is the rule's own.
        return 0.125 if _from_output.DERIVATIVE_FROM_OUTPUT[self.activation].needs_branch else 0.0

    def describe(self):
        return {"kept": f"{self.bytes_per_element():g} + output"}

    @classmethod
    def for_site(cls, site, options, calibrated=None):
        name, params = tables.site_parameters(site)
        if name not in _from_output.names():
            return None, f"from_output cannot invert {name}"
        return cls(name, params), ""

    def get_config(self):
        return {"activation": self.activation, "params": None if self.params is None else dict(self.params)}
