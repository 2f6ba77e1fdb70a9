"""The registry of backward rules: name -> `Rule` subclass.

The values of `backprop=` (`model_modes`) and a saved rule's class
(`deserialize`) are read here; a rule file registers its class with
`@register`.
"""

__all__ = ["deserialize", "get", "model_modes", "register", "rule_of", "serialize"]

# name -> Rule subclass, in registration order.
_REGISTRY = {}


def register(cls):
    """Class decorator: adds a `Rule` subclass to the registry under its `name`."""
    if cls.name in _REGISTRY:
        raise ValueError(f"A backward rule named {cls.name!r} is registered already.")
    _REGISTRY[cls.name] = cls
    return cls


def get(name):
    """The `Rule` subclass registered as `name`.

    Raises:
        ValueError: for a name no rule has, listing the registered ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown backward rule {name!r}; the rules are {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def model_modes():
    """The names a model's `backprop=` takes: the rules made for a site
    from the options (straight-through is a layer's rule only)."""
    return tuple(name for name, cls in _REGISTRY.items() if cls.model_mode)


def rule_of(obj):
    """The `Rule` a function or layer carries (its `backward_rule`), or None.

    Rule functions (`keras_linbp.few_bit(...)`, `linear_backprop(...)`),
    `linbp_*` activations and the rule layers (`LinearBackprop`, `FewBit`,
    `BinarySign`) carry one; a plain activation does not.
    """
    rule = getattr(obj, "backward_rule", None)
    return rule if type(rule) in _REGISTRY.values() else None


def serialize(rule):
    """`{"rule": name, "config": {...}}`, JSON-able."""
    return {"rule": rule.name, "config": rule.get_config()}


def deserialize(config):
    """The rule `serialize` saved."""
    return get(config["rule"]).from_config(config.get("config", {}))
