"""The callbacks' log directory, made and checked writable before training
starts (its type is checked when a callback is made:
`keras_linbp._validation.check_directory`)."""

import os
import tempfile

from keras_linbp.callbacks._tensorflow import tf

_REMOTE = ("gs://", "s3://", "hdfs://")


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
