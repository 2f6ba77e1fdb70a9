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

__all__ = [
    "NAMED_LAYERS",
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


def _serialize_activation(activation):
    """A table name stays a name; any callable becomes a Keras object config.

    A table forward function (`keras.activations.tanh`, the table's `sign`)
    is stored by its table name. Other callables are stored in Keras's full
    object form: `keras.activations.serialize` would return a bare name for
    Keras-only functions such as `mish`, which the table does not know.
    """
    if isinstance(activation, str):
        return activation
    spec = linbp_activations.find_spec(activation)
    if spec is not None and activation is spec.forward:
        return spec.name
    return keras.saving.serialize_keras_object(activation)


def _deserialize_activation(config):
    if isinstance(config, str):
        # A table name (or an unknown name: the table's error lists the
        # valid names).
        return config
    activation = keras.activations.deserialize(config)
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in linbp_activations.valid_names():
        return activation
    raise ValueError(
        f"Could not locate the activation function {config.get('config')!r}. "
        "Decorate it with `@keras.saving.register_keras_serializable()` and "
        "import it before loading, or pass it in `custom_objects`."
    )


@keras.saving.register_keras_serializable(package="keras_linbp")
class LinearBackprop(keras.layers.Layer):
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
        self._backprop = ops.linear_backprop(
            linbp_activations.get(self.activation), slope=self.slope
        )
        self.supports_masking = True
        self._build_at_init()

    @property
    def activation_fn(self):
        """The forward activation function (e.g. `keras.activations.tanh`)."""
        return self._backprop.forward

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

    def call(self, inputs):
        return self._backprop(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "activation": _serialize_activation(self.activation),
                "slope": self.slope,
            }
        )
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
