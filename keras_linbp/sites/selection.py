"""Choosing which activation sites get the linear rule, with the reason
each other site is left out."""

import re
import warnings

__all__ = ["select_sites", "explain_selection", "no_selection_reason"]


def _site_matches_name(site, name):
    return name in (site.path, site.layer_path, site.name)


def explain_selection(
    all_sites,
    sites=None,
    from_depth=None,
    include_output=False,
    include_softmax=False,
    include_fixed=False,
    include_gates=False,
):
    """`[(site, selected, reasons)]` for every site of `all_sites`.

    `reasons` lists why an unselected site is left out: `"fixed rule"`,
    `"not selected by sites"`, `"before from_depth=N"`, `"output layer"`,
    `"softmax"`, `"gate"`. Arguments as for `select_sites`.

    Raises:
        ValueError: when a name in a `sites` list matches no site; the
            message lists the sites there are.
    """
    if sites is not None and not isinstance(sites, str) and not callable(sites):
        names = list(sites)
        missing = [n for n in names if not any(_site_matches_name(s, n) for s in all_sites)]
        if missing:
            raise ValueError(
                f"`sites` names {missing} but the model has no activation site "
                f"there. Activation sites: {[s.path for s in all_sites] or 'none'}."
            )
    pattern = re.compile(sites) if isinstance(sites, str) else None
    rows = []
    for site in all_sites:
        reasons = []
        if site.fixed_rule is not None and not include_fixed:
            reasons.append("fixed rule")
        if sites is not None:
            if pattern is not None:
                chosen = bool(pattern.search(site.path))
            elif callable(sites):
                chosen = bool(sites(site))
            else:
                chosen = any(_site_matches_name(site, n) for n in sites)
            if not chosen:
                reasons.append("not selected by `sites`")
        if from_depth is not None and site.depth < from_depth:
            reasons.append(f"before from_depth={from_depth}")
        if site.is_output and not include_output:
            reasons.append("output layer")
        if site.is_softmax and not include_softmax:
            reasons.append("softmax")
        if site.is_gate and not include_gates:
            reasons.append("gate")
        rows.append((site, not reasons, reasons))
    return rows


def select_sites(
    all_sites,
    sites=None,
    from_depth=None,
    include_output=False,
    include_softmax=False,
    include_fixed=False,
    include_gates=False,
):
    """Chooses which sites get the linear backward rule (or get inspected).

    Args:
        all_sites: the result of `find_activation_sites`.
        sites: None (all), a list of site paths, layer paths or layer names,
            a regex string (matched with `re.search` against the site
            path), or a callable `site -> bool`.
        from_depth: if set, only sites with `depth >= from_depth` (1-based,
            call order) are selected (LinBP of Guo et al. 2020).
        include_output: also select the output's activation (the paper's
            Algorithm 2 loops k = l ... 1). Default False.
        include_softmax: also select softmax sites. Default False.
        include_gates: also select multiplicative gates (a sigmoid whose
            output scales another tensor, as in squeeze-and-excitation;
            see `ActivationSite.is_gate`). Default False: a linear gate
            keeps receiving gradient when it saturates, its un-normalized
            weights grow without bound and plain SGD diverges
            (EfficientNetB0).
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
    rows = explain_selection(
        all_sites, sites, from_depth, include_output, include_softmax, include_fixed,
        include_gates,
    )
    chosen = [site for site, selected, _ in rows if selected]
    if isinstance(sites, str) and not any(
        re.search(sites, s.path) for s in all_sites
    ):
        warnings.warn(
            f"The `sites` pattern {sites!r} matches no activation site. Site "
            f"paths: {[s.path for s in all_sites]}.",
            stacklevel=2,
        )
    return chosen


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
