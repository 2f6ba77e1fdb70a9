"""`linbp_summary(model)`: every activation site of a model and the
backward rule it gets, as data (`site_rows`) and as a printed table.

Like Larq's `larq.models.summary`, a free function over any model: a
`LinearBackpropModel` is described with its own options, a plain
`keras.Model` with the `options` given (what `linearize(model, options)`
would do).

>>> import keras
>>> import keras_linbp
>>> inputs = keras.Input((3,))
>>> hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
>>> model = keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid", name="out")(hidden))
>>> [(row.site.path, row.rule, row.slope, row.note) for row in keras_linbp.summary.site_rows(model)]
[('hidden', 'linear', '1', ''), ('out', 'exact', '', 'output layer')]
"""

from typing import NamedTuple

from keras_linbp import options as linbp_options
from keras_linbp import rules
from keras_linbp import sites as linbp_sites

__all__ = ["SiteRow", "UNCHECKED_GATE_NOTE", "linbp_summary", "site_rows"]

UNCHECKED_GATE_NOTE = "gate detection: not checked inside call()"

_SITE_COLUMNS = ("#", "site", "reached by", "layer", "activation", "rule")
# The rule's own columns (`Rule.summary_fields`): linear's slope, few-bit's
# code width, the bytes a site keeps per element for the backward.
_FIELD_HEADINGS = {"slope": "slope", "bits": "bits", "kept": "bytes/elem"}


class SiteRow(NamedTuple):
    """One activation site of a summary.

    Attributes:
        site: the `keras_linbp.sites.ActivationSite`.
        rule: `"linear"`, `"exact"`, or `"<rule>-fixed"` for a site that
            fixes its own rule (`LinearBackprop` layers, `linbp_*`
            activations, binary signs).
        slope: the slope in force at a linear site, as text (`"auto"`
            while `slope="auto"` is not calibrated there); `""` elsewhere.
        bits: the code width at a few-bit site, as text; `""` elsewhere.
        kept: the bytes the site's rule keeps per element for the backward
            (`Rule.bytes_per_element`; from-output: `"0.125 + output"`, the
            output being the tensor the next layer keeps), as text; `""`
            at an exact site.
        note: why the site is exact (or how it fixes its rule), in words;
            for a bounded activation inside a layer's own `call()`, also
            `UNCHECKED_GATE_NOTE` (whether it is a gate cannot be known
            there, so `include_gates` does not decide it).
    """

    site: object
    rule: str
    slope: str
    note: str
    bits: str = ""
    kept: str = ""


def _options_for(model, options):
    return options if options is not None else linbp_options.options_of(model)


def site_rows(model, options=None):
    """The rows `linbp_summary` prints, one `SiteRow` per site (call order).

    Each row is what the site's rule says of itself (`Rule.describe`): the
    rule fixed by its layer or function, else the one the options' mode
    makes for it (`Rule.for_site`), else exact with the reason.

    Args:
        model: a built Keras model.
        options: a `keras_linbp.LinearizeOptions`; default: a
            `LinearBackpropModel`'s own options, else the defaults.

    Returns:
        A list of `SiteRow`.
    """
    options = _options_for(model, options)
    mode = rules.get(options.backprop)
    calibrated = getattr(model, "calibrated_slopes", None)
    all_sites = linbp_sites.find_activation_sites(model)
    rows = []
    for site, chosen, reasons in linbp_sites.explain_selection(all_sites, options):
        if site.fixed_rule is not None:
            rows.append(_row(site, site.fixed_rule, f"{site.fixed_rule.label}-fixed", _fixed_note(site)))
            continue
        notes = list(reasons)
        rule = None
        if chosen:
            rule, reason = mode.for_site(site, options, calibrated)
            notes.append(reason)
        if not site.gate_checked and not site.is_recurrent:
            notes.append(UNCHECKED_GATE_NOTE)
        if rule is not None:
            notes.append(_sharing_note(site, rule))
            row = _row(site, rule, rule.label, ", ".join(note for note in notes if note))
            if options.slope == "auto" and site.path not in (calibrated or {}):
                row = row._replace(slope="auto")  # calibrated when `fit` starts
            rows.append(row)
            continue
        rows.append(SiteRow(site, "exact", "", ", ".join(note for note in notes if note)))
    return rows


def _sharing_note(site, rule):
    """Where a rule keeps the output: whether the next layer keeps the same
    tensor (then it costs nothing) or another one (then it is a copy)."""
    if not rule.reads_output:
        return ""
    sharing = linbp_sites.output_sharing(site)
    if sharing is None:
        return ""
    shared, consumers = sharing
    names = ", ".join(sorted(set(consumers)))
    return f"output shared with {names}" if shared else f"output kept as a copy ({names} next)"


def _fixed_note(site):
    if site.kind == "layer call":
        return f"{type(site.layer).__name__} rule={site.fixed_rule.label!r}"
    if getattr(site.function, "_linbp_activation", None):
        return "linbp_* activation"
    return "rule function"


def _row(site, rule, text, note):
    fields = rule.describe()
    return SiteRow(site, text, fields.get("slope", ""), note, fields.get("bits", ""), fields.get("kept", ""))


def _header(model, options, rows):
    mode = rules.get(options.backprop)
    setting = ""
    if mode.setting is not None:
        value = getattr(options, mode.setting)
        if isinstance(value, dict):
            value = "per site"
        elif isinstance(value, float):
            value = f"{value:g}"
        setting = f", {mode.setting}={value}"
    is_linbp_model = callable(getattr(model, "linearize_options", None))
    title = "LinearBackpropModel" if is_linbp_model else type(model).__name__
    when = "in training" if is_linbp_model else "under `linearize`"
    # Sites under the mode's rule, fixed ones included; an exact mode
    # counts every site that is not exact.
    label = "linear" if mode.exact else mode.label
    count = sum(
        row.rule != "exact" if mode.exact else row.rule in (label, f"{label}-fixed") for row in rows
    )
    words = label.replace("_", "-")
    return (
        f'{title} "{model.name}": backprop={options.backprop!r}{setting}; '
        f"{count} of {len(rows)} activation sites use the {words} backward rule {when}."
    )


def _fields(mode, rows):
    """The rule columns: the mode's own; the few-bit ones (code width, bytes
    kept) instead of a slope where a fixed few-bit site keeps codes."""
    fields = list(mode.summary_fields)
    if any(row.bits for row in rows) and "bits" not in fields:
        fields = ["bits", "kept"] if fields == ["slope"] else ["bits", *fields]
    return fields


def linbp_summary(model, print_fn=None, options=None):
    """Prints every activation site that runs, with its backward rule.

    Columns: depth (call order), site path, how the site is reached
    (`attribute`, `layer call`, or `op` inside a layer's own `call()`),
    layer class, activation, rule (`linear`, `few_bit`, `exact`, or
    `<rule>-fixed` for sites that fix their own rule), the rule's own
    columns (`Rule.summary_fields`: the slope; with `backprop="few_bit"`
    the bits and the bytes kept per element for the backward; with
    `backprop="from_output"` the bytes kept), and why a site is exact (a site whose activation
    has no few-bit table stays exact, and says so).
    Then the non-linear TensorFlow ops the forward pass applies outside
    every site (direct `tf.nn.*` / `tf.math.*` calls, which no Keras
    plugin can re-route): they keep exact backprop.

    Args:
        model: a built Keras model (a `LinearBackpropModel` or any other).
        print_fn: function taking a line of text (default `print`).
        options: a `keras_linbp.LinearizeOptions`; default: a
            `LinearBackpropModel`'s own options, else the defaults.
    """
    print_fn = print_fn or print
    options = _options_for(model, options)
    rows = site_rows(model, options)
    fields = _fields(rules.get(options.backprop), rows)
    columns = (*_SITE_COLUMNS, *(_FIELD_HEADINGS[field] for field in fields), "note")
    table = [columns] + [
        (
            str(row.site.depth),
            row.site.path,
            row.site.kind,
            type(row.site.layer).__name__,
            row.site.activation_name,
            row.rule,
            *(getattr(row, field) for field in fields),
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(columns))]

    def line(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    print_fn(_header(model, options, rows))
    print_fn(line(columns))
    print_fn("  ".join("-" * width for width in widths))
    for cells in table[1:]:
        print_fn(line(cells))
    if not rows:
        print_fn("(no activation sites found)")
    unconverted = linbp_sites.find_unconverted(model)
    if unconverted:
        print_fn(
            "Not converted (exact backprop): non-linear TensorFlow ops "
            "applied outside Keras's activation functions (direct tf.* calls):"
        )
        for op_name, op_type in unconverted:
            print_fn(f"  {op_name} ({op_type})")
