"""Matplotlib figures of keras_linbp's inspection data.

matplotlib is an optional extra (`pip install keras-linbp[examples]`);
this module imports it when a function runs, never at package import. The
figures are built on `matplotlib.figure.Figure` with the Agg canvas (no
pyplot): no global state, safe outside the main thread.
"""

import io
import math

import numpy as np

__all__ = [
    "activation_histogram_grid",
    "activation_histogram_grid_png",
    "training_report",
    "serve",
    "read_frame",
    "write_frame",
]


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "keras_linbp.plotting needs matplotlib: pip install matplotlib"
        ) from error
    figure = Figure(figsize=(width, height), dpi=80)
    FigureCanvasAgg(figure)
    return figure


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def activation_histogram_grid(histograms, kinds=None, step=None):
    """A grid of per-layer activation histograms (like Yazdani 2018, Fig. 1).

    Args:
        histograms: `{layer: (counts, [low, high])}`, equal-width buckets
            over `[low, high]`, in forward order.
        kinds: optional `{layer: saturation kind}` shown in the titles.
        step: optional step (epoch) for the figure title.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    names = list(histograms)
    columns = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    # Fixed margins instead of tight_layout (which draws the figure twice):
    # this figure is rendered at every probe.
    figure = _figure(2.6 * columns, 2.1 * rows + 0.3)
    figure.subplots_adjust(
        left=0.12 / columns ** 0.5, right=0.97, bottom=0.22 / rows ** 0.5,
        top=1.0 - 0.3 / (2.1 * rows + 0.3) - 0.06 / rows, wspace=0.35, hspace=0.7,
    )
    for index, name in enumerate(names):
        counts, (low, high) = histograms[name]
        counts = np.asarray(counts, dtype=float)
        edges = np.linspace(float(low), float(high), len(counts) + 1)
        axes = figure.add_subplot(rows, columns, index + 1)
        total = counts.sum()
        share = counts / total if total > 0 else counts
        # One artist (stairs) instead of one rectangle per bucket: faster.
        axes.stairs(share, edges, fill=True, color="tab:blue")
        kind = (kinds or {}).get(name)
        axes.set_title(f"{name} ({kind})" if kind else name, fontsize=9)
        axes.set_xlabel("activation f(a)", fontsize=8)
        if index % columns == 0:
            axes.set_ylabel("share of units", fontsize=8)
        axes.tick_params(labelsize=7)
    if step is not None:
        figure.suptitle(f"Activation histograms, step {step}", fontsize=10)
    return figure


def activation_histogram_grid_png(histograms, kinds=None, step=None):
    """`activation_histogram_grid` rendered to PNG bytes."""
    return _png(activation_histogram_grid(histograms, kinds=kinds, step=step))


def _gradient_label(targets):
    """The y label of the gradient panel, for the set of what the layers'
    norms are taken with respect to (`"kernel"`, `"input"`, None: unknown)."""
    from keras_linbp import tags

    kernel_norm, input_norm = "‖∂loss/∂kernel‖₂", "‖∂loss/∂a‖₂"
    if targets == {tags.KERNEL}:
        return kernel_norm
    if targets == {tags.INPUT}:
        return f"{input_norm} (a: the layer's input)"
    return f"{kernel_norm} or {input_norm} (a: the layer's input; see legend)"


def training_report(saturation, gradient_flow, title=None, gradient_targets=None):
    """One figure: saturation over epochs per layer, and the exact vs linear
    backprop gradient norm per layer over epochs.

    Args:
        saturation: `{(layer, fraction_name): (steps, values)}` with
            `fraction_name` one of `keras_linbp.tags.FRACTIONS`
            (`saturated_fraction`, `dead_fraction`, `clipped_fraction`).
        gradient_flow: `{layer: {"exact_norm": (steps, values),
            "linear_norm": (steps, values)}}`, in forward order.
        title: optional figure title.
        gradient_targets: optional `{layer: "kernel" | "input"}`: whether a
            layer's norm is of d loss / d kernel or d loss / d a (its input);
            layers missing from it are labelled as either.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    # Imported here: `serve()` runs this file alone, without the package.
    from keras_linbp import tags

    fraction_labels = {
        tags.SATURATED_FRACTION: "saturated",
        tags.DEAD_FRACTION: "dead",
        tags.CLIPPED_FRACTION: "|a| > 1",
    }
    gradient_targets = gradient_targets or {}
    target_marks = {tags.KERNEL: "∂/∂kernel", tags.INPUT: "∂/∂a"}
    panels = int(bool(saturation)) + int(bool(gradient_flow))
    if panels == 0:
        raise ValueError(
            f"Nothing to plot: no {tags.SATURATION}/* or {tags.GRADIENT_FLOW}/* "
            "scalars found."
        )
    figure = _figure(8.0 * panels, 5.0)
    colors = _layer_colors(
        list(dict.fromkeys([layer for layer, _ in saturation] + list(gradient_flow)))
    )
    panel = 1
    if saturation:
        axes = figure.add_subplot(1, panels, panel)
        panel += 1
        for (layer, name), (steps, values) in saturation.items():
            axes.plot(
                steps,
                values,
                marker="o",
                markersize=3,
                color=colors[layer],
                label=f"{layer}: {fraction_labels.get(name, name)}",
            )
        axes.set_ylim(-0.02, 1.02)
        axes.set_xlabel("epoch (step)")
        axes.set_ylabel("fraction of units")
        axes.set_title("Saturation per layer (probe batch)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if gradient_flow:
        axes = figure.add_subplot(1, panels, panel)
        for layer, series in gradient_flow.items():
            mark = target_marks.get(gradient_targets.get(layer))
            # Exact solid; the rule the model trained with (linear, few-bit) dashed.
            for rule, style in [(rule, "-" if rule == tags.EXACT else "--") for rule in tags.RULES]:
                name = tags.norm_name(rule)
                if name not in series:
                    continue
                steps, values = series[name]
                axes.plot(
                    steps,
                    np.maximum(values, 1e-30),
                    style,
                    marker="o",
                    markersize=3,
                    color=colors[layer],
                    label=f"{layer} ({rule}, {mark})" if mark else f"{layer} ({rule})",
                )
        axes.set_yscale("log")
        axes.set_xlabel("epoch (step)")
        axes.set_ylabel(
            _gradient_label({gradient_targets.get(layer) for layer in gradient_flow}),
            fontsize=9,
        )
        axes.set_title("Gradient norm: exact (solid) vs linear backprop (dashed)")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def _layer_colors(layers):
    from matplotlib import colormaps

    palette = colormaps["tab10"] if len(layers) <= 10 else colormaps["tab20"]
    return {layer: palette(index % palette.N) for index, layer in enumerate(layers)}


# --- rendering in a separate process -------------------------------------------
#
# Rendering a figure is ~0.1-0.2 s of pure-Python-heavy CPU work. On a
# thread of the training process it holds the GIL and slows the training
# loop far more than its CPU time; in a separate process it does not.
# `serve()` is that process's loop; `keras_linbp.render.ImageRenderer` starts
# it with only this file loaded (not the keras_linbp package, so no
# TensorFlow).

_HEADER_BYTES = 8


def write_frame(stream, payload):
    """Writes one length-prefixed frame (the render process's protocol)."""
    stream.write(len(payload).to_bytes(_HEADER_BYTES, "little"))
    stream.write(payload)
    stream.flush()


def read_frame(stream):
    """One length-prefixed frame, or None at end of stream."""
    header = stream.read(_HEADER_BYTES)
    if len(header) < _HEADER_BYTES:
        return None
    size = int.from_bytes(header, "little")
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


def serve(stdin=None, stdout=None):
    """Renders `activation_histogram_grid_png(**request)` for each pickled
    request frame on stdin; replies `b"P" + png` or `b"E" + error`."""
    import os
    import pickle
    import sys

    try:
        os.nice(10)  # Yield the CPU to training.
    except (AttributeError, OSError):
        pass
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    while True:
        frame = read_frame(stdin)
        if frame is None:
            return
        try:
            reply = b"P" + activation_histogram_grid_png(**pickle.loads(frame))
        except Exception as error:  # reported to the parent, which warns
            reply = b"E" + f"{type(error).__name__}: {error}".encode()
        write_frame(stdout, reply)
