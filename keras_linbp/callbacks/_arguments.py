"""Checks of the callbacks' constructor arguments: each error names the
argument and what it accepts."""

import math
import numbers
import re


def positive_int(name, value, allow_none=False, meaning=""):
    """`value` as an int >= 1 (or None when `allow_none`).

    Raises:
        TypeError: for anything but an integer (bools and floats included).
        ValueError: for an integer < 1.
    """
    allowed = f"an int >= 1{' or None' if allow_none else ''}{meaning}"
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be {allowed}; got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be {allowed}; got {value}.")
    return int(value)


def open_unit_interval(name, value, meaning=""):
    """`value` as a float strictly between 0 and 1.

    Raises:
        TypeError: for anything but a real number.
        ValueError: outside (0, 1), NaN included.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a number in (0, 1){meaning}; got "
            f"{type(value).__name__} {value!r}."
        )
    value = float(value)
    if math.isnan(value) or not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be in (0, 1){meaning}; got {value}.")
    return value


def boolean(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False; got {type(value).__name__} {value!r}.")
    return value


_SITES_ALLOWED = (
    "None (all sites), a regex string (matched against each site's path), "
    "a non-empty list of layer names or paths, or a callable site -> bool"
)


def sites(value):
    """Checks `sites=` (what `keras_linbp.sites.select_sites` reads).

    Raises:
        TypeError: for any other type, or a list holding a non-string.
        ValueError: for a string that is not a valid regex, or an empty list.
    """
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(
                f"`sites` {value!r} is not a valid regular expression ({error}). "
                f"`sites` must be {_SITES_ALLOWED}."
            ) from None
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"`sites` is an empty list: it selects nothing. `sites` must be {_SITES_ALLOWED}.")
        wrong = [name for name in value if not isinstance(name, str)]
        if wrong:
            raise TypeError(f"`sites` lists {wrong}, which are not names. `sites` must be {_SITES_ALLOWED}.")
        return list(value)
    raise TypeError(f"`sites` must be {_SITES_ALLOWED}; got {type(value).__name__} {value!r}.")
