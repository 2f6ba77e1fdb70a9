"""The places of a model that could apply an activation, and what each applies.

Before a forward call is observed, every layer of the model is read for
places that could hold an activation: a layer attribute in
`ACTIVATION_ATTRIBUTES` (`Dense(..., activation="gelu")`, an RNN cell's
`recurrent_activation`, `keras.layers.Activation`) or the `call` of a
Keras activation layer (`CALL_SITE_LAYERS`, keras_linbp's `LinearBackprop`
layers). Observation (`keras_linbp.sites.discovery`) then keeps those that
really run.
"""

import keras

from keras_linbp import _compat
from keras_linbp import activations as linbp_activations
from keras_linbp import rules
from keras_linbp.sites import dispatch

__all__ = [
    "ACTIVATION_ATTRIBUTES",
    "CALL_SITE_LAYERS",
    "candidates",
    "describe_function",
    "recurrent_layers",
    "walk",
]

ACTIVATION_ATTRIBUTES = ("activation", "recurrent_activation")
CALL_SITE_LAYERS = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Softmax,
)


def walk(model):
    """`[(layer, path)]` for `model` (path "") and every layer inside it,
    depth first in `model.layers` order, each layer once.

    Example:

    >>> import keras
    >>> from keras_linbp import sites
    >>> inner = keras.Sequential([keras.layers.Dense(2, name="d")], name="block")
    >>> model = keras.Sequential([keras.Input((3,)), inner], name="net")
    >>> [path for layer, path in sites.walk(model) if not isinstance(layer, keras.layers.InputLayer)]
    ['', 'block', 'block/d']
    """
    out = []
    seen = set()

    def visit(layer, prefix):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        path = f"{prefix}/{layer.name}" if prefix else (layer.name if layer is not model else "")
        out.append((layer, path))
        for child in _compat.child_layers(layer):
            visit(child, path)

    visit(model, "")
    return out


def recurrent_layers(model):
    """The ids of the layers of `model` that run inside a recurrence: every
    layer inside a `keras.layers.RNN` (`LSTM`, `GRU`, `SimpleRNN`,
    `ConvLSTM*`, also as the halves of a `Bidirectional`) and every RNN
    cell (a layer with a `state_size`, the cell protocol of
    `keras.layers.RNN`), whose activations are applied once per time step.

    Example:

    >>> import keras
    >>> from keras_linbp import sites
    >>> from keras_linbp.sites import candidates
    >>> model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, name="lstm"),
    ...                           keras.layers.Dense(2, name="head")])
    >>> ids = candidates.recurrent_layers(model)
    >>> [path for layer, path in sites.walk(model) if id(layer) in ids]
    ['lstm', 'lstm/lstm_cell']
    """
    found = set()
    for layer, _ in walk(model):
        if isinstance(layer, keras.layers.RNN):
            found.update(id(inner) for inner, _ in walk(layer))
        elif layer is not model and hasattr(layer, "state_size"):
            found.update(id(inner) for inner, _ in walk(layer))
    return found


def describe_function(fn):
    """(activation_name, saturation, fixed_rule) of an activation function.

    Example:

    >>> import keras
    >>> from keras_linbp import activations
    >>> from keras_linbp.sites import candidates
    >>> candidates.describe_function(keras.activations.tanh)
    ('tanh', 'bounded', None)
    >>> candidates.describe_function(activations.linbp_relu)
    ('relu', 'rectifier', LinearRule(slope=1.0))
    >>> candidates.describe_function(keras.activations.mish)
    ('mish', 'unknown', None)
    """
    fn = getattr(fn, "_linbp_original", fn)
    if isinstance(fn, str):
        fn = linbp_activations.get(fn)
    # A function that carries a rule (a rule function, a `linbp_*`
    # activation) fixes it; its activation is the forward inside it.
    fixed_rule = rules.rule_of(fn)
    if fixed_rule is not None:
        fn = getattr(fn, "forward", fn)
    spec = linbp_activations.find_spec(fn)
    if spec is not None:
        return spec.name, spec.saturation, fixed_rule
    name = getattr(fn, "__name__", type(fn).__name__)
    if fn is keras.activations.softmax or name == "softmax":
        return "softmax", "softmax", None
    return name, "unknown", None


def _relu_layer_name(layer):
    """The activation a `keras.layers.ReLU` applies, from its settings."""
    max_value = layer.max_value
    negative_slope = float(layer.negative_slope)
    threshold = float(layer.threshold)
    if threshold == 0 and negative_slope == 0:
        if max_value is None:
            return "relu"
        if float(max_value) == 6:
            return "relu6"
    parts = []
    if negative_slope:
        parts.append(f"negative_slope={negative_slope:g}")
    if max_value is not None:
        parts.append(f"max_value={float(max_value):g}")
    if threshold:
        parts.append(f"threshold={threshold:g}")
    return f"relu({', '.join(parts)})"


def _call_site(layer):
    """(activation_name, saturation, fixed_rule) when `layer`'s call is the
    non-linearity, else None."""
    layer_rule = rules.rule_of(layer)
    if layer_rule is not None:
        # A rule layer (`LinearBackprop`, `FewBit`, a binary sign) fixes its rule.
        name, saturation, _ = describe_function(layer.activation_fn)
        return name, saturation, layer_rule
    if type(layer) is keras.layers.ReLU:
        name = _relu_layer_name(layer)
        return name, "rectifier", None
    if type(layer) is keras.layers.Softmax:
        return "softmax", "softmax", None
    if type(layer) is keras.layers.LeakyReLU:
        return "leaky_relu", "rectifier", None
    if type(layer) is keras.layers.ELU:
        return "elu", "rectifier", None
    if type(layer) is keras.layers.PReLU:
        return "prelu", "rectifier", None
    return None


def candidates(model):
    """{key: (layer, layer_path, attribute, description)} of every place
    that could apply an activation through an attribute or a layer call;
    `description` is `(activation_name, saturation, fixed_rule)`."""
    found = {}
    for layer, path in walk(model):
        if layer is model and isinstance(model, keras.Model):
            continue
        described = _call_site(layer)
        if described is not None:
            found[dispatch.attribute_key(layer, "call")] = (layer, path, "call", described)
            continue
        for attribute in ACTIVATION_ATTRIBUTES:
            # Only real instance attributes: RNN layers expose their cell's
            # activation through a read-only property; the cell is the site.
            fn = layer.__dict__.get(attribute)
            fn = getattr(fn, "_linbp_original", fn)
            if fn is None or not callable(fn) or fn is keras.activations.linear:
                continue
            described = describe_function(fn)
            if described[0] == "linear":
                continue
            found[dispatch.attribute_key(layer, attribute)] = (layer, path, attribute, described)
    return found
