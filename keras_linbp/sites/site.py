"""`ActivationSite`: one activation that runs in a model's forward pass.

Sites are made by `keras_linbp.sites.find_activation_sites`, which observes
a forward call (`keras_linbp.sites.discovery`); this module holds what a
site is and what can be read off it.
"""

import dataclasses

import keras

from keras_linbp import activations as linbp_activations
from keras_linbp.sites import dispatch

__all__ = ["KINDS", "ActivationSite", "original_function"]

KINDS = ("attribute", "layer call", "op")


@dataclasses.dataclass(eq=False)
class ActivationSite:
    """One activation site: an activation that runs in the model's forward.

    Attributes:
        layer: the layer whose call applies the activation (for `"op"`
            sites, the innermost layer running the op).
        path: a unique name: the layer's `/`-joined path from the outermost
            model (`"block_1/dense_3"`), with `":<attribute>"` or
            `":<op>"` (and `"#<n>"` for the n-th call of the same op) where
            the layer has more than one site or the site is an op.
        kind: `"attribute"`, `"layer call"` or `"op"`.
        attribute: the attribute swapped (`"activation"`,
            `"recurrent_activation"`, `"call"`) or the op name (`"gelu"`).
        activation_name: e.g. `"relu"`, `"relu6"` (for `ReLU(max_value=6)`);
            the function's `__name__` for a function outside the table.
        saturation: the table's saturation kind, `"softmax"`, or
            `"unknown"`.
        depth: 1-based position among all sites, in call order.
        is_output: the activation's output is a model output (or the site
            belongs to a functional model's output layer).
        is_gate: a multiplicative gate: a bounded activation (sigmoid,
            tanh, hard_sigmoid, a capped ReLU such as ReLU6) whose value a
            functional graph uses only as a factor of elementwise products
            with another tensor (`keras.layers.Multiply`,
            `keras.ops.multiply`, `*`), possibly after shifts and scalings
            by constants (`ReLU(6)(x + 3) / 6`, `Rescaling`), like the
            squeeze-and-excitation gates of EfficientNet and MobileNetV3.
            The value is a layer's output, a functional `keras.ops.sigmoid`
            node, or a `Lambda` ending in the activation (see
            `keras_linbp.sites.gates`). The tensor a gate scales also
            feeds other layers, so it is not a gate.
        gate_checked: False where the detector cannot know whether a
            bounded activation is a gate: it runs inside a layer's own
            `call()` (an op site of a custom layer, a sublayer called
            there), not as a node of a functional graph.
        is_recurrent: the site runs inside a recurrence: an RNN cell's
            `activation` / `recurrent_activation` (`LSTM`, `GRU`,
            `SimpleRNN`, `Bidirectional` ones included) or any activation
            of a layer inside a `keras.layers.RNN`; linear backprop through
            time applies the rule once per time step.
        fixed_rule: the backward rule (a `keras_linbp.rules.Rule`) the
            layer or function fixes itself, whatever the model does: a
            rule layer's (`LinearBackprop`, `FewBit`, a binary sign), a rule
            function's (`keras_linbp.few_bit(...)`, `linear_backprop(...)`)
            or a `linbp_*` activation's; None for an ordinary site.
        layer_path: the layer's path alone.
        occurrence: for `"op"` sites, how many calls of the same op came
            before it in one call of the layer.

    Example:

    >>> import keras
    >>> import keras_linbp
    >>> inputs = keras.Input((3,))
    >>> hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(hidden))
    >>> for site in keras_linbp.sites.find_activation_sites(model):
    ...     print(site.depth, site.path, site.kind, site.activation_name, site.saturation, site.is_output)
    1 hidden attribute tanh bounded False
    2 out attribute softmax softmax True
    """

    layer: keras.layers.Layer
    path: str
    kind: str
    attribute: str
    activation_name: str
    saturation: str
    depth: int = 0
    is_output: bool = False
    is_gate: bool = False
    gate_checked: bool = True
    is_recurrent: bool = False
    fixed_rule: object = None
    layer_path: str = ""
    occurrence: int = 0

    @property
    def name(self):
        """The layer's name."""
        return self.layer.name

    @property
    def key(self):
        """The dispatch key of the site."""
        if self.kind == "op":
            return dispatch.op_key(self.layer, self.attribute, self.occurrence)
        return dispatch.attribute_key(self.layer, self.attribute)

    @property
    def function(self):
        """The site's forward function as the model defines it."""
        if self.kind == "op":
            return dispatch.op_original(self.attribute)
        fn = getattr(self.layer, self.attribute)
        return getattr(fn, "_linbp_original", fn)

    @property
    def spec(self):
        """The table's `ActivationSpec`, or None outside the table."""
        return linbp_activations.ACTIVATIONS.get(self.activation_name)

    @property
    def is_softmax(self):
        return self.saturation == "softmax"


def original_function(site):
    """The site's function as the model defines it (ignoring any swap)."""
    return site.function

