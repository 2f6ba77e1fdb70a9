"""The process that draws `SaturationHistograms`' image summary
(`ImageRenderer`).

Rendering a figure is ~0.1-0.2 s of Python-heavy CPU work; on a thread of
the training process it would hold the GIL and slow training far more than
its CPU time. The child runs `keras_linbp.plotting.serve()` with only
`plotting.py` loaded (no TensorFlow), at lowered priority.
"""

import os
import pickle
import subprocess
import sys
import weakref

from keras_linbp import plotting

__all__ = ["ImageRenderer"]


def _end_process(process):
    """Closes the pipes and ends the process (waits, then kills)."""
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


class ImageRenderer:
    """A render child process. Ended by `close()`, else when the renderer
    is garbage collected, else at interpreter exit."""

    _BOOT = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('_keras_linbp_plotting', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.serve()\n"
    )

    def __init__(self):
        self._process = subprocess.Popen(
            [sys.executable, "-c", self._BOOT, os.path.abspath(plotting.__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        # Holds the process, not the renderer: also runs at exit (atexit).
        self._finalizer = weakref.finalize(self, _end_process, self._process)

    @property
    def pid(self):
        return self._process.pid

    def render(self, request):
        """PNG bytes of `plotting.activation_histogram_grid_png(**request)`.

        Raises:
            RuntimeError: if the child failed (e.g. no matplotlib).
        """
        try:
            plotting.write_frame(self._process.stdin, pickle.dumps(request))
            reply = plotting.read_frame(self._process.stdout)
        except (BrokenPipeError, OSError, ValueError) as error:
            raise RuntimeError(f"the render process failed: {error}") from error
        if reply is None:
            raise RuntimeError("the render process exited")
        if reply[:1] != b"P":
            raise RuntimeError(reply[1:].decode(errors="replace"))
        return reply[1:]

    def close(self):
        """Ends the process (idempotent)."""
        self._finalizer()
