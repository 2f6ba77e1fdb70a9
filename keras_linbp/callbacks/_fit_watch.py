"""Noticing the end of a `fit` that ended without `on_train_end`.

Keras 3 calls no callback hook when `fit` raises or is interrupted, so a
callback that holds resources for the length of a `fit` (a render process,
unflushed summaries) watches the `fit` frame from a small daemon thread
and cleans up when the frame has left its thread's stack.
"""

import sys
import threading

from keras_linbp import _compat

POLL_SECONDS = 0.25


def _on_stack(frame, thread_id):
    """Whether `frame` is on the current stack of thread `thread_id`."""
    current = sys._current_frames().get(thread_id)
    try:
        while current is not None:
            if current is frame:
                return True
            current = current.f_back
        return False
    finally:
        del current


class FitWatch:
    """Calls `on_end()` once, from a daemon thread, after the `fit` running
    `model` has ended, unless `stop()` is called first.

    `start` returns None when no running `fit` is found (e.g. the callback
    hooks are called by a custom training loop, which calls `on_train_end`
    itself).
    """

    def __init__(self, frame, on_end):
        self._frame = frame
        self._thread_id = threading.get_ident()
        self._on_end = on_end
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="keras_linbp fit watch", daemon=True
        )

    @classmethod
    def start(cls, model, on_end):
        frame = _compat.running_fit_frame(model)
        if frame is None:
            return None
        watch = cls(frame, on_end)
        watch._thread.start()
        return watch

    def _run(self):
        while not self._stopped.wait(POLL_SECONDS):
            if not _on_stack(self._frame, self._thread_id):
                # Drop the frame (and the data it holds) before cleaning up.
                self._frame = None
                if not self._stopped.is_set():
                    self._on_end()
                return

    def stop(self):
        """No `on_end` after this returns (an `on_end` under way finishes
        first)."""
        self._stopped.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self._frame = None
