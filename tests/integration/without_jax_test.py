"""The suite on a machine without JAX: what needs JAX skips, it does not fail.

JAX is an optional extra (`pip install -e ".[jax]"`), and Keras's numpy
backend imports it too. Here a `sitecustomize` on PYTHONPATH hides JAX
(`sys.modules["jax"] = None`: `import jax` raises ModuleNotFoundError and
`importlib.util.find_spec("jax")` returns None, as when it is not installed)
from a pytest run and from every process that run starts.
"""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
HIDE_JAX = 'import sys\nsys.modules["jax"] = None  # as if JAX were not installed\n'


def test_numpy_backend_check_skips_without_jax(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(HIDE_JAX)
    env = dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    test = "tests/unit/validation_test.py::test_every_entry_point_works_on_jax_and_torch_and_names_other_backends"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-q", "-rs", "-p", "no:cacheprovider",
         f"{test}[numpy]", f"{test}[jax]"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "2 skipped" in run.stdout, run.stdout[-2000:]
    assert "Keras's numpy backend needs jax, which is not installed" in run.stdout, run.stdout[-2000:]
