"""Argument checks shared by every public entry point of keras_linbp.

Each check either returns the value in its canonical form (a `float` slope,
an `int` depth, a tuple of site names, ...) or raises an error that names
the argument, shows the value it got and says what is allowed:

- `TypeError` when the value has the wrong type (`slope="abc"`,
  `from_depth=1.7`, `sites=123`, a bool where a number is needed);
- `ValueError` when the type is right but the value is not allowed
  (`slope=nan`, `clip=0`, `from_depth=0`, a regex that does not compile).

Checks run when an object is made, so a bad argument fails at once rather
than at the first training step. This module imports nothing from the
rest of the package, so every module (the rule module `ops` included) can
use it without an import cycle.
"""

import math
import numbers
import os
import re

import keras
import numpy as np

__all__ = [
    "check_bool",
    "check_choice",
    "check_clip",
    "check_directory",
    "check_flag_or_int",
    "check_from_depth",
    "check_inspected_sites",
    "check_int",
    "check_open_fraction",
    "check_optional_int",
    "check_sites",
    "check_slope",
    "require_supported_backend",
]

AUTO = "auto"


def _describe(value):
    return f"{value!r} ({type(value).__name__})"


def _is_real(value):
    # `bool` is an `int` to Python, but `slope=True` is a mistake, not 1.0.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _finite_float(value, name, allowed):
    """`float(value)` for a finite real number; otherwise a named error."""
    if not _is_real(value):
        raise TypeError(f"`{name}` must be {allowed}; got {_describe(value)}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be {allowed}; got {value!r}.")
    return value


def check_slope(value, allow_auto=False, allow_dict=False, name="slope"):
    """Checks the linear rule's gradient factor (`g <- slope * g`).

    Any finite real number is allowed (0 blocks the gradient, a negative
    slope flips it); NaN, infinities, bools, strings and `None` are not.

    Args:
        value: the slope given by the user.
        allow_auto: also accept the string `"auto"` (returned as is), for
            callers that choose the slope themselves.
        allow_dict: also accept a dict `{site path: slope}`; every key must
            be a non-empty string and every value a finite real number.
        name: the argument name used in error messages.

    Returns:
        A `float`, `"auto"`, or a new dict `{str: float}`.

    Raises:
        TypeError: for a value of the wrong type (`"abc"`, `None`, `True`).
        ValueError: for NaN or an infinity, an unknown string where
            `"auto"` is allowed, or an empty dict.
    """
    allowed = "a finite real number (e.g. 1.0 or 0.5)"
    if allow_auto:
        allowed += f", or {AUTO!r}"
    if allow_dict:
        allowed += ", or a dict {site path: slope}"
    if isinstance(value, str):
        if allow_auto and value == AUTO:
            return value
        error = ValueError if allow_auto else TypeError
        raise error(f"`{name}` must be {allowed}; got {_describe(value)}.")
    if isinstance(value, dict):
        if not allow_dict:
            raise TypeError(f"`{name}` must be {allowed}; got {_describe(value)}.")
        if not value:
            raise ValueError(f"`{name}` is an empty dict; give at least one {{site path: slope}}.")
        checked = {}
        for path, slope in value.items():
            if not isinstance(path, str) or not path:
                raise TypeError(
                    f"`{name}` dict keys must be site paths (non-empty str); got {_describe(path)}."
                )
            checked[path] = _finite_float(
                slope, f"{name}[{path!r}]", "a finite real number (e.g. 1.0 or 0.5)"
            )
        return checked
    return _finite_float(value, name, allowed)


def check_clip(value, name="clip", allow_none=True):
    """Checks a clipping threshold: a positive finite number (or None).

    Args:
        value: the threshold.
        name: the argument name used in error messages.
        allow_none: accept `None` (no clipping).

    Returns:
        A `float`, or `None`.

    Raises:
        TypeError: for a non-number (`"abc"`, a bool) or a disallowed None.
        ValueError: for 0, a negative number, NaN or an infinity.
    """
    allowed = "a positive finite number" + (", or None (no clipping)" if allow_none else "")
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"`{name}` must be {allowed}; got None.")
    clip = _finite_float(value, name, allowed)
    if clip <= 0:
        raise ValueError(f"`{name}` must be {allowed}; got {clip!r}.")
    return clip


def check_int(name, value, minimum=None):
    """Checks an integer argument (not a bool, not a float such as 1.7).

    Args:
        name: the argument name used in error messages.
        value: the value.
        minimum: the smallest value allowed, if any.

    Returns:
        An `int`.

    Raises:
        TypeError: for a non-integer (`"abc"`, `1.7`, `2.0`, `True`).
        ValueError: for an integer below `minimum`.
    """
    allowed = "an int" + (f" >= {minimum}" if minimum is not None else "")
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be {allowed}; got {_describe(value)}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be {allowed}; got {value}.")
    return value


def check_from_depth(value, name="from_depth"):
    """Checks `from_depth`: None (every depth) or an int >= 1.

    Depths count activation sites from 1 in forward order.

    Returns:
        `None` or an `int`.

    Raises:
        TypeError: for a non-integer (`"abc"`, `1.7`, `True`).
        ValueError: for an integer below 1.
    """
    if value is None:
        return None
    try:
        return check_int(name, value, minimum=1)
    except (TypeError, ValueError) as error:
        # Same message, plus what None means.
        raise type(error)(
            f"{error} Depths count activation sites from 1 in forward order; "
            "None selects every depth."
        ) from None


def check_sites(value, name="sites"):
    """Checks a site selection.

    Allowed: None (every site); a regex string, matched with `re.search`
    against each site path (it must compile); a list or tuple of layer
    names or paths (strings); or a callable `ActivationSite -> bool`.

    Returns:
        `None`, the regex string, a tuple of strings, or the callable.

    Raises:
        TypeError: for anything else (`123`, a set, a list holding a
            non-string).
        ValueError: for a regex that does not compile.
    """
    allowed = (
        "None (every site), a regex string, a list or tuple of layer names or "
        "paths, or a callable `site -> bool`"
    )
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(
                f"`{name}` is read as a regex (matched with re.search against each "
                f"site path), but {value!r} does not compile: {error}. To name "
                f"layers, pass a list: {name}=[{value!r}]."
            ) from None
        return value
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise TypeError(
                    f"`{name}` as a list holds layer names or paths (str); item "
                    f"{index} is {_describe(item)}."
                )
        return tuple(value)
    raise TypeError(f"`{name}` must be {allowed}; got {_describe(value)}.")


def check_bool(name, value):
    """Checks a flag: `True` or `False` (numpy bools too; not 0/1 or strings).

    Returns:
        A `bool`.

    Raises:
        TypeError: for anything else (`"yes"`, `1`, `None`).
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"`{name}` must be True or False; got {_describe(value)}.")


def check_choice(name, value, choices):
    """Checks a mode given by name: one of the strings `choices`.

    Returns:
        `value`.

    Raises:
        ValueError: for anything else, whatever its type (`"fast"`,
            `["linear"]`, `None`), listing the choices.
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Unknown `{name}` value {value!r}: expected one of {tuple(choices)}.")
    return value


SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")


def require_supported_backend(what):
    """Raises `NotImplementedError` unless Keras runs on TensorFlow, JAX or
    PyTorch (keras_linbp has a custom-gradient primitive for each; on
    another backend its rules would be bypassed and training silently
    exact). (`NotImplementedError` is a `RuntimeError`.)

    Args:
        what: the entry point, for the message (e.g. `"LinBPTanh"`).
    """
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise NotImplementedError(
            f"{what} supports Keras's TensorFlow, JAX and PyTorch backends; "
            f"Keras is running on the {backend!r} backend. Set KERAS_BACKEND "
            "to one of tensorflow, jax, torch before importing keras."
        )


# --- the inspection callbacks' arguments (SaturationHistograms, GradientFlow) ---


def check_optional_int(name, value, minimum=None, none_means="no limit"):
    """`check_int`, or None.

    >>> check_optional_int("max_samples", None, minimum=1, none_means="every example")
    >>> check_optional_int("max_samples", 0, minimum=1, none_means="every example")
    Traceback (most recent call last):
    ...
    ValueError: `max_samples` must be an int >= 1; got 0. None means every example.

    Returns:
        `None` or an `int` (`none_means` says what None stands for, in errors).

    Raises:
        TypeError: for a non-integer (`"all"`, `2.0`, `True`).
        ValueError: for an integer below `minimum`.
    """
    if value is None:
        return None
    try:
        return check_int(name, value, minimum=minimum)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error} None means {none_means}.") from None


def check_flag_or_int(name, value, minimum=1, int_means="every N-th time"):
    """`True`, `False`, or `check_int` (e.g. `image=N`: every N-th probe).

    >>> check_flag_or_int("image", 2), check_flag_or_int("image", False)
    (2, False)

    Returns:
        A `bool` or an `int`.

    Raises:
        TypeError: for anything else (`"yes"`, `1.5`, `None`).
        ValueError: for an integer below `minimum`.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    try:
        return check_int(name, value, minimum=minimum)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"{error} An int means {int_means}; True and False are allowed too."
        ) from None


def check_open_fraction(name, value):
    """Checks a share strictly between 0 and 1 (a threshold, a quantile).

    >>> check_open_fraction("threshold", 0.25)
    0.25
    >>> check_open_fraction("threshold", 1.0)
    Traceback (most recent call last):
    ...
    ValueError: `threshold` must be a real number in (0, 1); got 1.0.

    Returns:
        A `float`.

    Raises:
        TypeError: for a non-number (`"abc"`, `None`, a bool).
        ValueError: outside (0, 1), NaN and the infinities included.
    """
    allowed = "a real number in (0, 1)"
    fraction = _finite_float(value, name, allowed)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`{name}` must be {allowed}; got {fraction!r}.")
    return fraction


def check_inspected_sites(value, name="sites"):
    """`check_sites` for a callback that inspects sites: an empty list is
    refused too, since a callback watching no site would log nothing.

    Returns:
        As `check_sites`.

    Raises:
        TypeError: as `check_sites`.
        ValueError: as `check_sites`, and for an empty list or tuple.
    """
    value = check_sites(value, name=name)
    if value == ():
        raise ValueError(
            f"`{name}` is an empty list: it selects nothing, so the callback "
            "would log nothing. Pass None for every site."
        )
    return value


def check_directory(name, value):
    """Checks a directory path (whether it can be written is checked where
    it is written).

    >>> import pathlib
    >>> check_directory("log_dir", pathlib.PurePosixPath("logs", "run_1"))
    'logs/run_1'

    Returns:
        The path as a `str`.

    Raises:
        TypeError: unless a str or `os.PathLike` of text.
        ValueError: for an empty string.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a directory path (str or os.PathLike); got {_describe(value)}."
        )
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"`{name}` must be a text path; got bytes {path!r}.")
    if not path:
        raise ValueError(f"`{name}` must be a directory path; got an empty string.")
    return path
