"""Every Keras internal keras_linbp relies on, behind small functions.

Keras 3 has no public API for a few things this package needs: which layer
is running right now, the backend modules its activation functions call,
the functional-model class, a layer's direct sublayers, and the data of the
`fit` call a callback runs in. Each use lives here and nowhere else, so a
Keras upgrade that moves one breaks one module, and `check()` (run by the
test suite) says which internal moved. Importing it first checks the Keras
version (`keras_linbp._versions`).
"""

import inspect
import re

import keras
from keras.src.backend.common import global_state as _global_state
from keras.src.models.functional import Functional
from keras.src.models.model import functional_init_arguments
from keras.src.utils import naming as _naming

from keras_linbp import _versions

__all__ = [
    "Functional",
    "functional_init_arguments",
    "auto_name",
    "child_layers",
    "calling_layer_scope",
    "layer_name_scope",
    "backend_op_modules",
    "build_shapes",
    "functional_io",
    "output_layers_of_history",
    "consuming_operations",
    "is_multiply_operation",
    "consumer_nodes",
    "is_called_in_a_graph",
    "node_arguments",
    "nodes_in_call_order",
    "producer_node",
    "keras_op_name",
    "compute_loss",
    "running_fit_locals",
    "running_fit_frame",
    "fit_training_data",
    "fit_training_batch",
    "check",
]


def auto_name(prefix):
    """A unique layer name like Keras gives (`prefix`, `prefix_1`, ...)."""
    return _naming.auto_name(prefix)


def child_layers(layer):
    """The direct sublayers of `layer` (tracked attributes, in order)."""
    return layer._flatten_layers(include_self=False, recursive=False)


def calling_layer_scope():
    """The innermost Keras name scope opened by a layer's `__call__`, or None.

    `Layer.__call__` enters `backend.name_scope(self.name, caller=self)`;
    the stack of those scopes is thread-local Keras state. The returned
    object is the scope itself: one per layer invocation (its `.caller` is
    the layer), so it can key per-invocation counters.
    """
    stack = _global_state.get_global_attribute("name_scope_stack")
    if not stack:
        return None
    for scope in reversed(stack):
        if isinstance(getattr(scope, "caller", None), keras.layers.Layer):
            return scope
    return None


def layer_name_scope(layer):
    """The name scope `Layer.__call__` opens around `layer.call()` (a context
    manager; `calling_layer_scope()` returns it inside)."""
    return layer._open_name_scope()


def backend_op_modules():
    """`{"nn": module, "numpy": module}`: the backend modules that
    `keras.ops.*` / `keras.activations.*` look their functions up on at call
    time (`backend.nn.gelu`, `backend.numpy.tanh`)."""
    from keras.src import backend

    return {"nn": backend.nn, "numpy": backend.numpy}


def build_shapes(model):
    """`{argument name: shape}` a subclassed model was built with, or {}."""
    return dict(getattr(model, "_build_shapes_dict", None) or {})


def functional_io(model):
    """`(inputs, outputs)` symbolic structures of a Sequential/functional model."""
    if isinstance(model, keras.Sequential):
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        return inputs, model.outputs[0]
    return model._inputs_struct, model._outputs_struct


def output_layers_of_history(model):
    """The layers that produce a functional model's symbolic outputs."""
    outputs = getattr(model, "_outputs", None) if isinstance(model, keras.Model) else None
    if outputs is None:
        return []
    layers = []
    for tensor in keras.tree.flatten(outputs):
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            layers.append(history[0])
    return layers


def consuming_operations(layer):
    """The layers and ops a functional graph feeds `layer`'s outputs into
    (every call of `layer` in every functional model it belongs to)."""
    return [node.operation for node in getattr(layer, "_outbound_nodes", ())]


def is_multiply_operation(operation):
    """Whether `operation` multiplies its inputs elementwise: a
    `keras.layers.Multiply` or a functional `keras.ops.multiply` / `*`."""
    from keras.src.ops.numpy import Multiply as MultiplyOp

    return isinstance(operation, (keras.layers.Multiply, MultiplyOp))


# --- the functional graph around a site (multiplicative gates) -----------------


def consumer_nodes(operation):
    """The functional-graph nodes that take `operation`'s outputs as inputs
    (every call of it, in every functional model it belongs to)."""
    return list(getattr(operation, "_outbound_nodes", ()))


def is_called_in_a_graph(operation):
    """Whether a functional graph calls `operation` (False for a layer
    called only inside another layer's own `call()`)."""
    return bool(getattr(operation, "_inbound_nodes", ()))


def node_arguments(node):
    """`(operation, tensors, n_tensor_arguments, first argument)` of a
    functional-graph node: the distinct `KerasTensor`s it takes (by
    identity), how many of its arguments are tensors (2 for `x * x`), and
    its first positional argument (for `6 / x` the constant, not `x`)."""
    tensors = list({id(t): t for t in node.input_tensors}.values())
    args = node.arguments.args
    return node.operation, tensors, len(node.input_tensors), (args[0] if args else None)


def nodes_in_call_order(model):
    """The operation nodes of a functional model, in the order its `call`
    runs them (`Function._run_through_graph`: deepest first)."""
    by_depth = getattr(model, "_nodes_by_depth", None) or {}
    return [
        node
        for depth in sorted(by_depth, reverse=True)
        for node in by_depth[depth]
        if node.operation is not None and not node.is_input
    ]


def producer_node(tensor):
    """The node whose call produced the `KerasTensor` `tensor`, or None."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    nodes = getattr(history[0], "_inbound_nodes", ())
    return nodes[history[1]] if history[1] < len(nodes) else None


def keras_op_name(operation):
    """The `keras.ops` function a functional-graph op node applies, in
    snake case (`"add"`, `"true_divide"`, `"sigmoid"`, `"relu6"`), from its
    class in `keras.src.ops`; None for a layer or anything else."""
    if isinstance(operation, keras.layers.Layer):
        return None
    if not type(operation).__module__.startswith("keras.src.ops."):
        return None
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(operation).__name__).lower()


def compute_loss(model, x, y, y_pred, sample_weight, training=False):
    """The compiled loss as `train_step` computes it (plus regularization)."""
    return model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )


def running_fit_locals(model):
    """The local variables of the `Model.fit` call that is running `model`.

    Keras 3 gives callbacks no handle on the data `fit` iterates over, so
    the callbacks look for the `fit` frame on the call stack (they are
    called from it). Returns None when not found.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            f_locals = frame.f_locals
            if (
                frame.f_code.co_name == "fit"
                and f_locals.get("self") is model
                and "epoch_iterator" in f_locals
            ):
                return dict(f_locals)
            frame = frame.f_back
    finally:
        del frame
    return None


def check():
    """Raises `ImportError` naming each Keras internal that has moved, or
    the installed and the required version on a Keras that is too old.

    Run by the test suite, so that a Keras upgrade fails loudly in one place
    instead of silently training with exact backprop.
    """
    _versions.check_keras_version()
    problems = []
    layer = keras.layers.Dense(1)
    if not hasattr(layer, "_flatten_layers"):
        problems.append("Layer._flatten_layers (direct sublayers)")
    if not hasattr(layer, "_open_name_scope"):
        problems.append("Layer._open_name_scope (which layer is running)")
    if not callable(getattr(layer, "_build_at_init", None)):
        problems.append("Layer._build_at_init (keras_linbp's stateless layers built at init)")
    from keras.src.backend.common import name_scope as name_scope_module

    scope = name_scope_module.name_scope("linbp_check", caller=layer)
    with scope:
        if calling_layer_scope() is not scope:
            problems.append(
                "keras.src.backend.common.global_state 'name_scope_stack' "
                "(which layer is running)"
            )
    if hasattr(layer, "_open_name_scope"):
        with layer_name_scope(layer):
            scope = calling_layer_scope()
            if scope is None or scope.caller is not layer:
                problems.append("Layer._open_name_scope (the scope of a layer's call)")
    modules = backend_op_modules()
    for module_name, names in {
        "nn": ("relu", "gelu", "sigmoid", "silu", "softmax"),
        "numpy": ("tanh",),
    }.items():
        for name in names:
            if not callable(getattr(modules[module_name], name, None)):
                problems.append(f"keras.src.backend.{module_name}.{name}")
    inputs = keras.Input((2,))
    gate = keras.layers.Dense(2, activation="sigmoid")
    keras.layers.Multiply()([inputs, gate(inputs)])
    _ = inputs * gate(inputs)
    consumers = consuming_operations(gate)
    if len(consumers) != 2 or not all(is_multiply_operation(op) for op in consumers):
        problems.append(
            "Operation._outbound_nodes / keras.src.ops.numpy.Multiply "
            "(which layers consume a layer's output: gates)"
        )
    shifted = keras.Model(inputs, keras.ops.sigmoid(inputs + 1.0))
    if [keras_op_name(node.operation) for node in nodes_in_call_order(shifted)] != ["add", "sigmoid"]:
        problems.append(
            "Function._nodes_by_depth / keras.src.ops operation classes "
            "(gates written with keras.ops in a functional graph)"
        )
    if not hasattr(keras.Model, "_compute_loss"):
        problems.append("Model._compute_loss (the loss train_step computes)")
    fit_source = inspect.getsource(keras.Model.fit) if hasattr(keras.Model, "fit") else ""
    trainer_fit = getattr(type(keras.Model()), "fit", None)
    if trainer_fit is not None:
        try:
            fit_source = inspect.getsource(trainer_fit)
        except (OSError, TypeError):
            pass
    if "epoch_iterator" not in fit_source:
        problems.append("Model.fit local `epoch_iterator` (the callbacks' probe data)")
    problems.extend(_check_callback_internals())
    if problems:
        raise ImportError(
            f"keras_linbp relies on Keras internals that moved in Keras "
            f"{keras.__version__}: {'; '.join(problems)}. Pin the Keras "
            "version keras_linbp was tested with or upgrade keras_linbp."
        )


def symbolic_call(fn, *args):
    """Runs `fn` on symbolic stand-ins of the `KerasTensor`s in `args`
    (Keras's backend shape inference: `jax.eval_shape` on JAX, meta tensors
    on PyTorch); `fn` may run more than once."""
    from keras.src import backend

    return backend.compute_output_spec(fn, *args)


# --- added for keras_linbp.callbacks -------------------------------------------


def running_fit_frame(model):
    """The frame of the `Model.fit` call that is running `model`, or None.

    The same frame `running_fit_locals` reads. The callbacks watch it to
    notice a `fit` that ended without calling `on_train_end` (an exception,
    an interrupt): Keras 3 calls no callback hook then.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if (
                frame.f_code.co_name == "fit"
                and frame.f_locals.get("self") is model
                and "epoch_iterator" in frame.f_locals
            ):
                return frame
            frame = frame.f_back
    finally:
        del frame
    return None


def fit_training_data(fit_locals):
    """The training data of a running `fit` (given its locals), as the
    callbacks can read a batch of it again: a `keras.utils.PyDataset`, a
    `tf.data.Dataset`, or None when it is a Python generator (reading it
    would take batches from training)."""
    return _reread_fit_data(fit_locals, lambda adapter: adapter.get_tf_dataset())


def _reread_fit_data(fit_locals, read):
    """`read(adapter)` on a running `fit`'s data adapter; its PyDataset
    as itself; None for a Python generator."""
    adapter = fit_locals["epoch_iterator"].data_adapter
    if type(adapter).__name__ == "GeneratorDataAdapter":
        return None
    py_dataset = getattr(adapter, "py_dataset", None)
    if py_dataset is not None:
        return py_dataset
    return read(adapter)


def _check_callback_internals():
    """Problems with the internals `fit_training_data` reads."""
    import numpy as np
    from keras.src.trainers import epoch_iterator as epoch_iterator_module

    problems = []
    try:
        iterator = epoch_iterator_module.EpochIterator(
            x=np.zeros((2, 1), "float32"), batch_size=1
        )
        if not callable(getattr(iterator.data_adapter, "get_tf_dataset", None)):
            problems.append("EpochIterator.data_adapter.get_tf_dataset (the callbacks' probe data)")
        if not callable(getattr(iterator.data_adapter, "get_numpy_iterator", None)):
            problems.append(
                "EpochIterator.data_adapter.get_numpy_iterator (the callbacks' probe "
                "data on JAX and PyTorch)"
            )
    except (AttributeError, TypeError) as error:
        problems.append(f"keras.src.trainers.epoch_iterator.EpochIterator ({error})")
    try:
        from keras.src.trainers.data_adapters import generator_data_adapter
    except ImportError:
        problems.append("keras.src.trainers.data_adapters.generator_data_adapter")
    else:
        if not hasattr(generator_data_adapter, "GeneratorDataAdapter"):
            problems.append("GeneratorDataAdapter (a generator as fit's data)")
    return problems


def fit_training_batch(fit_locals):
    """The first training batch of a running `fit` (given its locals), read
    from a fresh pass of its own data adapter as numpy, for the JAX and
    PyTorch backends (no TensorFlow pipeline is built): a
    `keras.utils.PyDataset` as itself, None for a Python generator (reading
    it would take batches from training)."""
    return _reread_fit_data(
        fit_locals, lambda adapter: next(iter(adapter.get_numpy_iterator()), None)
    )
