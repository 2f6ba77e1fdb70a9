"""Modules that moved out of `keras_linbp.callbacks` in 0.3 keep their old
names, as the same module objects: `tags` (up to `keras_linbp.tags`, so
that `plotting` and `report` need not import the callbacks) and `schedule`
(to `keras_linbp.models.schedule`)."""

import importlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.all_backends

MOVED = [
    ("keras_linbp.callbacks.tags", "keras_linbp.tags"),
    ("keras_linbp.callbacks.schedule", "keras_linbp.models.schedule"),
]


@pytest.mark.parametrize("old, new", MOVED)
def test_the_old_name_is_the_same_module(old, new):
    package, _, name = old.rpartition(".")
    moved = importlib.import_module(new)
    assert importlib.import_module(old) is moved
    assert getattr(importlib.import_module(package), name) is moved


@pytest.mark.parametrize("old, new", MOVED)
def test_import_statement_of_the_old_name_in_a_fresh_process(old, new):
    # `import a.b.c` as the first import of the package: the name must be
    # in sys.modules once `a.b` is imported, not only an attribute.
    code = f"import {old} as old, {new} as new; assert old is new; print(old.__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == new


def test_backprop_schedule_is_one_class():
    from keras_linbp.callbacks import BackpropSchedule
    from keras_linbp.callbacks.schedule import BackpropSchedule as from_old_module

    assert BackpropSchedule is from_old_module
