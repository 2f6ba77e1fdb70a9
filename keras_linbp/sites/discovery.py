"""Finding the activation sites of a model by observing a forward call.

A site is an activation that actually runs. `find_activation_sites(model)`
traces one forward call of the model (a `tf.function` trace on symbolic
tensors: nothing is computed) with recording dispatchers in place, and
returns, in call order, every place where an activation ran:

- `"attribute"`: a layer attribute holding the activation, called by the
  layer (`Dense(..., activation="gelu")`, an RNN cell's
  `recurrent_activation`, `keras.layers.Activation`, a custom layer calling
  its stored `self.activation(x)`);
- `"layer call"`: a Keras activation layer whose `call` is the
  non-linearity (`ReLU`, `LeakyReLU`, `ELU`, `PReLU`, `Softmax`,
  keras_linbp's `LinearBackprop` layers);
- `"op"`: a `keras.ops.*` / `keras.activations.*` call inside a layer's own
  `call()` (keras-hub's `GemmaDecoderBlock` computes
  `keras.activations.gelu(x1, approximate=True) * x2` there), attributed to
  the innermost layer running it.

An attribute that is stored but never called (a custom layer handing
`self.activation` to a sublayer) or a sublayer that never runs
(`MultiHeadAttention`'s softmax layer when it uses
`ops.dot_product_attention`) is not a site. Direct `tf.nn.*` / `tf.math.*`
calls bypass Keras and cannot be re-routed; `find_unconverted` lists the
non-linear TensorFlow ops the trace saw outside every site.
"""

import dataclasses

import keras

from keras_linbp import _compat
from keras_linbp import activations as linbp_activations
from keras_linbp import layers as linbp_layers
from keras_linbp.sites import dispatch

ACTIVATION_ATTRIBUTES = ("activation", "recurrent_activation")
CALL_SITE_LAYERS = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Softmax,
)
KINDS = ("attribute", "layer call", "op")
# TensorFlow op types that apply a non-linearity: seen in a traced forward
# outside every site, they were computed by a direct tf.* call.
_NONLINEAR_TF_OPS = {
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Softplus", "Softsign",
    "Sigmoid", "Tanh", "Softmax", "Erf",
}
_LIBRARY_MODULES = ("keras.", "keras_linbp.", "keras_hub.")


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
            tanh, hard_sigmoid, ...) whose layer's output a functional
            graph uses only as a factor of elementwise products
            (`keras.layers.Multiply`, `keras.ops.multiply`, `*`), like the
            squeeze-and-excitation gate of EfficientNet. The tensor it
            scales also feeds other layers, so it is not a gate. Gates
            inside a layer's own `call()` are not detected.
        fixed_rule: the backward rule the layer or function fixes itself,
            whatever the model does: `"linear"` for a `LinearBackprop`
            layer or a `linbp_*` activation, the layer's `rule` for a
            binary sign (`"ste"`); None for an ordinary site.
        layer_path: the layer's path alone.
        occurrence: for `"op"` sites, how many calls of the same op came
            before it in one call of the layer.
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
    fixed_rule: str | None = None
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


def _is_library_class(cls):
    return cls.__module__.startswith(_LIBRARY_MODULES) or cls.__module__ in (
        "keras",
        "keras_linbp",
    )


def _describe_function(fn):
    """(activation_name, saturation, fixed_rule) of an activation function."""
    fn = getattr(fn, "_linbp_original", fn)
    if isinstance(fn, str):
        fn = linbp_activations.get(fn)
    spec = linbp_activations.find_spec(fn)
    fixed_rule = "linear" if getattr(fn, "_linbp_activation", None) else None
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
    if isinstance(layer, linbp_layers.LinearBackprop):
        name, saturation, _ = _describe_function(layer.activation)
        # A binary sign layer fixes its own rule (`rule="ste"` or "linear").
        return name, saturation, getattr(layer, "rule", "linear")
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


def _candidates(model):
    """{key: (layer, layer_path, attribute, description)} of every place
    that could apply an activation through an attribute or a layer call."""
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
            described = _describe_function(fn)
            if described[0] == "linear":
                continue
            found[dispatch.attribute_key(layer, attribute)] = (layer, path, attribute, described)
    return found


def walk(model):
    """`[(layer, path)]` for `model` (path "") and every layer inside it,
    depth first in `model.layers` order, each layer once."""
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


# --- observation ------------------------------------------------------------


def _symbolic_inputs(model, inputs):
    """A nested structure of `keras.KerasTensor` (batch dimension None) to
    observe `model` with."""

    def spec_of(t):
        dtype = keras.backend.standardize_dtype(getattr(t, "dtype", None) or model.input_dtype)
        return keras.KerasTensor((None,) + tuple(t.shape)[1:], dtype=dtype)

    if inputs is not None:
        return keras.tree.map_structure(spec_of, inputs)
    if isinstance(model, (keras.Sequential, _compat.Functional)) and getattr(model, "inputs", None):
        inputs, _ = _compat.functional_io(model)
        return keras.tree.map_structure(spec_of, inputs)
    shapes = _compat.build_shapes(model)
    if len(shapes) == 1:
        (shape,) = shapes.values()

        def make(s):
            return keras.KerasTensor((None,) + tuple(s)[1:], dtype=model.input_dtype)

        return keras.tree.map_shape_structure(make, shape)
    raise ValueError(
        f"Cannot find the activation sites of {model.name!r}: it was built "
        f"with {len(shapes)} input arguments ({list(shapes)}), so its "
        "forward pass cannot be observed. Pass example inputs (`inputs=`)."
    )


def _trace(forward, symbolic):
    """Runs `forward` once on symbolic stand-ins for `symbolic` without
    computing anything: a `tf.function` trace on TensorFlow, Keras's own
    shape inference (`jax.eval_shape`, PyTorch meta tensors) elsewhere."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        def to_spec(t):
            return tf.TensorSpec(t.shape, tf.as_dtype(t.dtype))

        specs = keras.tree.map_structure(to_spec, symbolic)
        tf.function(forward, autograph=False).get_concrete_function(specs)
    else:
        with keras.StatelessScope():
            _compat.symbolic_call(forward, symbolic)


def _observe(model, inputs=None):
    """Observes one forward call of `model`; returns (events, candidates,
    result) where result holds the outputs and (TF) the traced graph."""
    if not model.built:
        raise ValueError(
            f"Cannot find the activation sites of {model.name!r}: it is not "
            "built. Build it first (call it on a batch, give it an `Input`, "
            "or `model.build(input_shape)`)."
        )
    symbolic = _symbolic_inputs(model, inputs)
    candidates = _candidates(model)
    events = []
    result = {}

    def forward(x):
        # Shape inference may call this more than once: keep the last call.
        events.clear()
        outputs = model(x, training=True)
        result["outputs"] = keras.tree.flatten(outputs)
        result["graph"] = dispatch.current_graph()
        return outputs

    st = dispatch.state()
    installed = []
    dispatch.install_ops()
    try:
        for layer, _, attribute, _ in candidates.values():
            dispatch.install_attribute(layer, attribute)
            installed.append((layer, attribute))
        st.observers.append(events.append)
        try:
            _trace(forward, symbolic)
        finally:
            st.observers.remove(events.append)
    finally:
        for layer, attribute in installed:
            dispatch.uninstall_attribute(layer, attribute)
        dispatch.uninstall_ops()
    return events, candidates, result


def find_activation_sites(model, inputs=None, refresh=False):
    """Returns the activation sites of `model` that run, in call order.

    Traces one forward call (`training=True`) of the model on symbolic
    inputs with recording dispatchers in place (see the module doc). The
    result is cached on the model.

    Args:
        model: a built Keras model (or layer).
        inputs: optional example inputs (tensors or `keras.Input`s) giving
            the input structure, shapes and dtypes; by default a functional
            model's inputs or the shapes a subclassed model was built with.
        refresh: observe again even if a result is cached.

    Returns:
        A list of `ActivationSite`.
    """
    cached = model.__dict__.get("_linbp_observed_sites")
    if cached is not None and not refresh:
        return list(cached)
    events, candidates, result = _observe(model, inputs)
    paths = dict((id(layer), path) for layer, path in walk(model))
    output_ids = {id(t) for t in result.get("outputs", [])}
    output_layers = {id(layer) for layer in _output_layers(model)}

    sites = []
    by_key = {}
    for event in events:
        site = by_key.get(event.key)
        if site is None:
            site = _site_from_event(event, candidates, paths)
            if site is None:
                continue
            by_key[event.key] = site
            sites.append(site)
            site._events = []
        site._events.append(event)
        if id(event.output) in output_ids:
            site.is_output = True
    _name_paths(sites)
    for depth, site in enumerate(sites, start=1):
        site.depth = depth
        if site.kind != "op" and id(site.layer) in output_layers:
            site.is_output = True
        site.is_gate = _is_gate(site)
    unreached = _unreached_ops(result.get("graph"), events)
    for site in sites:
        site._group = sites
        del site._events
    object.__setattr__(model, "_linbp_observed_sites", tuple(sites))
    object.__setattr__(model, "_linbp_unreached_ops", tuple(unreached))
    return list(sites)


def _site_from_event(event, candidates, paths):
    layer = event.layer
    if layer is None:
        return None
    layer_path = paths.get(id(layer), layer.name)
    if event.op is not None:
        name = "tanh" if event.op == "tanh" else event.op
        spec = linbp_activations.ACTIVATIONS.get(name)
        saturation = "softmax" if name == "softmax" else (spec.saturation if spec else "unknown")
        return ActivationSite(
            layer, layer_path, "op", event.op, name, saturation,
            layer_path=layer_path, occurrence=event.occurrence,
        )
    candidate = candidates.get(event.key)
    if candidate is None:
        return None
    _, _, attribute, (name, saturation, fixed_rule) = candidate
    kind = "layer call" if attribute == "call" else "attribute"
    return ActivationSite(
        layer, layer_path, kind, attribute, name, saturation,
        fixed_rule=fixed_rule, layer_path=layer_path,
    )


def _name_paths(sites):
    """Unique site paths: the layer path alone for a layer's only
    attribute/call site; `path:attribute` / `path:op[#n]` otherwise."""
    per_layer = {}
    for site in sites:
        per_layer.setdefault(id(site.layer), []).append(site)
    for group in per_layer.values():
        for site in group:
            if site.kind == "op":
                suffix = f":{site.attribute}" + (f"#{site.occurrence}" if site.occurrence else "")
            elif len(group) > 1:
                suffix = f":{site.attribute}"
            else:
                suffix = ""
            base = site.layer_path or site.layer.name
            site.path = base + suffix


def _is_gate(site):
    """Whether `site` is a multiplicative gate (see `ActivationSite.is_gate`)."""
    if site.kind == "op" or site.saturation != "bounded":
        return False
    consumers = _compat.consuming_operations(site.layer)
    return bool(consumers) and all(_compat.is_multiply_operation(op) for op in consumers)


def _output_layers(model):
    """The layers producing `model`'s outputs (into nested models)."""
    if not isinstance(model, keras.Model):
        return []
    if isinstance(model, keras.Sequential):
        layers = model.layers[-1:]
    else:
        layers = _compat.output_layers_of_history(model)
    found = []
    for layer in layers:
        found.append(layer)
        if isinstance(layer, keras.Model) and layer is not model:
            found.extend(_output_layers(layer))
    return found


def _unreached_ops(graph, events):
    """Non-linear TF ops of the traced forward that no site produced."""
    if graph is None:
        return []
    reached = set()
    for event in events:
        if event.graph is graph:
            reached.update(range(event.first_op, event.last_op))
    names = []
    for index, op in enumerate(graph.get_operations()):
        if op.type in _NONLINEAR_TF_OPS and index not in reached:
            names.append((op.name, op.type))
    return names


def find_unconverted(model):
    """Non-linearities the forward pass applies that no site reaches.

    These are direct TensorFlow calls (`tf.nn.relu(x)`, `tf.math.tanh(x)`)
    inside a layer's `call()`: they bypass Keras's activation functions, so
    they keep exact backprop. Returns `[(tf op name, op type)]`; the op name
    carries the Keras name scope of the layer that created it.
    """
    find_activation_sites(model)
    return list(model.__dict__.get("_linbp_unreached_ops", ()))


__all__ = [
    "ActivationSite",
    "KINDS",
    "find_activation_sites",
    "find_unconverted",
    "original_function",
    "walk",
]
