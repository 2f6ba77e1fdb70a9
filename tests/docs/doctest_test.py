"""Every `>>>` example in keras_linbp's docstrings runs and prints what it shows.

One test per module that holds examples (modules without any are no tests),
on every backend: the examples use `keras.ops` and numpy only. Each example
sees `keras`, `np` and `keras_linbp` already imported, as numpy's doctests
see `np`; anything else it imports itself.
"""

import doctest
import importlib
import importlib.util
import io
import pkgutil

import keras
import numpy as np
import pytest

import keras_linbp

pytestmark = pytest.mark.all_backends

OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
TENSORFLOW_INSTALLED = importlib.util.find_spec("tensorflow") is not None


def _module_names():
    # walk_packages imports each package to look inside it; a package that
    # fails to import is reported by the test below, not skipped here.
    found = pkgutil.walk_packages(keras_linbp.__path__, prefix="keras_linbp.", onerror=lambda name: None)
    return ["keras_linbp", *sorted(info.name for info in found)]


def _import(name):
    """The module, or the exception its import raised (reported by its test)."""
    try:
        return importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - any import error fails that module's test
        return error


def _examples(module):
    """The module's docstrings that hold at least one example."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    extraglobs = {"keras": keras, "np": np, "keras_linbp": keras_linbp}
    return [test for test in finder.find(module, module.__name__, extraglobs=extraglobs) if test.examples]


def _cases():
    cases = []
    for name in _module_names():
        module = _import(name)
        if isinstance(module, Exception) or _examples(module):
            cases.append(name)
    return cases


@pytest.mark.parametrize("name", _cases())
def test_docstring_examples(name):
    module = _import(name)
    if isinstance(module, ImportError) and name.startswith("keras_linbp.callbacks") and not TENSORFLOW_INSTALLED:
        pytest.skip("the TensorBoard callbacks need TensorFlow installed")
    if isinstance(module, Exception):
        raise module
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = io.StringIO()
    tried = failed = 0
    for test in _examples(module):
        result = runner.run(test, out=report.write)
        tried, failed = tried + result.attempted, failed + result.failed
    assert tried > 0
    assert failed == 0, f"{failed} of {tried} examples in {name} failed:\n{report.getvalue()}"
