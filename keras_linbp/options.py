"""`LinearizeOptions`: the one place the linear-backprop options live.

`linearize`, `calibrate_slopes`, `select_sites`, `linbp_summary` and
`LinearBackpropModel` all take one of these (or its fields as keyword
arguments, which `replace` a model's own options or the defaults). Each
field is declared once below, with its default and its check; a new field
(say `bits`) is one more declaration here, and is then validated,
replaced, saved in the model config and split from Keras's keyword
arguments like the others.
"""

import dataclasses
from typing import Any

import keras

from keras_linbp import _validation
from keras_linbp import rules

__all__ = ["BACKPROP_MODES", "LinearizeOptions", "SELECTION_FIELDS", "options_of", "resolve"]

# The values of `backprop=`: the registered rules a site is given from the options.
BACKPROP_MODES = rules.MODES

# The fields that say which activation sites are linearized (the rest say how).
SELECTION_FIELDS = (
    "sites", "from_depth", "include_output", "include_softmax", "include_gates", "include_recurrent",
)


def _check_backprop(value):
    return _validation.check_choice("backprop", value, BACKPROP_MODES)


def _check_slope(value):
    return _validation.check_slope(value, allow_auto=True, allow_dict=True)


def _check_bits(value):
    """`bits`: an int 0-4, or a dict `{site path: int 0-4}`."""
    one = rules.few_bit.check_bits

    if isinstance(value, dict):
        if not value:
            raise ValueError("`bits` is an empty dict; give at least one {site path: bits}.")
        for path in value:
            if not isinstance(path, str) or not path:
                raise TypeError(f"`bits` dict keys must be site paths (non-empty str); got {path!r}.")
        return {path: one(bits, f"bits[{path!r}]") for path, bits in value.items()}
    return one(value, "bits")


def _flag_check(name):
    return lambda value: _validation.check_bool(name, value)


def _serialize_sites(sites):
    # A tuple of names is saved as a JSON list, a callable through Keras's
    # registry (register it with `keras.saving.register_keras_serializable`).
    if sites is None or isinstance(sites, str):
        return sites
    if callable(sites):
        return keras.saving.serialize_keras_object(sites)
    return list(sites)


def _deserialize_sites(config):
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    return config


def _option(default, check, serialize=None, deserialize=None):
    metadata = {"check": check, "serialize": serialize, "deserialize": deserialize}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class LinearizeOptions:
    """Which activation sites backpropagate linearly, and how.

    Immutable: make a changed copy with `replace`. Every field is checked
    when the object is made, with an error that names it.

    >>> options = LinearizeOptions(slope=0.5, sites=["dense_1"])
    >>> options.sites
    ('dense_1',)
    >>> options.replace(from_depth=2).from_depth
    2
    >>> LinearizeOptions.from_config(options.get_config()) == options
    True
    >>> LinearizeOptions(from_depth=0)
    Traceback (most recent call last):
    ...
    ValueError: `from_depth` must be an int >= 1; got 0. Depths count activation sites from 1 in forward order; None selects every depth.

    Args:
        backprop: `"linear"` (default): the selected sites pass the upstream
            gradient on as `slope * g`; `"exact"`: ordinary backprop (a
            `LinearBackpropModel` then trains like a plain `keras.Model`;
            a `linearize` block changes nothing); `"few_bit"`: the selected
            sites multiply the upstream gradient by a `bits`-bit
            piecewise-constant table of `f'` (`keras_linbp.few_bit`), and
            sites whose activation has no table stay exact.
        slope: the factor the gradient is multiplied by at each linear site:
            a number (default 1.0: `g <- g`), a dict `{site path: number}`
            (sites it does not name: 1.0), or `"auto"`: per-site slopes
            calibrated so the linear gradient has exact backprop's scale at
            each site (`sqrt(mean(f'(a)^2))` on a probe batch; see
            `keras_linbp.calibrate_slopes`).
        bits: with `backprop="few_bit"`, the code width at each site: an
            int from 0 to 4 (default 2), or a dict `{site path: int}`
            (sites it does not name: 2). Ignored in the other modes.
        sites: which sites may use the linear rule: None (all), a list of
            site paths, layer paths or layer names (`"block/dense_1"`), a
            regex (matched with `re.search` against the site path) or a
            callable `ActivationSite -> bool`. A listed name, or a regex,
            that matches no site of the model raises `ValueError` (when a
            built model is made, else at the first step).
        from_depth: only sites at depth >= `from_depth` (1-based, forward
            order) use the linear rule: LinBP of Guo et al. 2020
            linearizes only the later part of a network.
        include_output: also linearize the output layer's activation
            (default False: its exact derivative is kept, so the loss
            gradient reaching the network is the true one).
        include_softmax: also linearize softmax sites (default False).
        include_gates: also linearize multiplicative gates: bounded
            activations (sigmoid, ...) whose output is only used as a factor
            of elementwise products, as in squeeze-and-excitation blocks
            (default False: a linear gate keeps receiving gradient when it
            saturates and its un-normalized weights grow until SGD
            diverges).
        include_recurrent: also linearize the activations of recurrent
            cells (`activation` / `recurrent_activation` of `LSTM`, `GRU`,
            `SimpleRNN` cells, `Bidirectional` ones included, and any site
            inside a `keras.layers.RNN`). Default False: linear backprop
            through time applies `g <- g` at every time step, and it does
            not train an LSTM (docs/RESULTS.md, recurrent layers). A
            recurrent site named in a `sites` list is linearized anyway:
            naming it is asking for it.

    Raises:
        TypeError / ValueError: for a value a field does not allow, naming
            the field (the checks of `keras_linbp._validation`).
    """

    backprop: str = _option("linear", _check_backprop)
    slope: Any = _option(1.0, _check_slope)
    bits: Any = _option(2, _check_bits)
    sites: Any = _option(
        None, _validation.check_sites, serialize=_serialize_sites, deserialize=_deserialize_sites
    )
    from_depth: Any = _option(None, _validation.check_from_depth)
    include_output: bool = _option(False, _flag_check("include_output"))
    include_softmax: bool = _option(False, _flag_check("include_softmax"))
    include_gates: bool = _option(False, _flag_check("include_gates"))
    include_recurrent: bool = _option(False, _flag_check("include_recurrent"))

    def __post_init__(self):
        for field in dataclasses.fields(self):
            # Frozen: the canonical value (a float slope, a tuple of site
            # names) is stored the way dataclasses store fields.
            object.__setattr__(self, field.name, field.metadata["check"](getattr(self, field.name)))
        # What one field allows may depend on another (few-bit takes no slope).
        rules.get(self.backprop).check_options(self)

    @classmethod
    def field_names(cls):
        """The option names, in declaration order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def split_kwargs(cls, kwargs):
        """Splits keyword arguments into option fields and the rest.

        >>> LinearizeOptions.split_kwargs({"slope": 0.5, "name": "net"})
        ({'slope': 0.5}, {'name': 'net'})

        Returns:
            `(options, rest)`: two new dicts.
        """
        names = cls.field_names()
        options = {key: value for key, value in kwargs.items() if key in names}
        rest = {key: value for key, value in kwargs.items() if key not in names}
        return options, rest

    def replace(self, **changes):
        """A copy with `changes` (field names and values), checked again.

        Raises:
            TypeError: for a name that is no field (the message lists the
                fields).
        """
        unknown = [name for name in changes if name not in self.field_names()]
        if unknown:
            raise TypeError(
                f"LinearizeOptions has no option {', '.join(map(repr, unknown))}; "
                f"the options are {', '.join(self.field_names())}."
            )
        return dataclasses.replace(self, **changes) if changes else self

    def as_dict(self):
        """`{field name: value}`, values as held (not serialized)."""
        return {name: getattr(self, name) for name in self.field_names()}

    def selection_kwargs(self):
        """The fields that choose the sites (`SELECTION_FIELDS`), as a dict."""
        return {name: getattr(self, name) for name in SELECTION_FIELDS}

    def slope_at(self, path, calibrated=None):
        """The slope the linear rule uses at the site `path`.

        A number applies everywhere; a dict gives per-site slopes (1.0
        where it is silent); `"auto"` reads `calibrated` (`{path: slope}`,
        1.0 for sites not calibrated).
        """
        if isinstance(self.slope, dict):
            return self.slope.get(path, 1.0)
        if self.slope == _validation.AUTO:
            return (calibrated or {}).get(path, 1.0)
        return self.slope

    def bits_at(self, path):
        """The code width of the few-bit rule at the site `path`."""
        return self.bits.get(path, 2) if isinstance(self.bits, dict) else self.bits

    def get_config(self):
        """A JSON-able dict of every field (a callable `sites` through
        `keras.saving.serialize_keras_object`)."""
        config = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            serialize = field.metadata["serialize"]
            config[field.name] = serialize(value) if serialize else value
        return config

    @classmethod
    def from_config(cls, config):
        """The options `get_config` saved; missing fields take their defaults.

        Raises:
            TypeError: for a key that is no field.
        """
        values = dict(config)
        for field in dataclasses.fields(cls):
            deserialize = field.metadata["deserialize"]
            if deserialize and field.name in values:
                values[field.name] = deserialize(values[field.name])
        return cls().replace(**values)


def options_of(model):
    """The options `model` carries: a `LinearBackpropModel`'s own
    (`model.linearize_options()`), else the defaults."""
    own = getattr(model, "linearize_options", None)
    return own() if callable(own) else LinearizeOptions()


def resolve(options, overrides, default=None):
    """The options a call runs with.

    Args:
        options: a `LinearizeOptions`, or None for `default` (else the
            defaults).
        overrides: a dict of field names and values that replace fields
            (the keyword-argument form of the public functions).
        default: the `LinearizeOptions` used when `options` is None.

    Raises:
        TypeError: when `options` is no `LinearizeOptions`, or for an
            override that names no field.
    """
    if options is None:
        options = default if default is not None else LinearizeOptions()
    if not isinstance(options, LinearizeOptions):
        raise TypeError(
            "`options` must be a keras_linbp.LinearizeOptions (or None); got "
            f"{options!r} ({type(options).__name__}). The options may also be "
            "given by name, e.g. `sites=[...]`, `from_depth=2`."
        )
    return options.replace(**overrides)
