"""Render a training report from TensorBoard logs, without TensorBoard.

    python -m keras_linbp.report LOGDIR --out report.png

Reads the event files that `SaturationHistograms` and `GradientFlow` wrote
(under `LOGDIR/train`, or LOGDIR itself if it holds event files) with
TensorBoard's own event reader, and draws one figure: the saturation
fractions over epochs per layer, and the exact vs linear-backprop gradient
norms per layer over epochs. Needs matplotlib.
"""

import argparse
import os
import re
import sys

import numpy as np

_SATURATION = re.compile(r"^saturation/(.+)/(saturated_fraction|dead_fraction|clipped_fraction)$")
_GRADIENT = re.compile(r"^gradient_flow/(.+)/(exact_norm|linear_norm)$")


def _run_directory(log_dir):
    train = os.path.join(log_dir, "train")
    if os.path.isdir(train):
        return train
    return log_dir


def read_scalars(log_dir):
    """All TF2 scalar summaries of a run: `{tag: (steps, values)}`.

    TF2 `tf.summary.scalar` values are stored as tensors; they are read
    with `EventAccumulator.Tensors` and `tf.make_ndarray`. When one step is
    written more than once (a second `fit` from epoch 0), the last value
    wins.
    """
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    run = _run_directory(log_dir)
    if not os.path.isdir(run):
        raise FileNotFoundError(f"No such log directory: {run!r}")
    accumulator = event_accumulator.EventAccumulator(
        run, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()[event_accumulator.TENSORS]:
        if not (_SATURATION.match(tag) or _GRADIENT.match(tag)):
            continue
        by_step = {}
        for event in accumulator.Tensors(tag):
            by_step[event.step] = float(tf.make_ndarray(event.tensor_proto))
        steps = np.array(sorted(by_step))
        scalars[tag] = (steps, np.array([by_step[s] for s in steps]))
    return scalars


def collect(scalars):
    """Splits scalars into the two panels of `plotting.training_report`."""
    saturation = {}
    gradient_flow = {}
    for tag, series in scalars.items():
        match = _SATURATION.match(tag)
        if match:
            saturation[(match.group(1), match.group(2))] = series
            continue
        match = _GRADIENT.match(tag)
        if match:
            gradient_flow.setdefault(match.group(1), {})[match.group(2)] = series
    return saturation, gradient_flow


def make_report(log_dir, out, title=None):
    """Writes the report figure for `log_dir` to `out` (PNG, or any format
    matplotlib infers from the suffix). Returns `out`."""
    from keras_linbp import plotting

    saturation, gradient_flow = collect(read_scalars(log_dir))
    if not saturation and not gradient_flow:
        raise ValueError(
            f"No saturation/* or gradient_flow/* scalars under {log_dir!r}: "
            "train with keras_linbp.callbacks.SaturationHistograms or "
            "GradientFlow and this log_dir."
        )
    figure = plotting.training_report(
        saturation, gradient_flow, title=title or f"keras_linbp report: {log_dir}"
    )
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
