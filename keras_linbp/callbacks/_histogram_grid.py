"""`SaturationHistograms`' image summary, `activations/histogram_grid`:
when one is due, and drawing and writing it off the training thread.

Only the small bucket-count arrays of a probe leave the device. The figure
(~0.15 s of matplotlib) is rendered in a separate process
(`keras_linbp.render.ImageRenderer`), waited for on a worker thread, so
training neither waits for it nor competes with it for the GIL.
"""

import concurrent.futures
import struct
import time
import warnings

import keras

from keras_linbp import render
from keras_linbp import tags
from keras_linbp.callbacks._tensorflow import tf


class HistogramGridImages:
    """The histogram-grid images of one callback, over every `fit` it is
    used in.

    Args:
        every: `True`: at a probe, as long as drawing has cost at most
            `time_budget` of the training time so far; an int N: every
            N-th probe (the first included).
        time_budget: the share of training time drawing may cost.
        owner: the callback's name, for the worker thread and warnings.
    """

    def __init__(self, every, time_budget, owner):
        self._every = every
        self._time_budget = time_budget
        self._owner = owner
        self._probes_done = 0
        self._warned = False
        self._failed = False
        self._executor = None
        self._futures = []
        self._renderer = None
        # Over every `fit`: the budget's inputs.
        self._image_seconds = 0.0
        self._trained_seconds = 0.0
        self._fit_started = None

    def start_fit(self):
        self._fit_started = time.perf_counter()

    def after_probe(self, writer, image_counts, kinds, step):
        """Counts a probe; when an image is due, draws and writes one from
        `image_counts` (`{stem: (counts, edges)}`) on the worker thread."""
        self._probes_done += 1
        if not image_counts or self._failed or not self._due():
            return
        histograms = {
            stem: (keras.ops.convert_to_numpy(counts), keras.ops.convert_to_numpy(edges))
            for stem, (counts, edges) in image_counts.items()
        }
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=self._owner
            )
        self._futures.append(
            self._executor.submit(self._write, writer, histograms, kinds, int(step))
        )

    def _due(self):
        if self._every is not True:
            return (self._probes_done - 1) % self._every == 0
        if any(not future.done() for future in self._futures):
            return False  # the previous image is still being drawn
        elapsed = self._trained_seconds + time.perf_counter() - self._fit_started
        return self._image_seconds <= self._time_budget * elapsed

    def _write(self, writer, histograms, kinds, step):
        """Draws and writes one image; returns a problem to warn about, or None."""
        started = time.perf_counter()
        if self._renderer is None:
            self._renderer = render.ImageRenderer()
        try:
            png = self._renderer.render({"histograms": histograms, "kinds": kinds, "step": step})
            # The render process's time: what the image costs the machine.
            self._image_seconds += time.perf_counter() - started
        except RuntimeError as error:
            # Don't try again every epoch (e.g. matplotlib is missing).
            self._failed = True
            return f"no image summary ({error}); install matplotlib or pass image=False"
        # Written as TensorBoard's image plugin stores it (width, height,
        # PNG bytes), straight from the rendered PNG: `tf.summary.image`
        # would decode and re-encode it on TF's threads, stalling training.
        from tensorboard.plugins.image import metadata as image_metadata

        width, height = struct.unpack(">II", png[16:24])  # the PNG IHDR chunk
        with writer.as_default(step=step):
            tf.summary.write(
                tags.HISTOGRAM_GRID,
                tf.constant([str(width).encode(), str(height).encode(), png]),
                step=step,
                metadata=image_metadata.create_summary_metadata(
                    display_name=None, description=None
                ),
            )
        return None

    def finish_fit(self):
        """However the fit ended (possibly on the fit watch's thread): the
        pending images are written (a failure warned about once), the
        worker and the render process ended."""
        if self._fit_started is not None:
            self._trained_seconds += time.perf_counter() - self._fit_started
            self._fit_started = None
        futures, self._futures = self._futures, []
        for future in futures:
            problem = future.result()
            if problem and not self._warned:
                self._warned = True
                # stacklevel: the callback's on_train_end.
                warnings.warn(f"{self._owner}: {problem}.", stacklevel=5)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
