"""The oldest Keras and TensorFlow keras_linbp supports, checked at import.

The floor is the oldest release pair the whole test suite passes on;
`setup.py` declares the same numbers and `.ci/run` runs the TensorFlow suite
on exactly them. Older Keras fails later and less clearly: it lacks
`keras.activations.hard_tanh` (before 3.7) or runs the callbacks' batch
hooks with other step indices under `steps_per_execution` (3.10).
"""

import re

import keras

__all__ = ["MIN_KERAS_VERSION", "MIN_TENSORFLOW_VERSION", "check_keras_version"]

MIN_KERAS_VERSION = "3.11.3"
MIN_TENSORFLOW_VERSION = "2.16.2"


def _release(version):
    """`"3.11.3"` -> `(3, 11, 3)`; a suffix (`"3.12.0.dev2025"`, `"3.9.0rc1"`)
    is dropped, so a pre-release counts as its release."""
    numbers = []
    for part in str(version).split(".")[:3]:
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers + [0] * (3 - len(numbers)))


def check_keras_version(version=None):
    """Raises `ImportError` unless Keras `version` is at least `MIN_KERAS_VERSION`.

    Args:
        version: a Keras version string; default the installed
            `keras.__version__`.

    Returns:
        The version checked, a string.

    Raises:
        ImportError: naming the installed and the required Keras version.
    """
    version = keras.__version__ if version is None else version
    if _release(version) < _release(MIN_KERAS_VERSION):
        raise ImportError(
            f"keras_linbp needs Keras >= {MIN_KERAS_VERSION} (tested with "
            f"TensorFlow >= {MIN_TENSORFLOW_VERSION}); Keras {version} is "
            f'installed. Upgrade it: `pip install "keras>={MIN_KERAS_VERSION}"`.'
        )
    return version


# At import: an unsupported Keras is refused here, by name, instead of
# failing later inside Keras.
check_keras_version()
