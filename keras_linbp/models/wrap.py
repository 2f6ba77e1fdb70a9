"""How `LinearBackpropModel.from_model` wraps an existing model: the
inputs and outputs of a functional model over the same layers."""

import inspect

import keras

from keras_linbp import _compat


def _required_call_arguments(model):
    """Names of the arguments `model.call` cannot do without (besides
    `training` and `mask`, which Keras passes itself)."""
    try:
        parameters = inspect.signature(model.call).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is p.empty
        and p.name not in ("training", "mask")
    ]


def _inputs_like_build_shapes(model):
    """`keras.Input`s with the shapes a subclassed `model` was built with."""
    required = _required_call_arguments(model)
    if len(required) > 1:
        raise ValueError(
            f"`from_model` cannot wrap subclassed model {model.name!r}: its "
            f"`call({', '.join(required)})` takes {len(required)} required input "
            "arguments, and a functional LinearBackpropModel passes one input "
            "(a tensor, or a list or dict of tensors). Give `call` a single "
            "input, e.g. `def call(self, inputs): a, b = inputs`, or subclass "
            "LinearBackpropModel instead of wrapping."
        )
    shapes = _compat.build_shapes(model)
    if len(shapes) != 1:
        raise ValueError(
            f"`from_model` cannot infer the inputs of subclassed model "
            f"{model.name!r}: it was built with {len(shapes)} input arguments "
            f"({list(shapes) or 'no recorded shapes'}); one input argument "
            "(a tensor, list or dict of tensors) is supported. Build a "
            "functional LinearBackpropModel around it instead."
        )
    (shape,) = shapes.values()

    def make_input(batch_shape):
        return keras.Input(batch_shape=(None,) + tuple(batch_shape)[1:], dtype=model.input_dtype)

    return keras.tree.map_shape_structure(make_input, shape)


def functional_parts(model):
    """`(inputs, outputs)` of a functional model over `model`'s layers.

    A Sequential or functional `model` gives its own layer graph; a
    subclassed one becomes a single layer called on inputs shaped as it
    was built.

    Raises:
        TypeError: if `model` is no `keras.Model`.
        ValueError: if `model` is not built, or a subclassed model's
            inputs cannot be inferred.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`from_model` expects a keras.Model, got {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"`from_model` needs a built model, but model {model.name!r} "
            "is not built: give it an `Input`, call it on a batch, or call "
            "`model.build(input_shape)` first."
        )
    if isinstance(model, (_compat.Functional, keras.Sequential)):
        return _compat.functional_io(model)
    inputs = _inputs_like_build_shapes(model)
    return inputs, model(inputs)
