"""Whether a site's output is the tensor the next layer keeps anyway.

A rule that keeps the activation's output (`from_output`) costs no memory
of its own only where the layers consuming that output keep it for their
own backward pass: a `Dense`, a convolution, a `Multiply` keep their input.
A `Dropout` (in training) hands the next layer another tensor, so the
output the rule keeps is a copy of its own. This can be known only from a
functional graph, for a site that is a layer's output (an `activation=`
attribute or an activation layer); for anything else the answer is None.
"""

import keras

from keras_linbp import _compat

__all__ = ["output_sharing"]

# Layers whose backward keeps their (first) input: the activation's output
# is then that layer's saved tensor.
_KEEP_THEIR_INPUT = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Multiply,
)
# Layers that hand on another tensor in training: the output is not shared.
_HAND_ON_A_COPY = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


def output_sharing(site):
    """`(shared, consumers)` for a site whose consumers the graph shows.

    Returns:
        `(True, names)` where every consumer of the site's output keeps it
        (a Dense, a convolution, a Multiply); `(False, names)` where one
        hands on another tensor in training (a Dropout); None where the
        graph does not tell (an op inside `call()`, a subclassed model,
        another consumer, the model's output).
    """
    if site.kind not in ("attribute", "layer call") or site.is_output:
        return None
    consumers = _compat.consuming_operations(site.layer)
    if not consumers:
        return None
    names = tuple(type(operation).__name__ for operation in consumers)
    if any(isinstance(operation, _HAND_ON_A_COPY) for operation in consumers):
        return False, names
    if all(isinstance(operation, _KEEP_THEIR_INPUT) for operation in consumers):
        return True, names
    return None
