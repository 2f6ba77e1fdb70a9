"""`keras_linbp.render.ImageRenderer`: a child process that draws the
histogram grid, answers each request with PNG bytes, and ends when closed."""

import numpy as np
import pytest

pytestmark = pytest.mark.all_backends

pytest.importorskip("matplotlib")

from keras_linbp import render  # noqa: E402


def _request(step):
    counts = np.array([1.0, 4.0, 2.0])
    return {"histograms": {"dense": (counts, (-1.0, 1.0))}, "kinds": {"dense": "bounded"},
            "step": step}


def test_renders_png_and_ends_when_closed():
    renderer = render.ImageRenderer()
    try:
        for step in (0, 1):  # one process serves every request
            png = renderer.render(_request(step))
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
        process = renderer._process
    finally:
        renderer.close()
    assert process.poll() is not None
    renderer.close()  # idempotent


def test_a_failed_request_is_a_runtime_error_naming_it():
    renderer = render.ImageRenderer()
    try:
        with pytest.raises(RuntimeError, match="TypeError"):
            renderer.render({"no_such_argument": 1})
        # The process keeps serving after a failed request.
        assert renderer.render(_request(0))[:4] == b"\x89PNG"
    finally:
        renderer.close()


def test_render_after_close_is_a_runtime_error():
    renderer = render.ImageRenderer()
    renderer.close()
    with pytest.raises(RuntimeError, match="render process"):
        renderer.render(_request(0))
