"""Checks of the callbacks' constructor arguments: each error names the
argument and what it accepts."""

import math
import numbers

from keras_linbp import _validation


def positive_int(name, value, allow_none=False, meaning=""):
    """`value` as an int >= 1 (or None when `allow_none`).

    Raises:
        TypeError: for anything but an integer (bools and floats included).
        ValueError: for an integer < 1.
    """
    if value is None and allow_none:
        return None
    try:
        return _validation.check_int(name, value, minimum=1)
    except (TypeError, ValueError) as error:
        # The same check, with the callback's wording of what is allowed.
        allowed = f"an int >= 1{' or None' if allow_none else ''}{meaning}"
        shown = f"{type(value).__name__} {value!r}" if isinstance(error, TypeError) else value
        raise type(error)(f"`{name}` must be {allowed}; got {shown}.") from None


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
    """`value` as a bool (`_validation.check_bool`)."""
    return _validation.check_bool(name, value)


def sites(value):
    """Checks `sites=` as `linearize` and `LinearBackpropModel` do
    (`keras_linbp._validation.check_sites`), and refuses an empty list: a
    callback watching no site would log nothing.

    Raises:
        TypeError: for any other type, or a list holding a non-string.
        ValueError: for a string that is not a valid regex, or an empty list.
    """
    value = _validation.check_sites(value)
    if isinstance(value, tuple):
        if not value:
            raise ValueError(
                "`sites` is an empty list: it selects nothing, so the callback "
                "would log nothing. Pass None for every site."
            )
        return list(value)
    return value
