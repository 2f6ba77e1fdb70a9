"""Every Python block of the guide (docs/guide/*.md) runs as shown, from a
fresh namespace, or opens with `# Fragment:` and says what it leaves out.

A reader copies these blocks; one that needs an unshown `import` or data
fails for them at the first line. Blocks run on TensorFlow in this process,
those that `import jax` in a JAX child process. Fragments must still parse.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
GUIDE = sorted((REPO / "docs" / "guide").glob("*.md"))
FRAGMENT = "# Fragment:"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    found = []
    for path in GUIDE:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append(pytest.param(match.group(1), id=f"{path.name}:{line}"))
    return found


def test_the_guide_has_python_blocks():
    assert len(_blocks()) >= 8


@pytest.mark.parametrize("code", _blocks())
def test_guide_block_runs_or_is_marked_a_fragment(code, tmp_path, monkeypatch):
    compiled = compile(code, "<guide block>", "exec")
    if code.startswith(FRAGMENT):
        assert len(code.splitlines()[0]) > len(FRAGMENT) + 5, "say what the fragment leaves out"
        return
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    if re.search(r"^import jax\b", code, re.M):
        if importlib.util.find_spec("jax") is None:
            pytest.skip("the block needs JAX, which is not installed")
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        return
    exec(compiled, {"__name__": "guide_block"})
