"""Every TensorBoard tag keras_linbp's callbacks write, in one place.

`SaturationHistograms` and `GradientFlow` write these tags;
`keras_linbp.report` and `keras_linbp.plotting` read them. A tag is
`<family>/<stem>/<name>`, where `<stem>` names an activation site (see
`site_stems`):

- `saturation/<stem>/{saturated,dead,clipped}_fraction`,
  `saturation/<stem>/mean_abs_pre_activation`, `saturation/<stem>/nonfinite`
  (scalars);
- `activations/<stem>/{pre_activation,activation,derivative}` (histograms)
  and `activations/histogram_grid` (one image for all sites);
- `gradient_flow/<stem>/{exact,linear}_norm` (scalars) and
  `gradient_flow/<stem>/{exact,linear}_gradient` (histograms).

This module imports nothing from TensorFlow, Keras or the rest of the
package; it is also importable as `keras_linbp.callbacks.tags`.

>>> saturation_scalar("dense", DEAD_FRACTION)
'saturation/dense/dead_fraction'
>>> gradient_norm("block/dense_1", LINEAR)
'gradient_flow/block/dense_1/linear_norm'
>>> GRADIENT_NORM_PATTERN.match("gradient_flow/block/dense_1/linear_norm")["stem"]
'block/dense_1'
"""

import re


__all__ = [
    "SATURATION",
    "ACTIVATIONS",
    "GRADIENT_FLOW",
    "SATURATED_FRACTION",
    "DEAD_FRACTION",
    "CLIPPED_FRACTION",
    "MEAN_ABS_PRE_ACTIVATION",
    "NONFINITE",
    "FRACTIONS",
    "SATURATION_SCALARS",
    "PRE_ACTIVATION",
    "ACTIVATION",
    "DERIVATIVE",
    "ACTIVATION_HISTOGRAMS",
    "HISTOGRAM_GRID",
    "EXACT",
    "LINEAR",
    "RULES",
    "KERNEL",
    "INPUT",
    "GRADIENT_DESCRIPTIONS",
    "saturation_scalar",
    "activation_histogram",
    "norm_name",
    "gradient_norm",
    "gradient_histogram",
    "gradient_target",
    "SATURATION_SCALAR_PATTERN",
    "SATURATION_FRACTION_PATTERN",
    "ACTIVATION_HISTOGRAM_PATTERN",
    "GRADIENT_NORM_PATTERN",
    "GRADIENT_HISTOGRAM_PATTERN",
    "is_known_tag",
    "sanitize",
    "site_stems",
]

# Families (the first part of a tag).
SATURATION = "saturation"
ACTIVATIONS = "activations"
GRADIENT_FLOW = "gradient_flow"

# `saturation/<stem>/<name>` scalars.
SATURATED_FRACTION = "saturated_fraction"  # bounded units, and unknown ones
DEAD_FRACTION = "dead_fraction"  # rectifiers, and unknown ones
CLIPPED_FRACTION = "clipped_fraction"  # binary (sign) units
MEAN_ABS_PRE_ACTIVATION = "mean_abs_pre_activation"
NONFINITE = "nonfinite"
FRACTIONS = (SATURATED_FRACTION, DEAD_FRACTION, CLIPPED_FRACTION)
SATURATION_SCALARS = FRACTIONS + (MEAN_ABS_PRE_ACTIVATION, NONFINITE)

# `activations/<stem>/<name>` histograms (softmax sites: no derivative).
PRE_ACTIVATION = "pre_activation"
ACTIVATION = "activation"
DERIVATIVE = "derivative"
ACTIVATION_HISTOGRAMS = (PRE_ACTIVATION, ACTIVATION, DERIVATIVE)

# The image: one activation histogram per site.
HISTOGRAM_GRID = f"{ACTIVATIONS}/histogram_grid"

# `gradient_flow/<stem>/<rule>_norm` scalars, `..._gradient` histograms.
# `<rule>`: exact, and the rule GradientFlow compares it with (linear, or a
# model's own few-bit).
EXACT = "exact"
LINEAR = "linear"
# The names of `keras_linbp.rules.MODES` (a test keeps them equal; this
# module imports only the standard library, for readers of event files).
RULES = (EXACT, LINEAR, "few_bit", "from_output")

# What a gradient_flow tag measures, stored as the summary's description
# (so a reader of the event file can tell without the model).
KERNEL = "kernel"
INPUT = "input"
GRADIENT_DESCRIPTIONS = {
    KERNEL: "L2 norm of d loss / d kernel (the layer's kernel).",
    INPUT: "L2 norm of d loss / d a (the site's input a, its pre-activation: "
    "the layer has no kernel).",
}


def saturation_scalar(stem, name):
    """`saturation/<stem>/<name>`, `name` one of `SATURATION_SCALARS`."""
    return f"{SATURATION}/{stem}/{name}"


def activation_histogram(stem, name):
    """`activations/<stem>/<name>`, `name` one of `ACTIVATION_HISTOGRAMS`."""
    return f"{ACTIVATIONS}/{stem}/{name}"


def norm_name(rule):
    """`<rule>_norm`: `exact_norm`, `linear_norm`, `few_bit_norm`."""
    return f"{rule}_norm"


def gradient_norm(stem, rule):
    """`gradient_flow/<stem>/<rule>_norm`, `rule` one of `RULES`."""
    return f"{GRADIENT_FLOW}/{stem}/{norm_name(rule)}"


def gradient_histogram(stem, rule):
    """`gradient_flow/<stem>/<rule>_gradient`, `rule` one of `RULES`."""
    return f"{GRADIENT_FLOW}/{stem}/{rule}_gradient"


def gradient_target(description):
    """`KERNEL` or `INPUT` for a gradient_flow summary's description, None
    when it is neither (e.g. logs written by keras_linbp 0.1)."""
    for target, text in GRADIENT_DESCRIPTIONS.items():
        if description == text:
            return target
    return None


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


SATURATION_SCALAR_PATTERN = re.compile(
    rf"^{SATURATION}/(?P<stem>.+)/(?P<name>{_alternatives(SATURATION_SCALARS)})$"
)
SATURATION_FRACTION_PATTERN = re.compile(
    rf"^{SATURATION}/(?P<stem>.+)/(?P<name>{_alternatives(FRACTIONS)})$"
)
ACTIVATION_HISTOGRAM_PATTERN = re.compile(
    rf"^{ACTIVATIONS}/(?P<stem>.+)/(?P<name>{_alternatives(ACTIVATION_HISTOGRAMS)})$"
)
GRADIENT_NORM_PATTERN = re.compile(
    rf"^{GRADIENT_FLOW}/(?P<stem>.+)/(?P<name>(?P<rule>{_alternatives(RULES)})_norm)$"
)
GRADIENT_HISTOGRAM_PATTERN = re.compile(
    rf"^{GRADIENT_FLOW}/(?P<stem>.+)/(?P<name>(?P<rule>{_alternatives(RULES)})_gradient)$"
)
_PATTERNS = (
    SATURATION_SCALAR_PATTERN,
    ACTIVATION_HISTOGRAM_PATTERN,
    GRADIENT_NORM_PATTERN,
    GRADIENT_HISTOGRAM_PATTERN,
)


def is_known_tag(tag):
    """Whether `tag` is one of the tags above.

    >>> is_known_tag("activations/dense/derivative"), is_known_tag("loss")
    (True, False)
    """
    return tag == HISTOGRAM_GRID or any(pattern.match(tag) for pattern in _PATTERNS)


# --- stems -------------------------------------------------------------------

# Kept as they are; ":" (a site within a layer, e.g. `block:gelu`) becomes
# "/" (TensorBoard groups by it); anything else becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


def sanitize(stem):
    """`stem` with only characters that are safe in a TensorBoard tag and
    in a TensorFlow name scope.

    >>> sanitize("block:gelu#2")
    'block/gelu_2'
    """
    stem = _UNSAFE.sub("_", stem.replace(":", "/"))
    stem = re.sub(r"/+", "/", stem).strip("/")
    return stem or "_"


def _layer_path(site):
    return site.path.split(":", 1)[0]


def _within_layer(site):
    return site.path.split(":", 1)[1] if ":" in site.path else ""


def site_stems(sites, per_layer=False):
    """One tag stem per site, in the order of `sites`.

    The stem is the layer's name, or its path (`outer/inner`) where two
    layers share a name; a site within a layer (a path `layer:gelu`) adds
    `/gelu`. Where one layer still has several sites with one stem (an RNN
    cell's `activation` and `recurrent_activation`), `/<attribute>` is
    added. `per_layer=True`: the sites of one layer share its stem (for a
    per-layer quantity such as a kernel gradient). Stems are `sanitize`d;
    a clash left over gets `_2`, `_3`, ...

    Args:
        sites: `keras_linbp.sites.ActivationSite`s (read: `layer`, `name`,
            `path`, `attribute`).
        per_layer: one stem per layer instead of one per site.

    Returns:
        A list of strings.

    >>> import keras
    >>> from keras_linbp import sites
    >>> model = keras.Sequential([
    ...     keras.Input((5, 3)),  # 5 time steps of 3 features
    ...     keras.layers.Dense(4, activation="tanh", name="hidden"),
    ...     keras.layers.LSTM(2, name="lstm"),
    ... ])
    >>> site_stems(sites.find_activation_sites(model))
    ['hidden', 'lstm_cell/recurrent_activation', 'lstm_cell/activation']
    """
    layers_by_name = {}
    for site in sites:
        layers_by_name.setdefault(site.name, set()).add(id(site.layer))
    stems = []
    for site in sites:
        stem = site.name if len(layers_by_name[site.name]) == 1 else _layer_path(site)
        if not per_layer and _within_layer(site):
            stem = f"{stem}:{_within_layer(site)}"
        stems.append(stem)
    # A unit is what gets its own stem: a site, or a layer when per_layer.
    units = [id(site.layer) if per_layer else id(site) for site in sites]
    if not per_layer:
        units_by_stem = {}
        for stem, unit in zip(stems, units):
            units_by_stem.setdefault(stem, set()).add(unit)
        stems = [
            f"{stem}/{site.attribute}" if len(units_by_stem[stem]) > 1 else stem
            for stem, site in zip(stems, sites)
        ]
    stems = [sanitize(stem) for stem in stems]
    # Different units whose stems became equal: number the later ones.
    first_unit = {}
    renamed = {}
    taken = set(stems)
    result = []
    for stem, unit in zip(stems, units):
        if first_unit.setdefault(stem, unit) != unit:
            if (stem, unit) not in renamed:
                number = 2
                while f"{stem}_{number}" in taken:
                    number += 1
                renamed[(stem, unit)] = f"{stem}_{number}"
                taken.add(renamed[(stem, unit)])
            stem = renamed[(stem, unit)]
        result.append(stem)
    return result
