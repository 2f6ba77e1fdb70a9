"""Choosing which activation sites get the linear rule, with the reason
each other site is left out.

The choice is made by the selection fields of a
`keras_linbp.LinearizeOptions` (`sites`, `from_depth`, `include_output`,
`include_softmax`, `include_gates`, `include_recurrent`), given as an
object or by name. A recurrent site named in a `sites` list is chosen even
without `include_recurrent`: naming it is asking for it (a regex or a
callable does not count as naming).
"""

import re

from keras_linbp import options as linbp_options

__all__ = ["select_sites", "explain_selection", "no_selection_reason"]


def _site_matches_name(site, name):
    return name in (site.path, site.layer_path, site.name)


def _some_paths(paths, limit=12):
    if not paths:
        return "none"
    shown = ", ".join(paths[:limit])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > limit else "")


def _check_names(all_sites, options):
    """Raises `ValueError` for a `sites` name, a `sites` regex or a `slope`
    dict path that matches no site, listing the sites there are."""
    paths = [site.path for site in all_sites]
    sites = options.sites
    if isinstance(sites, str) and not any(re.search(sites, path) for path in paths):
        raise ValueError(
            f"The `sites` pattern {sites!r} matches no activation site "
            f"(`re.search` against the site paths). Site paths: {_some_paths(paths)}."
        )
    if isinstance(sites, tuple):
        missing = [n for n in sites if not any(_site_matches_name(s, n) for s in all_sites)]
        if missing:
            raise ValueError(
                f"`sites` names {missing} but the model has no activation site "
                f"there. Activation sites: {paths or 'none'}."
            )
    if isinstance(options.slope, dict):
        unknown = [path for path in options.slope if path not in paths]
        if unknown:
            raise ValueError(
                f"`slope` gives slopes for {unknown}, but the model has no "
                f"activation site there. Site paths: {paths or 'none'}."
            )
    if isinstance(getattr(options, "bits", None), dict):
        unknown = [path for path in options.bits if path not in paths]
        if unknown:
            raise ValueError(
                f"`bits` gives bits for {unknown}, but the model has no "
                f"activation site there. Site paths: {paths or 'none'}."
            )


def _chosen_by_sites(site, sites):
    if sites is None:
        return True
    if isinstance(sites, str):
        return bool(re.search(sites, site.path))
    if callable(sites):
        return bool(sites(site))
    return any(_site_matches_name(site, name) for name in sites)


def _named(site, sites):
    """Whether a `sites` list names `site` (a regex or callable does not)."""
    return isinstance(sites, tuple) and any(_site_matches_name(site, n) for n in sites)


def explain_selection(all_sites, options=None, include_fixed=False, **overrides):
    """`[(site, selected, reasons)]` for every site of `all_sites`.

    `reasons` lists why an unselected site is left out: `"fixed rule"`,
    `"not selected by `sites`"`, `"before from_depth=N"`, `"output layer"`,
    `"softmax"`, `"gate"`, `"recurrent"`. Arguments as for `select_sites`.

    Raises:
        ValueError: when a name in a `sites` list, a `sites` regex, or a
            path of a `slope` dict matches no site; the message lists the
            sites there are.
    """
    options = linbp_options.resolve(options, overrides)
    _check_names(all_sites, options)
    rows = []
    for site in all_sites:
        reasons = []
        if site.fixed_rule is not None and not include_fixed:
            reasons.append("fixed rule")
        if not _chosen_by_sites(site, options.sites):
            reasons.append("not selected by `sites`")
        if options.from_depth is not None and site.depth < options.from_depth:
            reasons.append(f"before from_depth={options.from_depth}")
        if site.is_output and not options.include_output:
            reasons.append("output layer")
        if site.is_softmax and not options.include_softmax:
            reasons.append("softmax")
        if site.is_gate and not options.include_gates:
            reasons.append("gate")
        if site.is_recurrent and not options.include_recurrent and not _named(site, options.sites):
            reasons.append("recurrent")
        rows.append((site, not reasons, reasons))
    return rows


def select_sites(all_sites, options=None, include_fixed=False, **overrides):
    """Chooses which sites get the linear backward rule (or get inspected).

    >>> import keras
    >>> from keras_linbp import sites
    >>> inputs = keras.Input((3,))
    >>> hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid", name="out")(hidden))
    >>> all_sites = sites.find_activation_sites(model)
    >>> [site.path for site in sites.select_sites(all_sites)]
    ['hidden']
    >>> [site.path for site in sites.select_sites(all_sites, include_output=True)]
    ['hidden', 'out']

    Args:
        all_sites: the result of `find_activation_sites`.
        options: a `keras_linbp.LinearizeOptions` whose selection fields
            choose the sites (see there); default: the defaults (every site
            but the output layer's, softmax, gates and recurrent cells).
        include_fixed: keep sites that fix their own rule whatever the
            model does (`LinearBackprop` layers, `linbp_*` activations,
            binary signs). Default False: there is nothing to convert;
            inspection wants them.
        **overrides: `LinearizeOptions` fields by name (`sites=[...]`,
            `from_depth=2`, ...), replacing those of `options`.

    Returns:
        The selected sites.

    Raises:
        TypeError / ValueError: for an invalid option, naming it.
        ValueError: when a name in a `sites` list, or a `sites` regex,
            matches no site; the message lists the sites there are.
    """
    options = linbp_options.resolve(options, overrides)
    rows = explain_selection(all_sites, options, include_fixed=include_fixed)
    return [site for site, selected, _ in rows if selected]


def no_selection_reason(all_sites, rows):
    """Why `rows` (from `explain_selection`) select nothing, in words."""
    if not all_sites:
        return "the model has no activation site that runs"
    counts = {}
    for _, _, reasons in rows:
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
    parts = [f"{reason} ({n} of {len(all_sites)})" for reason, n in counts.items()]
    return "every site is excluded: " + "; ".join(parts)
