"""Render a training report from TensorBoard logs, without TensorBoard.

    python -m keras_linbp.report LOGDIR --out report.png

Reads the event files that `SaturationHistograms` and `GradientFlow` wrote
(under `LOGDIR/train`, or LOGDIR itself if it holds event files) with
TensorBoard's own event reader, and draws one figure: the saturation
fractions over epochs per layer, and the exact vs linear-backprop gradient
norms per layer over epochs (with respect to the layer's kernel, or to the
site's input `a` for layers without one, as the logs say). The tags are
those of `keras_linbp.tags`. Needs matplotlib.
"""

import argparse
import os
import sys

import numpy as np

from keras_linbp import tags

__all__ = [
    "read_scalars",
    "read_gradient_targets",
    "collect",
    "build_report",
    "make_report",
    "main",
]


def _run_directory(log_dir):
    train = os.path.join(log_dir, "train")
    if os.path.isdir(train):
        return train
    return log_dir


def _load(log_dir):
    """TensorBoard's `EventAccumulator` over the run, loaded."""
    from tensorboard.backend.event_processing import event_accumulator

    run = _run_directory(log_dir)
    if not os.path.isdir(run):
        raise FileNotFoundError(f"No such log directory: {run!r}")
    accumulator = event_accumulator.EventAccumulator(
        run, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


def _report_tags(accumulator):
    from tensorboard.backend.event_processing import event_accumulator

    return [
        tag
        for tag in accumulator.Tags()[event_accumulator.TENSORS]
        if tags.SATURATION_FRACTION_PATTERN.match(tag) or tags.GRADIENT_NORM_PATTERN.match(tag)
    ]


def _scalars(accumulator):
    import tensorflow as tf

    scalars = {}
    for tag in _report_tags(accumulator):
        by_step = {}
        for event in accumulator.Tensors(tag):
            by_step[event.step] = float(tf.make_ndarray(event.tensor_proto))
        steps = np.array(sorted(by_step))
        scalars[tag] = (steps, np.array([by_step[s] for s in steps]))
    return scalars


def _gradient_targets(accumulator):
    targets = {}
    for tag in _report_tags(accumulator):
        match = tags.GRADIENT_NORM_PATTERN.match(tag)
        if match:
            description = accumulator.SummaryMetadata(tag).summary_description
            target = tags.gradient_target(description)
            if target is not None:
                targets[match.group("stem")] = target
    return targets


def read_scalars(log_dir):
    """The saturation fractions and gradient norms of a run:
    `{tag: (steps, values)}`.

    TF2 `tf.summary.scalar` values are stored as tensors; they are read
    with `EventAccumulator.Tensors` and `tf.make_ndarray`. When one step is
    written more than once (a second `fit` from epoch 0), the last value
    wins.
    """
    return _scalars(_load(log_dir))


def read_gradient_targets(log_dir):
    """`{layer: "kernel" | "input"}`: what each layer's gradient norm is
    taken with respect to (`tags.KERNEL`, `tags.INPUT`), from the summaries'
    descriptions. Layers logged by keras_linbp 0.1 (no description) are
    absent."""
    return _gradient_targets(_load(log_dir))


def collect(scalars):
    """Splits scalars into the two panels of `plotting.training_report`."""
    saturation = {}
    gradient_flow = {}
    for tag, series in scalars.items():
        match = tags.SATURATION_FRACTION_PATTERN.match(tag)
        if match:
            saturation[(match.group("stem"), match.group("name"))] = series
            continue
        match = tags.GRADIENT_NORM_PATTERN.match(tag)
        if match:
            gradient_flow.setdefault(match.group("stem"), {})[match.group("name")] = series
    return saturation, gradient_flow


def build_report(log_dir, title=None):
    """The report figure (a `matplotlib.figure.Figure`) for `log_dir`.

    Raises:
        FileNotFoundError: if there is no such directory.
        ValueError: if it holds no saturation or gradient-flow scalars.
    """
    from keras_linbp import plotting

    accumulator = _load(log_dir)
    saturation, gradient_flow = collect(_scalars(accumulator))
    if not saturation and not gradient_flow:
        raise ValueError(
            f"No {tags.SATURATION}/* or {tags.GRADIENT_FLOW}/* scalars under "
            f"{log_dir!r}: train with keras_linbp.callbacks.SaturationHistograms "
            "or GradientFlow and this log_dir."
        )
    return plotting.training_report(
        saturation,
        gradient_flow,
        title=title or f"keras_linbp report: {log_dir}",
        gradient_targets=_gradient_targets(accumulator),
    )


def make_report(log_dir, out, title=None):
    """Writes the report figure for `log_dir` to `out` (PNG, or any format
    matplotlib infers from the suffix). Returns `out`."""
    figure = build_report(log_dir, title=title)
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_linbp.report",
        description="Saturation and gradient-flow report from a TensorBoard "
        "log directory written by keras_linbp's callbacks.",
    )
    parser.add_argument("log_dir", help="the log_dir given to the callbacks")
    parser.add_argument("--out", default="report.png", help="output image (default report.png)")
    parser.add_argument("--title", default=None, help="figure title")
    args = parser.parse_args(argv)
    try:
        out = make_report(args.log_dir, args.out, title=args.title)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
