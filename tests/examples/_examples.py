"""`load_example(name)`: examples/<name>.py as a module, for the example
tests (examples/ is not a package); `run_script`: a script of examples/ or
benchmarks/ in a fresh process; `assert_finite`: every number of a
results.json is finite."""

import importlib.util
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script, *arguments, backend="tensorflow", timeout=600):
    """Runs `script` (a path relative to the repository root) with
    `arguments` in a fresh Python process on Keras backend `backend`; a
    benchmark pins its framework's threads before any op runs, which this
    test process, having run ops, could not. Asserts it exited with 0.

    Returns:
        The `subprocess.CompletedProcess` (stdout and stderr as text).
    """
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, arguments)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def assert_finite(value, where="results"):
    """Every number anywhere in `value` (a results.json, read) is finite:
    no NaN or infinity (which `json` reads back as floats)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_finite(item, f"{where}[{key!r}]")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_finite(item, f"{where}[{index}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where} = {value}"
