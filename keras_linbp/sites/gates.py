"""Multiplicative gates: activations whose value only scales another tensor.

A site is a gate (`ActivationSite.is_gate`) when its activation is bounded
-- sigmoid, tanh, hard_sigmoid, or a capped ReLU such as the
`ReLU(6)(x + 3) / 6` hard sigmoid of MobileNetV3's squeeze-and-excitation
blocks -- and a functional graph uses its value only as a factor of
elementwise products with another tensor (`keras.layers.Multiply`,
`keras.ops.multiply`, `*`), possibly after elementwise shifts and scalings
by constants (`x + 3`, `x / 6`, `Rescaling`, `Reshape`) on the way.

The value of a site is read off the functional graph: an attribute or
layer-call site's layer output; for a `keras.ops.sigmoid(x)` node of a
functional model, that op node (matched to the site by call order); for a
`Lambda` whose function ends in the activation, the `Lambda`'s output. An
activation inside a custom layer's own `call()` has no node of its own:
there the detector cannot know, and the site says so (`gate_checked`).
"""

import keras

from keras_linbp import _compat

__all__ = ["can_gate", "mark_gates"]

# Elementwise ops that pass a value on, shifted or scaled by a constant.
_PASS_ON_OPS = {"add", "subtract", "multiply", "negative", "reshape", "expand_dims", "cast"}
_DIVIDE_OPS = {"true_divide", "divide"}
_PASS_ON_LAYERS = (keras.layers.Rescaling, keras.layers.Reshape, keras.layers.Identity)


def can_gate(site):
    """Whether `site`'s activation is bounded on both sides, as a gate's
    is: the table's bounded kinds, ReLU6, a ReLU with `max_value`."""
    name = site.activation_name
    return site.saturation == "bounded" or name == "relu6" or "max_value=" in name


def _passes_value_on(node):
    """The node's output is its one tensor input, shifted or scaled by
    constants (a single input of which it is no divisor)."""
    operation, tensors, n_tensor_arguments, first = _compat.node_arguments(node)
    if n_tensor_arguments != 1:
        return False
    if isinstance(operation, _PASS_ON_LAYERS):
        return True
    name = _compat.keras_op_name(operation)
    if name in _DIVIDE_OPS:
        return first is tensors[0]  # x / 6, not 6 / x
    return name in _PASS_ON_OPS


def _is_product_with_another_tensor(node):
    operation, tensors, _, _ = _compat.node_arguments(node)
    return _compat.is_multiply_operation(operation) and len(tensors) >= 2


def only_a_factor(operation, _seen=None):
    """Whether every use a functional graph makes of `operation`'s output
    is, after shifts and scalings by constants, a factor of an elementwise
    product with another tensor."""
    seen = set() if _seen is None else _seen
    nodes = _compat.consumer_nodes(operation)
    if not nodes:
        return False
    for node in nodes:
        if _is_product_with_another_tensor(node):
            continue
        if not _passes_value_on(node) or id(node.operation) in seen:
            return False
        seen.add(id(node.operation))
        if not only_a_factor(node.operation, seen):
            return False
    return True


def _op_node_operations(model, op, count):
    """The op nodes of functional `model` applying `op`, in call order, if
    there are exactly `count` (one per site the trace saw); else None."""
    operations = [
        node.operation
        for node in _compat.nodes_in_call_order(model)
        if _compat.keras_op_name(node.operation) == op
    ]
    return operations if len(operations) == count else None


def _lambda_ends_in(layer, op):
    """Whether the `Lambda` `layer`'s function returns `op` of its input,
    shifted or scaled by constants: traced once on fresh symbolic inputs
    (no node is added to the model's graph)."""
    try:
        inputs = layer.input
        fresh = keras.tree.map_structure(lambda t: keras.KerasTensor(t.shape, t.dtype), inputs)
        output = layer.call(fresh)
    except Exception:  # noqa: BLE001 -- a function keras.ops cannot trace: unknown
        return False
    if not isinstance(output, keras.KerasTensor):
        return False
    node = _compat.producer_node(output)
    while node is not None and _passes_value_on(node):
        node = _compat.producer_node(_compat.node_arguments(node)[1][0])
    return node is not None and _compat.keras_op_name(node.operation) == op


def _classify_op_sites(layer, op_sites):
    """`{id(site): (is_gate, checked)}` for the op sites of one layer."""
    result = {}
    by_op = {}
    for site in op_sites:
        by_op.setdefault(site.attribute, []).append(site)
    for op, group in by_op.items():
        group.sort(key=lambda s: s.occurrence)
        operations = None
        if isinstance(layer, _compat.Functional):
            operations = _op_node_operations(layer, op, len(group))
        elif isinstance(layer, keras.layers.Lambda) and len(group) == 1:
            if _lambda_ends_in(layer, op):
                operations = [layer]
            elif _compat.is_called_in_a_graph(layer):
                operations = [None]  # its output is not the activation's
        for index, site in enumerate(group):
            if not can_gate(site):
                result[id(site)] = (False, True)
            elif operations is None:
                result[id(site)] = (False, False)
            else:
                operation = operations[index]
                result[id(site)] = (operation is not None and only_a_factor(operation), True)
    return result


def mark_gates(sites):
    """Sets `is_gate` and `gate_checked` on each of `sites` (one model's)."""
    op_sites = {}
    for site in sites:
        if site.kind == "op":
            op_sites.setdefault(id(site.layer), (site.layer, []))[1].append(site)
            continue
        if not can_gate(site):
            site.is_gate, site.gate_checked = False, True
        elif _compat.is_called_in_a_graph(site.layer):
            site.is_gate, site.gate_checked = only_a_factor(site.layer), True
        else:
            # A layer called inside another layer's own call(): no node.
            site.is_gate, site.gate_checked = False, False
    classified = {}
    for layer, group in op_sites.values():
        classified.update(_classify_op_sites(layer, group))
    for site in sites:
        if site.kind == "op":
            site.is_gate, site.gate_checked = classified[id(site)]
