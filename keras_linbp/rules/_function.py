"""`RuleFunction`: an activation with a rule's backward, as one callable.

What `keras_linbp.linear_backprop`, `straight_through`, `few_bit` and
`from_output` return. It carries its rule (`fn.backward_rule`) and its
forward function (`fn.forward`), so the sites, the summary and the
callbacks can read what it does, and it is a registered Keras object with
a config, so `Dense(activation=keras_linbp.few_bit("gelu", bits=2))`
survives `model.save` / `keras.saving.load_model` on every backend.
"""

import keras

from keras_linbp import _backend
from keras_linbp import _table
from keras_linbp.rules import _registry

__all__ = ["RuleFunction", "check_floating", "deserialize_forward", "serialize_forward"]


def check_floating(x, what="linear backprop"):
    """Converts `x` to a tensor and raises `TypeError` unless it is floating.

    Args:
        x: a tensor, array or `keras.Variable`.
        what: the function checking, for the error message.

    Returns:
        `x` as a backend tensor (a variable is read first).

    Raises:
        TypeError: for a symbolic `keras.Input`-style tensor, or an integer,
            bool or complex dtype.

    Example:

    >>> import keras, numpy as np
    >>> from keras_linbp import ops
    >>> x = ops.check_floating(np.array([1.0, 2.0], "float32"))
    >>> keras.backend.standardize_dtype(x.dtype)
    'float32'
    >>> ops.check_floating(np.array([1, 2], "int32"))
    Traceback (most recent call last):
    ...
    TypeError: linear backprop needs a floating-point input (float16, bfloat16, float32 or float64); got dtype int32. Cast the input, e.g. `keras.ops.cast(x, 'float32')`.
    """
    if keras.backend.is_keras_tensor(x):
        # A functional-model placeholder: a custom gradient needs real
        # tensors, which only exist once a layer calls the function.
        raise TypeError(
            f"{what} got a symbolic `keras.Input`-style tensor. Use it as a "
            "layer's activation (`keras.layers.Dense(8, activation=fn)`, "
            "`keras.layers.Activation(fn)`) or use the layer "
            "`keras_linbp.layers.LinearBackprop(activation)`."
        )
    if isinstance(x, keras.Variable):
        # Read the variable here, outside the rule's forward: a variable
        # read inside it would count as a parameter of the activation.
        x = x.value
    x = keras.ops.convert_to_tensor(x)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(x, tf.Variable):
            x = tf.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise TypeError(
            f"{what} needs a floating-point input (float16, bfloat16, "
            f"float32 or float64); got dtype {dtype}. Cast the input, "
            "e.g. `keras.ops.cast(x, 'float32')`."
        )
    return x


def serialize_forward(forward):
    """A table function as its table name; any other callable in Keras's
    full object form (`keras.activations.serialize` would give a bare name
    for Keras-only functions such as `mish`, which the table does not know)."""
    if isinstance(forward, str):
        return forward
    spec = _table.find_spec(forward)
    if spec is not None and forward is spec.forward:
        return spec.name
    return keras.saving.serialize_keras_object(forward)


def deserialize_forward(config):
    """The forward function `serialize_forward` saved (a table name stays a
    name; the table's error lists the valid ones)."""
    if isinstance(config, str):
        return config
    forward = keras.activations.deserialize(config)
    if callable(forward):
        return forward
    if isinstance(forward, str) and forward in _table.valid_names():
        return forward
    raise ValueError(
        f"Could not locate the activation function {config.get('config')!r}. "
        "Decorate it with `@keras.saving.register_keras_serializable()` and "
        "import it before loading, or pass it in `custom_objects`."
    )


def _name_of(fn):
    return getattr(fn, "__name__", type(fn).__name__)


@keras.saving.register_keras_serializable(package="keras_linbp")
class RuleFunction:
    """`forward` with `rule`'s gradient w.r.t. its first argument.

    Called as `fn(x, *args, **kwargs)`; extra arguments go to `forward`.
    Its name is `<rule>_<forward>` (`few_bit_gelu`); the rule's fields read
    as attributes (`fn.slope`, `fn.bits`, ...).

    Args:
        forward: the activation function (resolved, not a name).
        rule: a `keras_linbp.rules.Rule`, already completed for `forward`
            (`rule.for_forward(forward)`).
    """

    def __init__(self, forward, rule):
        self.forward = forward
        self.backward_rule = rule
        self.__name__ = f"{rule.name}_{_name_of(forward)}"
        self._label = f"{rule.name}({_name_of(forward)})"

    def __call__(self, x, *args, **kwargs):
        x = check_floating(x, self._label)
        backward = self.backward_rule.for_call(self.forward, args, kwargs)
        return _backend.apply_rule(self.forward, x, args, kwargs, backward)

    def __getattr__(self, name):
        # The rule's fields and properties (`slope`, `clip`, `bits`,
        # `table`, `bounds`, `levels`): what 0.3's functions carried.
        if name.startswith("_") or name in ("forward", "backward_rule"):
            raise AttributeError(name)
        try:
            return getattr(self.backward_rule, name)
        except AttributeError:
            pass
        extra = self.backward_rule.attributes(self.forward)
        if name in extra:
            return extra[name]
        raise AttributeError(f"{self.__name__!r} has no attribute {name!r}")

    def __repr__(self):
        return f"<RuleFunction {self.__name__}: {self.backward_rule!r}>"

    def __eq__(self, other):
        return (
            isinstance(other, RuleFunction)
            and other.forward is self.forward
            and other.backward_rule == self.backward_rule
        )

    def __hash__(self):
        return hash((id(self.forward), self.backward_rule))

    def get_config(self):
        return {"forward": serialize_forward(self.forward), "rule": _registry.serialize(self.backward_rule)}

    @classmethod
    def from_config(cls, config):
        forward = _table.get(deserialize_forward(config["forward"]))
        return cls(forward, _registry.deserialize(config["rule"]))
