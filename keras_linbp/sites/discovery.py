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

What a site is lives in `keras_linbp.sites.site` (`ActivationSite`), which
places could hold one in `keras_linbp.sites.candidates`; this module runs
the observation and turns what it saw into sites.
"""

import keras

from keras_linbp import _compat
from keras_linbp import activations as linbp_activations
from keras_linbp.sites import dispatch
from keras_linbp.sites.candidates import candidates as _candidates
from keras_linbp.sites.candidates import recurrent_layers
from keras_linbp.sites.candidates import walk
from keras_linbp.sites.gates import mark_gates
from keras_linbp.sites.site import ActivationSite

# Defined beside the concepts they belong to; importable from here as in 0.2
# (`keras_linbp.sites.discovery.KINDS`, ...).
from keras_linbp.sites.candidates import ACTIVATION_ATTRIBUTES  # noqa: F401
from keras_linbp.sites.candidates import CALL_SITE_LAYERS  # noqa: F401
from keras_linbp.sites.site import KINDS  # noqa: F401
from keras_linbp.sites.site import original_function  # noqa: F401

__all__ = [
    "ActivationSite",
    "KINDS",
    "find_activation_sites",
    "find_unconverted",
    "original_function",
    "walk",
]

# TensorFlow op types that apply a non-linearity: seen in a traced forward
# outside every site, they were computed by a direct tf.* call.
_NONLINEAR_TF_OPS = {
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Softplus", "Softsign",
    "Sigmoid", "Tanh", "Softmax", "Erf",
}


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
            try:
                _compat.symbolic_call(forward, symbolic)
            except Exception:
                # JAX traces unknown dimensions as symbolic sizes, which
                # some layers cannot compare (keras-hub's PositionEmbedding
                # slices by the sequence length): trace once more with each
                # unknown non-batch dimension given a small concrete size.
                _compat.symbolic_call(forward, _concrete_inner_dims(symbolic))


def _concrete_inner_dims(symbolic, size=8):
    def concrete(t):
        shape = (t.shape[0], *(size if d is None else d for d in t.shape[1:]))
        return keras.KerasTensor(shape, dtype=t.dtype)

    return keras.tree.map_structure(concrete, symbolic)


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

    Raises:
        ValueError: if the model is not built, or its input structure
            cannot be known without `inputs`.

    Example:

    An activation computed inside a layer's own `call()` is an `"op"` site
    of that layer:

    >>> import keras
    >>> import keras_linbp
    >>> class GeluGate(keras.layers.Layer):
    ...     def call(self, x):
    ...         return keras.activations.gelu(x) * x
    >>> model = keras.Sequential([keras.Input((3,)), GeluGate(name="gate"),
    ...                           keras.layers.Dense(2, activation="sigmoid", name="out")])
    >>> [(s.path, s.kind, s.saturation) for s in keras_linbp.sites.find_activation_sites(model)]
    [('gate:gelu', 'op', 'rectifier'), ('out', 'attribute', 'bounded')]
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
    recurrent = recurrent_layers(model)
    for depth, site in enumerate(sites, start=1):
        site.depth = depth
        if site.kind != "op" and id(site.layer) in output_layers:
            site.is_output = True
        site.is_recurrent = id(site.layer) in recurrent
    mark_gates(sites)
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
    carries the Keras name scope of the layer that created it (always empty
    on JAX and PyTorch, whose traces are not TensorFlow graphs).

    Example:

    >>> import keras
    >>> import keras_linbp
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
    >>> keras_linbp.sites.find_unconverted(model)
    []
    """
    find_activation_sites(model)
    return list(model.__dict__.get("_linbp_unreached_ops", ()))
