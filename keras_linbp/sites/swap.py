"""`swap_sites`: run other functions at chosen sites for a `with` block."""

import contextlib
from typing import Callable

from keras_linbp.sites import dispatch

__all__ = ["swap_sites"]


@contextlib.contextmanager
def swap_sites(sites, make_replacement: Callable):
    """Within the block, each site calls `make_replacement(site, original)`.

    The replacement must accept the same arguments as the original function
    (the pre-activation first; for `"layer call"` sites, the layer's `call`
    arguments; for `"op"` sites, the Keras backend function's). Outside the
    block -- and in other threads that did not enter a block of their own --
    the original function runs. Nested blocks stack (the innermost wins for
    a site both name), and the model is restored exactly on exit,
    exceptions included.

    Args:
        sites: sites from `find_activation_sites` (usually a selection).
        make_replacement: `(site, original) -> callable`.

    Example:

    >>> import keras, numpy as np
    >>> import keras_linbp
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     2, activation="tanh", kernel_initializer="ones", name="d")])
    >>> sites = keras_linbp.sites.find_activation_sites(model)
    >>> x = np.array([[1.0, 2.0]], "float32")
    >>> with keras_linbp.sites.swap_sites(sites, lambda site, original: keras.activations.relu):
    ...     print(keras.ops.convert_to_numpy(model(x)))
    [[3. 3.]]
    >>> print(np.round(keras.ops.convert_to_numpy(model(x)), 3))  # tanh again
    [[0.995 0.995]]
    """
    # Every attribute / call site of the models involved gets a dispatcher,
    # selected or not: while any dispatched function runs, the ops inside it
    # belong to it, so op sites are counted the same way as when the sites
    # were observed.
    groups = {}
    for site in sites:
        for member in getattr(site, "_group", (site,)):
            groups.setdefault(id(member), member)
    members = list(groups.values())
    uses_ops = any(member.kind == "op" for member in members)
    # The layers owning op sites open their name scope even when their
    # `call()` runs without `__call__` (the outermost model in JAX's
    # training step or `stateless_call`): the op dispatcher reads it.
    scoped = list({id(m.layer): m.layer for m in members if m.kind == "op"}.values())
    installed = []
    scoped_installed = []
    pushed = []
    try:
        if uses_ops:
            dispatch.install_ops()
        for member in members:
            if member.kind != "op":
                dispatch.install_attribute(member.layer, member.attribute)
                installed.append(member)
        for layer in scoped:
            dispatch.install_call_scope(layer)
            scoped_installed.append(layer)
        for site in sites:
            replacement = make_replacement(site, site.function)
            dispatch.push(site.key, replacement)
            pushed.append(site.key)
        yield
    finally:
        for key in reversed(pushed):
            dispatch.pop(key)
        for layer in reversed(scoped_installed):
            dispatch.uninstall_call_scope(layer)
        for member in reversed(installed):
            dispatch.uninstall_attribute(member.layer, member.attribute)
        if uses_ops:
            dispatch.uninstall_ops()
