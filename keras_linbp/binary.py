"""Binary layers: `BinaryDense` and `BinaryConv2D` (BinaryNet / Larq style).

In the forward pass the kernel is binarized with
`keras_linbp.activations.sign` (`+1` where `w >= 0`, else `-1`) and, unless
`binarize_inputs=False`, so are the inputs. The layer keeps *latent*
float weights: they are what the optimizer updates, and a
`WeightClip(1.0)` kernel constraint keeps them in `[-1, 1]` after every
update (Larq's `weight_clip`).

The sign has zero derivative almost everywhere, so the backward rule through
every sign of the layer (inputs and kernel) is chosen with `rule`:

- `"linear"`: linear backprop, `g <- g` (`keras_linbp.linear_backprop(sign)`).
- `"ste"`: the clipped straight-through estimator, `g <- g * 1[|x| <= 1]`
  (`keras_linbp.straight_through(sign, clip=1.0)`; BinaryNet and Larq's
  `ste_sign` default).

Because the latent kernel stays in `[-1, 1]`, the two rules give the same
kernel gradient; they differ on the inputs, where `"ste"` blocks the
gradient of every unit whose input has left `[-1, 1]` (a saturated binary
unit) and `"linear"` never does.

The input sign is a `BinarySign(rule)` sublayer (`layer.input_quantizer`),
so `keras_linbp.sites.find_activation_sites` lists every binary layer's
input units as a `"sign"` site (saturation kind `"binary"`) and
`keras_linbp.callbacks.SaturationHistograms` logs them (`clipped_fraction`
= the fraction with `|x| > 1`, where `"ste"` passes no gradient).

Larq's `QuantDense` / `QuantConv2D` (`input_quantizer`, `kernel_quantizer`,
`kernel_constraint`) are the reference design; Larq does not import under
Keras 3. Differences: one `rule` argument instead of two quantizer objects,
and no `pad_values` (with `padding="same"`, `BinaryConv2D` pads its binarized
input with zeros, as `keras.layers.Conv2D` does).
"""

import keras

from keras_linbp import _validation
from keras_linbp import activations as linbp_activations
from keras_linbp import layers as linbp_layers
from keras_linbp import ops as linbp_ops

__all__ = ["RULES", "BinaryConv2D", "BinaryDense", "BinarySign", "WeightClip", "binary_sign"]

RULES = ("linear", "ste")


def binary_sign(rule):
    """Returns the sign function with the backward rule `rule`.

    Args:
        rule: `"linear"` (`g <- g`) or `"ste"` (`g <- g * 1[|x| <= 1]`).

    Returns:
        A callable `fn(x)`: `sign(x)` forward (`sign(0) = +1`), the chosen
        rule backward.

    Raises:
        ValueError: for any other `rule`.
        NotImplementedError: on a Keras backend other than TensorFlow,
            JAX or PyTorch.

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import _backend, binary
    >>> x = keras.ops.convert_to_tensor(np.array([-2.0, -0.5, 0.5, 2.0], "float32"))
    >>> ste = binary.binary_sign("ste")
    >>> print(keras.ops.convert_to_numpy(ste(x)))
    [-1. -1.  1.  1.]
    >>> print(_backend.elementwise_derivative(ste, x))  # 0 where |x| > 1
    [0. 1. 1. 0.]
    >>> print(_backend.elementwise_derivative(binary.binary_sign("linear"), x))
    [1. 1. 1. 1.]
    """
    _validation.require_supported_backend("keras_linbp.binary.binary_sign")
    _check_rule(rule)
    if rule == "linear":
        return linbp_ops.linear_backprop(linbp_activations.sign)
    return linbp_ops.straight_through(linbp_activations.sign, clip=1.0)


@keras.saving.register_keras_serializable(package="keras_linbp")
class BinarySign(linbp_layers.LinearBackprop):
    """The sign activation (`sign(0) = +1`) with a selectable backward rule.

    `rule="linear"` is exactly `LinearBackprop("sign")`; `rule="ste"` passes
    the gradient only where `|x| <= 1`. The binary layers use it as their
    input quantizer (a sublayer, as Larq's quantizers are layers), so
    `keras_linbp.sites.find_activation_sites` finds every binary unit of a
    model as a `"sign"` site of saturation kind `"binary"` and
    `keras_linbp.callbacks.SaturationHistograms` logs it. The site counts
    as fixed (`site.fixed_rule` is the layer's rule): a `LinearBackpropModel` leaves its rule
    alone, whichever it is.

    Args:
        rule: `"linear"` (default) or `"ste"`.
        **kwargs: base layer keyword arguments (`name`, `dtype`).

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import binary
    >>> layer = binary.BinarySign("ste")
    >>> print(keras.ops.convert_to_numpy(layer(np.array([-2.0, 0.0, 0.5], "float32"))))
    [-1.  1.  1.]
    >>> layer.get_config()["rule"]
    'ste'
    """

    def __init__(self, rule="linear", **kwargs):
        kwargs.pop("activation", None)
        kwargs.pop("slope", None)
        _validation.require_supported_backend(type(self).__name__)
        rule = _check_rule(rule)
        super().__init__("sign", **kwargs)
        self.rule = rule
        self._backprop = binary_sign(self.rule)

    def get_config(self):
        config = super().get_config()
        del config["activation"], config["slope"]
        config["rule"] = self.rule
        return config


@keras.saving.register_keras_serializable(package="keras_linbp")
class WeightClip(keras.constraints.Constraint):
    """Clips weights to `[-clip_value, clip_value]` after each update.

    The latent-weight constraint of binary layers (Larq's `weight_clip`):
    a latent weight far outside `[-1, 1]` would need as many updates to
    flip its sign as it is far away.

    Args:
        clip_value: the bound (positive).

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import binary
    >>> clip = binary.WeightClip(1.0)
    >>> print(keras.ops.convert_to_numpy(clip(np.array([-3.0, 0.5, 2.0], "float32"))))
    [-1.   0.5  1. ]
    >>> layer = keras.layers.Dense(4, kernel_constraint=clip)  # any Keras layer
    """

    def __init__(self, clip_value=1.0):
        self.clip_value = _validation.check_clip(clip_value, name="clip_value", allow_none=False)

    def __call__(self, w):
        return keras.ops.clip(w, -self.clip_value, self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}


def _resolve_kernel_constraint(kernel_constraint):
    if isinstance(kernel_constraint, str) and kernel_constraint == "weight_clip":
        return WeightClip(1.0)
    return kernel_constraint


def _check_rule(rule):
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(
            f"Unknown binary backward rule `rule={rule!r}`; expected one of {RULES} "
            "('linear': linear backprop g <- g; 'ste': clipped straight-through "
            "estimator g <- g * 1[|x| <= 1])."
        )
    return rule


class _BinaryMixin:
    """What BinaryDense and BinaryConv2D share: rule, quantizers, config."""

    def _init_binary(self, layer_args, rule, binarize_inputs, kernel_constraint, kwargs):
        """Checks the binary arguments, runs the Keras layer's `__init__` on
        `layer_args` / `kwargs`, then builds the quantizers."""
        # Before the Keras base class runs: a bad argument or backend fails first.
        _validation.require_supported_backend(type(self).__name__)
        rule = _check_rule(rule)
        binarize_inputs = _validation.check_bool("binarize_inputs", binarize_inputs)
        # The Keras layer after the mixin in the class's MRO (Dense, Conv2D).
        super().__init__(
            *layer_args,
            kernel_constraint=_resolve_kernel_constraint(kernel_constraint),
            **kwargs,
        )
        self.rule = rule
        self.binarize_inputs = binarize_inputs
        # Quantizers are derived from `rule` (not serialized themselves).
        # The kernel's is a plain function; the input's is a `BinarySign`
        # sublayer so that site discovery and the saturation callbacks see
        # the layer's binary units.
        self.kernel_quantizer = binary_sign(rule)
        self.input_quantizer = None
        if self.binarize_inputs:
            self.input_quantizer = BinarySign(
                rule, name=f"{self.name}_input_sign", dtype=self.dtype_policy
            )

    def binary_kernel(self):
        """The kernel as used in the forward pass: `sign(latent kernel)`."""
        return self.kernel_quantizer(self.kernel)

    def _quantize_inputs(self, inputs):
        if self.input_quantizer is None:
            return inputs
        return self.input_quantizer(inputs)

    def _binary_config(self, config):
        config.update({"rule": self.rule, "binarize_inputs": self.binarize_inputs})
        return config

    def quantize(self, mode=None, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} is already binarized (1-bit kernel); "
            f"Keras's `quantize({mode!r})` does not apply to it."
        )


@keras.saving.register_keras_serializable(package="keras_linbp")
class BinaryDense(_BinaryMixin, keras.layers.Dense):
    """Densely connected layer with a binary (±1) kernel and binary inputs.

    Forward: `activation(sign(inputs) @ sign(kernel) + bias)` (inputs are
    used as they are when `binarize_inputs=False`, e.g. for a network's
    first layer). The latent float kernel is what the optimizer updates;
    `kernel_constraint="weight_clip"` (the default) keeps it in `[-1, 1]`.
    Backward through the signs: `rule` (see the module docstring).

    Args:
        units: dimensionality of the output space.
        rule: `"linear"` (linear backprop, default) or `"ste"` (clipped
            straight-through estimator).
        binarize_inputs: binarize the inputs with sign (default True).
        kernel_constraint: `"weight_clip"` (default: `WeightClip(1.0)`),
            None, or any Keras constraint.
        **kwargs: every other argument of `keras.layers.Dense` (`activation`,
            `use_bias`, `kernel_initializer`, ...).

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import binary
    >>> layer = binary.BinaryDense(3, rule="ste")
    >>> y = layer(np.random.default_rng(0).normal(size=(2, 8)).astype("float32"))
    >>> tuple(y.shape)
    (2, 3)
    >>> print(np.unique(keras.ops.convert_to_numpy(layer.binary_kernel())))
    [-1.  1.]
    """

    def __init__(self, units, rule="linear", binarize_inputs=True, kernel_constraint="weight_clip", **kwargs):
        self._init_binary((units,), rule, binarize_inputs, kernel_constraint, kwargs)

    def call(self, inputs, training=None):
        x = keras.ops.matmul(self._quantize_inputs(inputs), self.binary_kernel())
        if self.bias is not None:
            x = keras.ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def get_config(self):
        return self._binary_config(super().get_config())


@keras.saving.register_keras_serializable(package="keras_linbp")
class BinaryConv2D(_BinaryMixin, keras.layers.Conv2D):
    """2D convolution with a binary (±1) kernel and binary inputs.

    Forward: `activation(conv(sign(inputs), sign(kernel)) + bias)` (inputs
    used as they are when `binarize_inputs=False`). With `padding="same"`
    the binarized input is padded with zeros. The latent float kernel is
    what the optimizer updates; `kernel_constraint="weight_clip"` (the
    default) keeps it in `[-1, 1]`. Backward through the signs: `rule`.

    Args:
        filters: number of output channels.
        kernel_size: int or tuple of 2 ints.
        rule: `"linear"` (linear backprop, default) or `"ste"` (clipped
            straight-through estimator).
        binarize_inputs: binarize the inputs with sign (default True).
        kernel_constraint: `"weight_clip"` (default: `WeightClip(1.0)`),
            None, or any Keras constraint.
        **kwargs: every other argument of `keras.layers.Conv2D` (`strides`,
            `padding`, `use_bias`, `activation`, ...).

    Example:

    >>> import numpy as np
    >>> from keras_linbp import binary
    >>> layer = binary.BinaryConv2D(4, 3, padding="same", use_bias=False)
    >>> y = layer(np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32"))
    >>> tuple(y.shape)
    (2, 8, 8, 4)
    """

    def __init__(
        self, filters, kernel_size, rule="linear", binarize_inputs=True, kernel_constraint="weight_clip", **kwargs
    ):
        self._init_binary((filters, kernel_size), rule, binarize_inputs, kernel_constraint, kwargs)

    def call(self, inputs):
        outputs = self.convolution_op(self._quantize_inputs(inputs), self.binary_kernel())
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (self.filters,)
            else:
                bias_shape = (1, self.filters) + (1,) * self.rank
            outputs = keras.ops.add(outputs, keras.ops.reshape(self.bias, bias_shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self):
        return self._binary_config(super().get_config())
