"""The checks `keras_linbp._validation` makes of the inspection callbacks'
arguments (`SaturationHistograms`, `GradientFlow`): each returns the value
in its canonical form or names the argument and what it accepts."""

import math

import numpy as np
import pytest

from keras_linbp import _validation

pytestmark = pytest.mark.all_backends


@pytest.mark.parametrize("value, expected", [(None, None), (1, 1), (np.int64(7), 7)])
def test_optional_int_accepts(value, expected):
    checked = _validation.check_optional_int("max_samples", value, minimum=1)
    assert checked == expected and (checked is None or type(checked) is int)


@pytest.mark.parametrize(
    "value, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError), ("all", TypeError),
                     (True, TypeError)]
)
def test_optional_int_refuses_saying_what_none_means(value, error):
    with pytest.raises(error, match=r"`max_samples` must be an int >= 1; .* None means all\."):
        _validation.check_optional_int("max_samples", value, minimum=1, none_means="all")


@pytest.mark.parametrize(
    "value, expected", [(True, True), (False, False), (np.bool_(True), True), (3, 3)]
)
def test_flag_or_int_accepts(value, expected):
    checked = _validation.check_flag_or_int("image", value)
    assert checked == expected and type(checked) is type(expected)


@pytest.mark.parametrize(
    "value, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("yes", TypeError),
                     (None, TypeError)]
)
def test_flag_or_int_refuses_naming_both_forms(value, error):
    with pytest.raises(error, match=r"`image` must be an int >= 1; .*True and False"):
        _validation.check_flag_or_int("image", value)


def test_open_fraction():
    assert _validation.check_open_fraction("threshold", np.float32(0.25)) == 0.25
    assert type(_validation.check_open_fraction("threshold", 0.5)) is float
    for value in (0.0, 1.0, -0.1, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"`threshold` must be a real number in \(0, 1\)"):
            _validation.check_open_fraction("threshold", value)
    for value in ("abc", None, True):
        with pytest.raises(TypeError, match="`threshold`"):
            _validation.check_open_fraction("threshold", value)


def test_inspected_sites_refuse_an_empty_list_only():
    assert _validation.check_inspected_sites(None) is None
    assert _validation.check_inspected_sites(["a", "b"]) == ("a", "b")
    assert _validation.check_inspected_sites("^dense") == "^dense"
    for empty in ([], ()):
        with pytest.raises(ValueError, match="`sites` is an empty list"):
            _validation.check_inspected_sites(empty)
    with pytest.raises(TypeError, match="`sites`"):
        _validation.check_inspected_sites(123)


def test_directory(tmp_path):
    assert _validation.check_directory("log_dir", tmp_path) == str(tmp_path)
    assert _validation.check_directory("log_dir", "logs") == "logs"
    with pytest.raises(ValueError, match="`log_dir` must be a directory path; got an empty"):
        _validation.check_directory("log_dir", "")
    for value in (None, 123, b"logs"):
        with pytest.raises(TypeError, match="`log_dir`"):
            _validation.check_directory("log_dir", value)

    class BytesPath:
        def __fspath__(self):
            return b"logs"

    with pytest.raises(TypeError, match="`log_dir` must be a text path"):
        _validation.check_directory("log_dir", BytesPath())
