"""The sites a callback inspects, and the recorder that keeps their inputs.

Uses only the public API of `keras_linbp.sites`: `find_activation_sites`,
`select_sites`, `swap_sites` (through the callers) and the site fields.
"""

import re
import warnings

import keras

from keras_linbp import activations as linbp_activations
from keras_linbp import rules
from keras_linbp import sites as linbp_sites
from keras_linbp.callbacks._tensorflow import tf
from keras_linbp.callbacks._tensorflow import traced


# Inspection leaves no kind of site out: the `sites` argument alone selects.
_EVERY_KIND = {
    "include_output": True,
    "include_softmax": True,
    "include_fixed": True,
    "include_gates": True,
    "include_recurrent": True,
}


def site_key(site):
    """Identifies a site across `find_activation_sites` calls."""
    return (id(site.layer), site.attribute, site.path)


def _describe_selection(sites):
    if isinstance(sites, str):
        return f"the pattern {sites!r}"
    return f"the callable {getattr(sites, '__name__', repr(sites))}"


def check_names(model, sites, owner, all_sites=None):
    """Raises `ValueError` when a name of a list `sites` matches no
    activation site of `model` (names as `select_sites` reads them: site
    path, layer path, layer name); the message lists the model's sites.

    Args:
        model: a built model.
        sites: the callback's `sites` argument.
        owner: the callback's class name, for the message.
        all_sites: the model's sites, when already found.
    """
    if not isinstance(sites, (list, tuple)):
        return
    if all_sites is None:
        all_sites = linbp_sites.find_activation_sites(model)
    known = set()
    for site in all_sites:
        known |= {site.path, site.name, getattr(site, "layer_path", site.path)}
    missing = [name for name in sites if name not in known]
    if missing:
        raise ValueError(
            f"{owner}: `sites` names {missing}, which match no activation "
            f"site of the model {model.name!r}. Its activation sites: "
            f"{[site.path for site in all_sites]}."
        )


def choose_sites(model, sites, owner):
    """`(all_sites, selected)`: every activation site of `model` and the
    ones to inspect -- all (output and softmax included, and sites that
    are already linear) or those `sites` picks, as
    `keras_linbp.sites.select_sites` reads it. Warns (once per call) when
    nothing is selected, saying why.

    Raises:
        ValueError: if a name in a list `sites` matches no site; the
            message lists the model's sites.
    """
    all_sites = linbp_sites.find_activation_sites(model)
    paths = [site.path for site in all_sites]
    check_names(model, sites, owner, all_sites)
    if not all_sites:
        warnings.warn(
            f"{owner}: the model {model.name!r} has no activation sites to "
            "inspect; nothing will be logged.",
            stacklevel=3,
        )
        return all_sites, []
    if sites is None:
        return all_sites, list(all_sites)
    if isinstance(sites, str) and not any(re.search(sites, path) for path in paths):
        # A pattern that matches nothing logs nothing: a warning (below),
        # where `select_sites` would raise.
        selected = []
    else:
        selected = linbp_sites.select_sites(all_sites, sites=sites, **_EVERY_KIND)
    if not selected:
        warnings.warn(
            f"{owner}: `sites` {_describe_selection(sites)} matched none of the "
            f"activation sites of the model {model.name!r} ({paths}); nothing "
            "will be logged.",
            stacklevel=3,
        )
    return all_sites, selected


def plain_function(site, original):
    """The site's activation with its ordinary (exact) gradient: `f`, with
    `f'` its derivative, whatever rule the site carries.

    For a site that carries a rule (a rule layer's call -- `LinearBackprop`,
    `FewBit`, a binary sign --, a rule function such as
    `keras_linbp.few_bit(...)`, a `linbp_*` activation) this is the forward
    function inside it. Called as the site is: `plain(a, *args, **kwargs)`.
    """
    if site.kind == "layer call" and rules.rule_of(site.layer) is not None:
        activation = site.layer.activation_fn
        return lambda inputs, *args, **kwargs: activation(inputs)
    if rules.rule_of(original) is not None:
        return original.forward
    return original


def saturation_kind(site, plain):
    """(kind, max_derivative): the table's saturation kind and `max|f'|`,
    `"softmax"`, or `"unknown"` (max None) outside the table."""
    if site.is_softmax:
        return "softmax", None
    spec = site.spec or linbp_activations.find_spec(plain)
    if spec is None:
        return "unknown", None
    return spec.saturation, spec.max_derivative


class SiteRecorder:
    """Makes `swap_sites` replacements that keep each site's input, for the
    traced TensorFlow probe and the eager JAX / PyTorch probe alike.

    `inputs[key]` is the input of the site's last call, `extra_args[key]`
    the arguments that came with it, `calls[key]` how many calls there
    were. A site inside a loop cannot be recorded (one time step would pass
    for the whole sequence) and is listed in `skipped`: on TensorFlow one
    called in another graph than the one being traced (a `tf.while_loop`
    body, whose tensors cannot be read outside it); elsewhere an RNN cell
    (its layer has a `state_size`), or on JAX any call on an abstract value
    (a `lax.scan` body).

    Args:
        isolate: give each site its own copy (`tf.identity`) of its input,
            so that the gradient with respect to a recorded input is the
            one flowing back through that site alone -- not also through
            other uses of the same tensor (two activations of one `a` in a
            custom `call()`, a skip connection). TensorFlow only.
    """

    def __init__(self, isolate=False):
        self.inputs = {}
        self.extra_args = {}
        self.calls = {}
        self.skipped = []
        self._replace = None
        self._on_input = None
        self._isolate = isolate
        self._nested = set()
        self._graph = None

    def start(self, replace=None, on_input=None):
        """Clears what an earlier pass recorded.

        Args:
            replace: optional `(site, original) -> function`: what the site
                runs in this pass (default: `original`).
            on_input: optional `inputs -> None`, called with each recorded
                input (e.g. to watch it on a gradient tape).
        """
        self.inputs.clear()
        self.extra_args.clear()
        self.calls.clear()
        self._nested = set()
        self._replace = replace
        self._on_input = on_input
        if traced():
            self._graph = tf.compat.v1.get_default_graph()

    def _in_loop(self, site, inputs):
        if traced():
            return tf.compat.v1.get_default_graph() is not self._graph
        if hasattr(site.layer, "state_size"):
            return True
        if keras.backend.backend() == "jax":
            import jax

            return isinstance(inputs, jax.core.Tracer)
        return False

    def __call__(self, site, original):
        function = self._replace(site, original) if self._replace else original
        key = site_key(site)

        def record(inputs, *args, **kwargs):
            if key in self._nested or self._in_loop(site, inputs):
                # Also drop what an earlier call outside the loop recorded
                # (Keras's RNN runs the cell once on step 0 for shapes).
                self._nested.add(key)
                self.inputs.pop(key, None)
                self.extra_args.pop(key, None)
                self.calls.pop(key, None)
                if all(site_key(s) != key for s in self.skipped):
                    self.skipped.append(site)
            else:
                if self._isolate:
                    inputs = tf.identity(inputs)
                if self._on_input is not None:
                    self._on_input(inputs)
                self.inputs[key] = inputs
                self.extra_args[key] = (args, kwargs)
                self.calls[key] = self.calls.get(key, 0) + 1
            return function(inputs, *args, **kwargs)

        return record
