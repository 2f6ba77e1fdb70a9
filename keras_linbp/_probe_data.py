"""Probe batches: the one reader of the batches that the callbacks probe,
`calibrate_slopes` measures and `fit(slope="auto")` calibrates on.

`data=` is read as follows (the rule the callbacks document):

- a `tf.data.Dataset` (batched, as for `fit`), a `keras.utils.PyDataset`
  or a `torch.utils.data.DataLoader`: its first batch, read as `fit` reads one (`x`, `(x, y)` or
  `(x, y, sample_weight)`);
- a list or tuple with one array per model input, for a model with more
  than one input (each array of the input's rank): `x` alone;
- any other tuple: `(x, y)` or `(x, y, sample_weight)`;
- anything else (an array, a dict of arrays): `x`.

Without `data=`, the running `fit` supplies the batch (its first
validation batch, else its first training batch).
"""

import collections.abc
import inspect
import sys

import keras

from keras_linbp import _compat

DEFAULT_MAX_SAMPLES = 256

_ALLOWED = (
    "an array, a list or dict of arrays (x), a tuple (x, y[, sample_weight]), "
    "a batched tf.data.Dataset, a keras.utils.PyDataset or (PyTorch) a "
    "torch.utils.data.DataLoader"
)


def is_tf_dataset(data):
    """Whether `data` is a `tf.data.Dataset` (without importing TensorFlow:
    if nobody has, it is not one)."""
    tensorflow = sys.modules.get("tensorflow")
    return tensorflow is not None and isinstance(data, tensorflow.data.Dataset)


def is_torch_data_loader(data):
    """Whether `data` is a `torch.utils.data.DataLoader` (PyTorch backend)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(data, torch.utils.data.DataLoader)


def _is_dataset(data):
    return (
        is_tf_dataset(data)
        or is_torch_data_loader(data)
        or isinstance(data, keras.utils.PyDataset)
    )


def _is_array(value):
    return hasattr(value, "shape") and (hasattr(value, "dtype") or hasattr(value, "__array__"))


def check_data(data):
    """Checks `data=` when a callback is made.

    Raises:
        TypeError: for a generator or iterator (reading a batch would
            consume it) and for anything that is not arrays or a dataset.
    """
    if data is None or _is_dataset(data):
        return
    if inspect.isgenerator(data):
        raise TypeError(
            "`data` is a generator: reading the probe batch from it would consume "
            f"it, and it cannot be read again. Pass {_ALLOWED}."
        )
    if isinstance(data, collections.abc.Iterator):
        raise TypeError(
            f"`data` is an iterator ({type(data).__name__}): it cannot be read "
            f"again at each probe. Pass {_ALLOWED}."
        )
    for leaf in keras.tree.flatten(data):
        if leaf is not None and not _is_array(leaf):
            raise TypeError(
                f"`data` holds a {type(leaf).__name__}, not an array. Pass {_ALLOWED}."
            )


def _first_batch(data):
    if is_tf_dataset(data):
        for element in data.take(1):
            return element
        raise ValueError("`data` is an empty tf.data.Dataset: there is no probe batch.")
    if isinstance(data, keras.utils.PyDataset):
        return data[0]
    if is_torch_data_loader(data):
        # A fresh iterator: the first batch, training is not affected.
        for batch in data:
            return batch
        raise ValueError("`data` is an empty DataLoader: there is no probe batch.")
    return data


def _model_inputs(model):
    """The model's symbolic inputs (a list), or None when it has none
    (a subclassed model)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


def _is_x_alone(data, model):
    """Whether a list/tuple `data` is one array per input of `model`."""
    inputs = _model_inputs(model)
    return (
        isinstance(data, (list, tuple))
        and inputs is not None
        and len(inputs) > 1
        and len(data) == len(inputs)
        and all(
            _is_array(array) and len(array.shape) == len(spec.shape)
            for array, spec in zip(data, inputs)
        )
    )


def _check_batched(x, model, owner):
    """Refuses a single example where the model takes a batch."""
    inputs = _model_inputs(model)
    if inputs is None:
        return
    if len(inputs) == 1:
        arrays = [x] if _is_array(x) else []
    elif isinstance(x, (list, tuple)) and len(x) == len(inputs):
        arrays = list(x)
    else:
        return  # e.g. a dict: Keras matches it by name
    for array, spec in zip(arrays, inputs):
        if _is_array(array) and len(array.shape) == len(spec.shape) - 1:
            raise ValueError(
                f"{owner}: `data` gives x of shape {tuple(array.shape)}, one example, "
                f"where the model's input {spec.name!r} takes batches of shape "
                f"{tuple(spec.shape)}. Is it an unbatched tf.data.Dataset? Call "
                "`.batch(n)` on it (or pass an array of examples)."
            )


def truncate(structure, max_samples):
    """`structure` (a nest of arrays, None leaves kept) cut to its first
    `max_samples` examples (None: all)."""
    if max_samples is None:
        return structure

    def cut(t):
        return None if t is None else t[:max_samples]

    return keras.tree.map_structure(cut, structure)


def _to_tensor(value):
    if value is None:
        return None
    if keras.backend.backend() == "tensorflow":
        return sys.modules["tensorflow"].convert_to_tensor(value)
    if "tensorflow" in type(value).__module__:
        value = value.numpy()  # e.g. a tf.data batch on JAX or PyTorch
    return keras.ops.convert_to_tensor(value)


def _to_tensors(structure):
    return keras.tree.map_structure(_to_tensor, structure)


def probe_batch(data, model, max_samples, owner, given=True):
    """`(x, y, sample_weight)` tensors of the probe batch, cut to
    `max_samples` examples.

    Args:
        data: `data=` (`given=True`) or what `probe_from_fit` returned.
        model: the model (its inputs tell `x` from `(x, y)`).
        max_samples: at most this many examples (None: all).
        owner: the callback's name, for messages.
        given: whether `data` is the user's `data=` (the module's rule) or
            `fit`'s own data (Keras's rule).

    Raises:
        ValueError: if `data` is one example where the model takes a batch.
    """
    batch = _first_batch(data)
    if given and not _is_dataset(data) and (
        _is_x_alone(batch, model)
    ):
        x, y, sample_weight = list(batch), None, None
    else:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    _check_batched(x, model, owner)
    x, y, sample_weight = truncate((x, y, sample_weight), max_samples)
    return _to_tensors(x), _to_tensors(y), _to_tensors(sample_weight)


def first_inputs(x, max_samples):
    """The model inputs of the first batch of `fit`'s `x`, cut to
    `max_samples` examples, or None when reading them would consume
    training data (a generator or iterator)."""
    if x is None:
        return None
    if _is_dataset(x):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(_first_batch(x))
        return truncate(inputs, max_samples)
    if inspect.isgenerator(x) or isinstance(x, collections.abc.Iterator):
        return None
    return truncate(x, max_samples)


def probe_from_fit(model):
    """The first validation batch of the running `fit`, else its first
    training batch (a fresh pass over the data: training is not affected).

    Raises:
        ValueError: if the running `fit` (and so its data) cannot be found,
            or its data is a Python generator (reading a batch would take
            it from training).
    """
    fit_locals = _compat.running_fit_locals(model)
    if fit_locals is None:
        raise ValueError(
            f"No probe data: pass `data=` ({_ALLOWED}) -- without it the callback "
            "takes the first validation (else training) batch of the running "
            "`model.fit`, which it could not find."
        )
    validation = fit_locals.get("validation_data")
    one_shot = (
        "a Python generator is consumed by reading it; pass `data=` "
        "(e.g. one batch as a tuple (x, y))."
    )
    if validation is not None:
        if _is_dataset(validation):
            return validation
        if inspect.isgenerator(validation) or hasattr(validation, "__next__"):
            raise ValueError(f"The validation data is an iterator: {one_shot}")
        batch_size = (
            fit_locals.get("validation_batch_size")
            or fit_locals.get("batch_size")
            or 32
        )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(validation)
        return truncate((x, y, sample_weight), batch_size)
    if keras.backend.backend() == "tensorflow":
        training = _compat.fit_training_data(fit_locals)
    else:
        # JAX, PyTorch: the first batch of a fresh pass of fit's own
        # adapter, as numpy (no TensorFlow pipeline built for it).
        training = _compat.fit_training_batch(fit_locals)
    if training is None:
        raise ValueError(f"The training data is an iterator: {one_shot}")
    return training
