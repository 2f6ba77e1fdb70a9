"""Find every activation site of a Keras model, and swap site functions.

An *activation site* is a place where a model applies a non-linearity that
keras_linbp can re-route:

- `"attribute"` sites: a layer attribute `activation` (or
  `recurrent_activation`) holding a function -- `Dense`, `Conv*`,
  `SeparableConv*`, `DepthwiseConv*`, `EinsumDense`, RNN cells,
  `keras.layers.Activation`, ...
- `"call"` sites: Keras's built-in activation layers whose `call` is the
  non-linearity -- `ReLU`, `LeakyReLU`, `ELU`, `Softmax`.

`find_activation_sites(model)` is the one discovery function of the
package: `LinearBackpropModel` uses it to swap sites to the linear backward
rule during `train_step`, the callbacks use it to swap sites to recording
wrappers during a probe forward. `swap_sites(sites, make_replacement)` does
the swapping for the length of a `with` block; it is thread-safe (the
replicas of a `tf.distribute.MirroredStrategy` trace in separate threads)
and restores the model exactly on exit.

What cannot be seen: activations written inside a custom layer's or a
subclassed model's own `call()` (`tf.nn.relu(x)`) never pass through a
layer attribute. `find_unconverted(model)` lists such layers so that
summaries can say so.
"""

import contextlib
import dataclasses
import re
import threading
from typing import Callable

import keras

from keras_linbp import activations as linbp_activations
from keras_linbp import layers as linbp_layers

ACTIVATION_ATTRIBUTES = ("activation", "recurrent_activation")
CALL_SITE_LAYERS = {
    keras.layers.ReLU: "relu",
    keras.layers.LeakyReLU: "leaky_relu",
    keras.layers.ELU: "elu",
    keras.layers.Softmax: "softmax",
}
_LIBRARY_MODULES = ("keras.", "keras_linbp.")


@dataclasses.dataclass(eq=False)
class ActivationSite:
    """One activation site.

    Attributes:
        layer: the layer that applies the activation.
        path: `/`-joined layer names from the outermost model, e.g.
            `"block_1/dense_3"`.
        kind: `"attribute"` or `"call"`.
        attribute: the attribute swapped (`"activation"`,
            `"recurrent_activation"` or `"call"`).
        activation_name: e.g. `"relu"`; the function's `__name__` for a
            function outside the table.
        saturation: the table's saturation kind, `"softmax"`, or
            `"unknown"`.
        depth: 1-based position among all sites, in forward order.
        is_output: the site belongs to a model output layer.
        fixed_rule: the backward rule the layer or function fixes itself,
            whatever the model does: `"linear"` for a `LinearBackprop`
            layer or a `linbp_*` activation, the layer's `rule` for a
            binary sign (`"ste"`); None for an ordinary site.
    """

    layer: keras.layers.Layer
    path: str
    kind: str
    attribute: str
    activation_name: str
    saturation: str
    depth: int = 0
    is_output: bool = False
    fixed_rule: str | None = None

    @property
    def name(self):
        """The layer's name (an RNN cell's two sites share it; `attribute` tells them apart)."""
        return self.layer.name

    @property
    def function(self):
        """The site's current forward function (as the layer would call it)."""
        if self.kind == "call":
            return self.layer.call
        return getattr(self.layer, self.attribute)

    @property
    def spec(self):
        """The table's `ActivationSpec`, or None outside the table."""
        return linbp_activations.ACTIVATIONS.get(self.activation_name)

    @property
    def is_softmax(self):
        return self.saturation == "softmax"


def _is_library_class(cls):
    return cls.__module__.startswith(_LIBRARY_MODULES) or cls.__module__ in (
        "keras",
        "keras_linbp",
    )


def _describe_function(fn):
    """(activation_name, saturation, fixed_rule) of an activation function."""
    spec = linbp_activations.find_spec(fn)
    fixed_rule = "linear" if getattr(fn, "_linbp_activation", None) else None
    if spec is not None:
        return spec.name, spec.saturation, fixed_rule
    name = getattr(fn, "__name__", type(fn).__name__)
    if fn is keras.activations.softmax or name == "softmax":
        return "softmax", "softmax", None
    return name, "unknown", None


def _layer_sites(layer, path):
    if isinstance(layer, linbp_layers.LinearBackprop):
        name, saturation, _ = _describe_function(layer.forward)
        # A binary sign layer fixes its own rule (`rule="ste"` or "linear").
        rule = getattr(layer, "rule", "linear")
        return [ActivationSite(layer, path, "call", "call", name, saturation, fixed_rule=rule)]
    for cls, name in CALL_SITE_LAYERS.items():
        if type(layer) is cls:
            saturation = "softmax" if name == "softmax" else "rectifier"
            return [ActivationSite(layer, path, "call", "call", name, saturation)]
    found = []
    for attribute in ACTIVATION_ATTRIBUTES:
        # Only real instance attributes: RNN layers expose their cell's
        # activation through a read-only property; the cell is its own site.
        fn = layer.__dict__.get(attribute)
        if fn is None or not callable(fn) or fn is keras.activations.linear:
            continue
        name, saturation, fixed = _describe_function(fn)
        if name == "linear":
            continue
        found.append(
            ActivationSite(layer, path, "attribute", attribute, name, saturation, fixed_rule=fixed)
        )
    return found


def _children(layer):
    return layer._flatten_layers(include_self=False, recursive=False)


def _output_layers(model):
    """The layers producing `model`'s outputs (recursing into nested models)."""
    if isinstance(model, keras.Sequential):
        layers = model.layers
        return _expand_output(layers[-1]) if layers else set()
    outputs = getattr(model, "_outputs", None) if isinstance(model, keras.Model) else None
    if outputs is None:
        return set()
    found = set()
    for tensor in keras.tree.flatten(outputs):
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            found |= _expand_output(history[0])
    return found


def _expand_output(layer):
    found = {id(layer)}
    if isinstance(layer, keras.Model):
        inner = _output_layers(layer)
        found |= inner
        if not inner:
            # A subclassed model has no graph: guess its output layer.
            found |= _guessed_output_layers(layer)
    return found


def _guessed_output_layers(model):
    """The last leaf layer a subclassed model defines (attribute order).

    A subclassed model has no symbolic outputs; its head is normally the
    layer it defines last. If that layer has no activation (logits), no
    site is an output site.
    """
    leaves = [layer for layer, _ in _walk(model) if layer is not model and not _children(layer)]
    return {id(leaves[-1])} if leaves else set()


def find_activation_sites(model):
    """Returns every activation site of `model`, in forward (depth) order.

    Walks the model's layers depth first (the order of `model.layers`:
    topological for Sequential and functional models, attribute order for
    subclassed ones), into nested models and layers. A subclassed model
    (top level or nested) has no symbolic outputs: the last leaf layer it
    defines counts as its output layer (so a logits `Dense` head without
    activation leaves every site a hidden site).

    Args:
        model: a built Keras model (or layer).

    Returns:
        A list of `ActivationSite`.
    """
    sites = []
    for layer, path in _walk(model):
        if layer is not model:
            sites.extend(_layer_sites(layer, path))
    output_ids = (
        _output_layers(model) if isinstance(model, keras.Model) else set()
    ) or _guessed_output_layers(model)
    for depth, site in enumerate(sites, start=1):
        site.depth = depth
        site.is_output = id(site.layer) in output_ids
    return sites


def find_unconverted(model):
    """Layers whose own `call()` is custom code: activations written there
    (e.g. `tf.nn.relu(x)`) are invisible to site discovery.

    Returns:
        A list of `(path, reason)` pairs.
    """
    notes = []
    for layer, path in _walk(model):
        defining = next(c for c in type(layer).__mro__ if "call" in c.__dict__)
        if not _is_library_class(defining):
            notes.append(
                (
                    path or layer.name,
                    f"custom call() in {defining.__name__}: activations computed "
                    "there are invisible (its sublayers are still converted)",
                )
            )
        elif isinstance(layer, keras.layers.PReLU):
            notes.append((path, "PReLU has a trainable alpha; kept exact"))
    return notes


def _walk(model):
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
        for child in _children(layer):
            visit(child, path)

    visit(model, "")
    return out


def select_sites(
    all_sites,
    sites=None,
    from_depth=None,
    include_output=False,
    include_softmax=False,
    include_fixed=False,
):
    """Chooses which sites get the linear backward rule (or get inspected).

    Args:
        all_sites: the result of `find_activation_sites`.
        sites: None (all), a list of layer names or paths, a regex string
            (matched with `re.search` against the path), or a callable
            `site -> bool`.
        from_depth: if set, only sites with `depth >= from_depth` (1-based,
            forward order) are selected (LinBP of Guo et al. 2020).
        include_output: also convert the output layer's activation (the
            paper's Algorithm 2 loops k = l ... 1). Default False.
        include_softmax: also convert softmax sites. Default False.
        include_fixed: keep sites that fix their own rule whatever the
            model does (`LinearBackprop` layers, `linbp_*` activations,
            binary signs). Default False: there is nothing to convert;
            inspection wants them.

    Returns:
        The selected sites.

    Raises:
        ValueError: when a name in `sites` matches no site; the message
            lists the sites there are.
    """
    chosen = [s for s in all_sites if include_fixed or s.fixed_rule is None]
    if sites is None:
        pass
    elif isinstance(sites, str):
        pattern = re.compile(sites)
        chosen = [s for s in chosen if pattern.search(s.path)]
    elif callable(sites):
        chosen = [s for s in chosen if sites(s)]
    else:
        names = list(sites)
        known = {s.name for s in all_sites} | {s.path for s in all_sites}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(
                f"`sites` names {missing} but the model has no activation site "
                f"there. Activation sites: {[s.path for s in all_sites] or 'none'}."
            )
        chosen = [s for s in chosen if s.name in names or s.path in names]
    if from_depth is not None:
        if int(from_depth) < 1:
            raise ValueError(f"`from_depth` counts from 1; got {from_depth}.")
        chosen = [s for s in chosen if s.depth >= int(from_depth)]
    if not include_output:
        chosen = [s for s in chosen if not s.is_output]
    if not include_softmax:
        chosen = [s for s in chosen if not s.is_softmax]
    return chosen


# --- swapping ----------------------------------------------------------------

_lock = threading.Lock()
_installed = {}  # (id(layer), attribute) -> [original, dispatcher, users]
_local = threading.local()


def _thread_replacements():
    if not hasattr(_local, "replacements"):
        _local.replacements = {}
    return _local.replacements


def _make_dispatcher(key, original):
    def dispatch(*args, **kwargs):
        stack = _thread_replacements().get(key)
        fn = stack[-1] if stack else original
        return fn(*args, **kwargs)

    dispatch.__name__ = getattr(original, "__name__", "activation")
    dispatch._linbp_original = original
    return dispatch


def original_function(site):
    """The site's function as the model defines it (ignoring any swap)."""
    fn = site.function
    return getattr(fn, "_linbp_original", fn)


@contextlib.contextmanager
def swap_sites(sites, make_replacement: Callable):
    """Within the block, each site calls `make_replacement(site, original)`.

    The replacement must accept the same arguments as the original
    function (for call sites, the layer's `call` arguments). Outside the
    block -- and in other threads that did not enter a block of their own --
    the original function runs. Nested blocks stack.
    """
    entered = []
    replacements = _thread_replacements()
    try:
        for site in sites:
            key = (id(site.layer), site.attribute)
            with _lock:
                record = _installed.get(key)
                if record is None:
                    original = site.function
                    dispatcher = _make_dispatcher(key, original)
                    record = [original, dispatcher, 0]
                    _installed[key] = record
                    _set(site, dispatcher)
                record[2] += 1
            replacements.setdefault(key, []).append(make_replacement(site, record[0]))
            entered.append((site, key))
        yield
    finally:
        for site, key in reversed(entered):
            replacements[key].pop()
            if not replacements[key]:
                del replacements[key]
            with _lock:
                record = _installed[key]
                record[2] -= 1
                if record[2] == 0:
                    del _installed[key]
                    _restore(site, record[0])


def _set(site, fn):
    # object.__setattr__: a plain attribute swap, invisible to Keras's
    # tracking (a function is not a trackable anyway).
    object.__setattr__(site.layer, site.attribute, fn)


def _restore(site, original):
    if site.kind == "call" and getattr(original, "__self__", None) is site.layer:
        # The bound method came from the class: remove the instance override.
        site.layer.__dict__.pop("call", None)
    else:
        object.__setattr__(site.layer, site.attribute, original)
