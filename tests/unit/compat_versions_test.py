"""The supported Keras floor: refused loudly below it, declared the same way
everywhere (setup.py, the CI's minimum-version run, the README)."""

import os
import pathlib
import re
import subprocess
import sys

import keras
import pytest

from keras_linbp import _compat
from keras_linbp import _versions

pytestmark = pytest.mark.all_backends

REPO = pathlib.Path(__file__).resolve().parents[2]


def _as_tuple(version):
    # An independent reading of "X.Y.Z": plain integers, no suffix.
    return tuple(int(part) for part in version.split("."))


@pytest.mark.parametrize("older", ["3.3.3", "3.7.0", "3.10.0", "3.11.2", "2.15.0"])
def test_an_older_keras_is_refused_naming_both_versions(older):
    assert _as_tuple(older) < _as_tuple(_versions.MIN_KERAS_VERSION)
    with pytest.raises(ImportError) as info:
        _versions.check_keras_version(older)
    message = str(info.value)
    assert f"Keras {older} is installed" in message
    assert f"Keras >= {_versions.MIN_KERAS_VERSION}" in message


@pytest.mark.parametrize("newer", ["3.11.3", "3.12.0", "3.15.1", "3.16.0.dev2026120300", "4.0.0"])
def test_the_floor_and_newer_releases_are_accepted(newer):
    assert _versions.check_keras_version(newer) == newer


def test_the_installed_keras_passes_and_check_refuses_an_older_one(monkeypatch):
    assert _versions.check_keras_version() == keras.__version__
    _compat.check()
    monkeypatch.setattr(keras, "__version__", "3.10.0")
    with pytest.raises(ImportError, match=r"needs Keras >= 3\.11\.3.*Keras 3\.10\.0 is installed"):
        _compat.check()


def test_importing_keras_linbp_on_an_older_keras_fails_with_the_versions():
    # A fresh interpreter: the check runs when keras_linbp is first imported.
    code = "import keras; keras.__version__ = '3.9.2'; import keras_linbp"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: keras_linbp needs Keras >= 3.11.3"), last_line
    assert "Keras 3.9.2 is installed" in last_line


def test_setup_ci_and_readme_declare_the_same_floor():
    keras_floor, tf_floor = _versions.MIN_KERAS_VERSION, _versions.MIN_TENSORFLOW_VERSION
    setup_text = (REPO / "setup.py").read_text(encoding="utf-8")
    requires = re.search(r"install_requires=\[([^\]]*)\]", setup_text).group(1)
    assert f'"keras>={keras_floor}"' in requires
    assert f'"tensorflow>={tf_floor}"' in requires
    # CI runs the TensorFlow suite on exactly the declared minimums.
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert f'"keras=={keras_floor}"' in ci and f'"tensorflow=={tf_floor}"' in ci
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"Keras ≥ {keras_floor}" in readme and f"TensorFlow ≥ {tf_floor}" in readme
