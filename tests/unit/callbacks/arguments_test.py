"""Every constructor argument of the callbacks is checked when the callback
is made, with an error that names the argument."""

import math
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from keras_linbp.callbacks import BackpropSchedule
from keras_linbp.callbacks import GradientFlow
from keras_linbp.callbacks import SaturationHistograms

BOTH = (SaturationHistograms, GradientFlow)


def _generator():
    yield np.zeros((2, 3), "float32")


# (argument, bad value, error type)
SHARED_BAD = [
    ("log_dir", None, TypeError),
    ("log_dir", 123, TypeError),
    ("log_dir", "", ValueError),
    ("freq", 0, ValueError),
    ("freq", -1, ValueError),
    ("freq", 1.5, TypeError),
    ("freq", "1", TypeError),
    ("freq", True, TypeError),
    ("max_samples", 0, ValueError),
    ("max_samples", "all", TypeError),
    ("max_samples", 2.0, TypeError),
    ("sites", 123, TypeError),
    ("sites", [1, 2], TypeError),
    ("sites", "(", ValueError),
    ("sites", [], ValueError),
    ("data", "abc", TypeError),
    ("data", [[1.0, 2.0], [3.0, 4.0]], TypeError),
    ("data", _generator, TypeError),  # replaced by a generator object below
    ("data", iter([np.zeros((2, 3))]), TypeError),
]
SATURATION_BAD = [
    ("threshold", 0.0, ValueError),
    ("threshold", 1.0, ValueError),
    ("threshold", 1.5, ValueError),
    ("threshold", -0.1, ValueError),
    ("threshold", math.nan, ValueError),
    ("threshold", "abc", TypeError),
    ("threshold", True, TypeError),
    ("threshold", None, TypeError),
    ("buckets", -3, ValueError),
    ("buckets", 0, ValueError),
    ("buckets", 2.5, TypeError),
    ("buckets", "30", TypeError),
    ("buckets", True, TypeError),
    ("batch_freq", 0, ValueError),
    ("batch_freq", -2, ValueError),
    ("batch_freq", "x", TypeError),
    ("batch_freq", 2.0, TypeError),
    ("image", 0, ValueError),
    ("image", -1, ValueError),
    ("image", "yes", TypeError),
    ("image", 1.5, TypeError),
]
GRADIENT_FLOW_BAD = [
    ("histograms", "yes", TypeError),
    ("histograms", 1, TypeError),
]


def _case(callback, argument, value, error):
    shown = repr(value) if isinstance(value, (str, int, float, list, type(None))) else type(value).__name__
    return pytest.param(callback, argument, value, error, id=f"{callback.__name__}-{argument}={shown}")


def _cases():
    for callback in BOTH:
        for case in SHARED_BAD:
            yield _case(callback, *case)
    for case in SATURATION_BAD:
        yield _case(SaturationHistograms, *case)
    for case in GRADIENT_FLOW_BAD:
        yield _case(GradientFlow, *case)


@pytest.mark.parametrize("callback, argument, value, error", list(_cases()))
def test_bad_argument_is_refused_at_construction_naming_it(tmp_path, callback, argument, value, error):
    if value is _generator:
        value = _generator()
    kwargs = {"log_dir": str(tmp_path)}
    kwargs[argument] = value
    with pytest.raises(error, match=f"`{argument}`"):
        callback(**kwargs)


@pytest.mark.parametrize("callback", BOTH)
def test_good_arguments_are_accepted(tmp_path, callback):
    x = np.zeros((4, 3), "float32")
    for kwargs in (
        {"log_dir": pathlib.Path(tmp_path)},
        {"freq": np.int64(2), "max_samples": None},
        {"sites": lambda site: True},
        {"sites": "^dense"},
        {"sites": ("dense", "block/dense_1")},
        {"data": x},
        {"data": (x, np.zeros(4))},
        {"data": {"a": x, "b": x}},
        {"data": [x, x]},
        {"data": tf.data.Dataset.from_tensor_slices((x, np.zeros(4))).batch(2)},
    ):
        kwargs.setdefault("log_dir", str(tmp_path))
        callback(**kwargs)
    if callback is SaturationHistograms:
        made = callback(str(tmp_path), threshold=np.float32(0.25), buckets=np.int32(10),
                        batch_freq=3, image=2)
        assert (made.threshold, made.buckets, made.batch_freq, made.image) == (0.25, 10, 3, 2)


def test_backprop_schedule_checks_verbose():
    with pytest.raises(ValueError, match="`verbose`"):
        BackpropSchedule(2, verbose=2)
    assert BackpropSchedule(2, verbose=True).verbose == 1
