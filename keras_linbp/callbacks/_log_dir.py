"""The callbacks' log directory: checked when a callback is made (its
type) and before training starts (that it can be written)."""

import os
import tempfile

from keras_linbp.callbacks._tensorflow import tf

_REMOTE = ("gs://", "s3://", "hdfs://")


def check_log_dir(log_dir):
    """`log_dir` as a string.

    Raises:
        TypeError: unless a str or os.PathLike.
        ValueError: if empty.
    """
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(
            f"`log_dir` must be a directory path (str or os.PathLike); got "
            f"{type(log_dir).__name__} {log_dir!r}."
        )
    log_dir = os.fspath(log_dir)
    if not isinstance(log_dir, str):
        raise TypeError(f"`log_dir` must be a text path, got bytes {log_dir!r}.")
    if not log_dir:
        raise ValueError("`log_dir` must be a directory path; got an empty string.")
    return log_dir


def train_directory(log_dir, owner):
    """Creates `<log_dir>/train` (where `keras.callbacks.TensorBoard`
    writes training summaries), checks it is writable, returns its path.

    Raises:
        PermissionError: if the directory cannot be created or written.
    """
    train_dir = os.path.join(log_dir, "train")
    try:
        if not train_dir.startswith(_REMOTE):
            os.makedirs(train_dir, exist_ok=True)
            # tf.summary defers errors to the first flush (and then only
            # logs them): try a real write now, before training starts.
            with tempfile.NamedTemporaryFile(dir=train_dir, prefix=".write_test"):
                pass
        else:
            tf.io.gfile.makedirs(train_dir)
    except OSError as error:
        raise PermissionError(
            f"{owner} cannot write its summaries to {train_dir!r}: {error}. "
            "Pass a writable `log_dir`."
        ) from error
    return train_dir
