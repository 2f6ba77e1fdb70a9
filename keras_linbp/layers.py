"""Keras layers that apply an activation with the linear-backprop gradient.

`LinearBackprop(activation, slope=1.0)` is `keras.layers.Activation` whose
backward pass is `g <- slope * g`: a thin layer whose `call` is the plain
function `keras_linbp.ops.linear_backprop(activation, slope)`. The named
variants (`LinBPSigmoid`, `LinBPTanh`, ...) fix the activation and take only
`slope`.

A layer in a model (the gradient is shown with `model.fit` or a backend's
own autodiff; the forward pass is `keras.layers.Activation`'s):

```python
model = keras.Sequential([
    keras.Input((784,)),
    keras.layers.Dense(256),
    keras_linbp.layers.LinBPTanh(),  # tanh forward, g <- g backward
    keras.layers.Dense(10),
])
```
"""

import warnings

import keras

from keras_linbp import _validation
from keras_linbp import activations as linbp_activations
from keras_linbp import ops
from keras_linbp.rules._function import deserialize_forward
from keras_linbp.rules._function import serialize_forward

__all__ = [
    "NAMED_LAYERS",
    "FewBit",
    "LinBPELU",
    "LinBPGELU",
    "LinBPHardSigmoid",
    "LinBPHardTanh",
    "LinBPLeakyReLU",
    "LinBPReLU",
    "LinBPReLU6",
    "LinBPSiLU",
    "LinBPSigmoid",
    "LinBPSign",
    "LinBPSoftplus",
    "LinBPTanh",
    "LinearBackprop",
]


# A table name stays a name; any other callable is a Keras object config
# (the rule functions' own forms, shared with them).
_serialize_activation = serialize_forward
_deserialize_activation = deserialize_forward


class _RuleLayer(keras.layers.Layer):
    """What the rule layers share: `call` is the rule function `_backprop`
    made in `__init__`; the output has the input's shape; a symbolic
    integer input is refused when the layer is called on it."""

    def _use_rule(self, backprop):
        self._backprop = backprop
        self.supports_masking = True
        self._build_at_init()

    @property
    def backward_rule(self):
        """The layer's `keras_linbp.rules.Rule` (sites treat it as fixed)."""
        return self._backprop.backward_rule

    @property
    def activation_fn(self):
        """The forward activation function (e.g. `keras.activations.tanh`)."""
        return self._backprop.forward

    def call(self, inputs):
        return self._backprop(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        # A symbolic call (`keras.Input`, a functional model) does not run
        # `call()`, whose integer check would otherwise come only when the
        # model first runs; the spec would claim float32.
        dtype = keras.backend.standardize_dtype(getattr(inputs, "dtype", None))
        if not dtype.startswith(("float", "bfloat")):
            raise TypeError(
                f"{type(self).__name__} needs a floating-point "
                f"input (float16, bfloat16, float32 or float64); got a symbolic "
                f"input of dtype {dtype}. Cast it first, e.g. "
                "`keras.layers.Lambda(lambda t: keras.ops.cast(t, 'float32'))`."
            )
        return super().compute_output_spec(inputs)


@keras.saving.register_keras_serializable(package="keras_linbp")
class LinearBackprop(_RuleLayer):
    """Applies an activation; its gradient passes through unchanged.

    Forward: identical to `keras.layers.Activation(activation)`. Backward:
    `slope * upstream` -- the activation derivative is not computed
    (linear backprop, Yazdani 2018).

    Args:
        activation: a name from `keras_linbp.activations.ACTIVATIONS`
            (e.g. `"tanh"`, `"sign"`), a Keras activation function or any
            registered callable.
        slope: a finite real number multiplying the upstream gradient
            (default 1.0).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Attributes:
        activation: the activation as given (a table name or a callable).
        activation_fn: the forward activation function it resolves to.
        slope: the slope, a float.

    Raises:
        ValueError: for an unknown activation name or a NaN / infinite
            slope.
        TypeError: for a slope that is not a real number.
        NotImplementedError: on a Keras backend other than TensorFlow,
            JAX or PyTorch.

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import layers
    >>> layer = layers.LinearBackprop("sigmoid", slope=0.5)
    >>> y = layer(np.array([-4.0, 0.0, 4.0], "float32"))  # forward: plain sigmoid
    >>> print(np.round(keras.ops.convert_to_numpy(y), 3))
    [0.018 0.5   0.982]
    >>> layer.activation_fn is keras.activations.sigmoid, layer.get_config()["slope"]
    (True, 0.5)
    >>> layers.LinBPTanh().get_config()["slope"]
    1.0
    """

    def __init__(self, activation, slope=1.0, **kwargs):
        _validation.require_supported_backend(type(self).__name__)
        slope = _validation.check_slope(slope)
        super().__init__(**kwargs)
        self.activation = _deserialize_activation(activation)
        self.slope = slope
        self._use_rule(ops.linear_backprop(linbp_activations.get(self.activation), slope=self.slope))

    # Not a property: on the PyTorch backend a Keras layer is a
    # `torch.nn.Module`, and an attribute named `forward` would replace
    # `Module.forward` and bypass `call()`. `__getattr__` is consulted only
    # when normal lookup fails, which never happens for `forward` on PyTorch.
    def __getattr__(self, name):
        if name == "forward":
            warnings.warn(
                f"`{type(self).__name__}.forward` is deprecated; use "
                "`activation_fn` (on the PyTorch backend `forward` is "
                "torch.nn.Module's).",
                DeprecationWarning,
                stacklevel=2,
            )
            return self.activation_fn
        parent = getattr(super(), "__getattr__", None)
        if parent is not None:
            return parent(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "activation": _serialize_activation(self.activation),
                "slope": self.slope,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_linbp")
class FewBit(_RuleLayer):
    """Applies an activation with the few-bit backward rule.

    Forward: identical to `keras.layers.Activation(activation)`. Backward:
    `upstream * levels[code]`, keeping only a bit-packed `bits`-bit code
    of each input element (`keras_linbp.few_bit`).

    Args:
        activation: a name with a few-bit table (`"gelu"`, `"silu"`, ...;
            `keras_linbp.tables.table_names()`) or Keras's function of
            that name.
        bits: an int from 0 to 4 (default 2).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Attributes:
        activation: the activation as given; `bits`: the bits;
        `activation_fn`: the forward function.

    Raises:
        ValueError: for an activation with no table, or `bits` outside 0-4.
        TypeError: for a `bits` that is not an int.

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import layers
    >>> layer = layers.FewBit("gelu", bits=2)
    >>> layer.get_config()["bits"], layer.activation_fn is keras.activations.gelu
    (2, True)
    """

    def __init__(self, activation, bits=2, **kwargs):
        _validation.require_supported_backend(type(self).__name__)
        super().__init__(**kwargs)
        self.activation = _deserialize_activation(activation)
        self._use_rule(ops.few_bit(linbp_activations.get(self.activation), bits=bits))
        self.bits = self._backprop.bits

    def get_config(self):
        config = super().get_config()
        config.update({"activation": _serialize_activation(self.activation), "bits": self.bits})
        return config


class _NamedLinearBackprop(LinearBackprop):
    """Base of the named variants: the activation is fixed by the class."""

    activation_name = None

    def __init__(self, slope=1.0, **kwargs):
        activation = kwargs.pop("activation", self.activation_name)
        if activation != self.activation_name:
            raise ValueError(
                f"{type(self).__name__} always applies "
                f"{self.activation_name!r}; got activation={activation!r}. "
                "Use `LinearBackprop(activation)` for another activation."
            )
        super().__init__(self.activation_name, slope=slope, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["activation"]
        return config


def _named(activation_name):
    """Registers a named variant class for `activation_name`."""

    def decorate(cls):
        cls.activation_name = activation_name
        cls.__doc__ = (
            f"`LinearBackprop('{activation_name}')`: {activation_name} forward, "
            "`g <- slope * g` backward.\n\n    Args:\n        slope: constant "
            "multiplying the upstream gradient (default 1.0).\n    "
        )
        return keras.saving.register_keras_serializable(package="keras_linbp")(cls)

    return decorate


@_named("sigmoid")
class LinBPSigmoid(_NamedLinearBackprop):
    pass


@_named("tanh")
class LinBPTanh(_NamedLinearBackprop):
    pass


@_named("relu")
class LinBPReLU(_NamedLinearBackprop):
    pass


@_named("relu6")
class LinBPReLU6(_NamedLinearBackprop):
    pass


@_named("leaky_relu")
class LinBPLeakyReLU(_NamedLinearBackprop):
    pass


@_named("elu")
class LinBPELU(_NamedLinearBackprop):
    pass


@_named("gelu")
class LinBPGELU(_NamedLinearBackprop):
    pass


@_named("silu")
class LinBPSiLU(_NamedLinearBackprop):
    pass


@_named("softplus")
class LinBPSoftplus(_NamedLinearBackprop):
    pass


@_named("hard_sigmoid")
class LinBPHardSigmoid(_NamedLinearBackprop):
    pass


@_named("hard_tanh")
class LinBPHardTanh(_NamedLinearBackprop):
    pass


@_named("sign")
class LinBPSign(_NamedLinearBackprop):
    pass


NAMED_LAYERS = [
    LinBPSigmoid,
    LinBPTanh,
    LinBPReLU,
    LinBPReLU6,
    LinBPLeakyReLU,
    LinBPELU,
    LinBPGELU,
    LinBPSiLU,
    LinBPSoftplus,
    LinBPHardSigmoid,
    LinBPHardTanh,
    LinBPSign,
]
