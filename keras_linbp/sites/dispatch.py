"""Per-thread dispatch of activation functions: the one mechanism behind
`swap_sites`, the training step's linear rule and the callbacks' probes.

Three kinds of place are re-routed while a swap (or an observation) is
active, and only then:

- a layer attribute holding an activation (`Dense.activation`,
  `LSTMCell.recurrent_activation`, `Activation.activation`, ...);
- the `call` of a Keras activation layer (`ReLU`, `Softmax`, ...,
  `LinearBackprop`);
- the Keras backend functions that `keras.ops.*` / `keras.activations.*`
  call (`backend.nn.gelu`, `backend.numpy.tanh`, ...): an activation
  computed by a custom layer's own `call()`.

Each is replaced by a dispatcher that looks up, in thread-local state, what
to run for this site in this thread; with nothing registered it runs the
original function. An op dispatcher identifies its site by the innermost
layer whose `call()` is running, the op name and how many times that op ran
before in the same invocation of that layer. Outside every layer (losses,
metrics, optimizers) an op always runs the original.

While a dispatched function runs, nested dispatch is off: the ops inside a
`Dense` activation, a `ReLU` layer or an already replaced function are part
of that one site. So it is, with the ops installed, while a Keras activation
that is not a site runs (`_exact_functions`: `mish` computes
`x * tanh(softplus(x))` with the backend `softplus`, `celu`, `glu`,
`log_sigmoid`, ...): an op site is a call the user makes, and such an
activation keeps exact backprop as a whole.

Two more things make the same sites found by every way of running a model:

- A layer's name scope is what an op dispatcher reads, and only
  `Layer.__call__` opens it. JAX's training step, `stateless_call` and a
  direct `model.call(x)` run `call()` without it, so the ops in the
  outermost functional graph would look as if they ran outside every
  layer. `install_call_scope` wraps the `call` of each layer that owns op
  sites so that it opens the layer's scope when `__call__` did not.
- Under `torch.compile` (PyTorch, `jit_compile=True`) the dispatchers run
  eagerly (`torch.compiler.disable`): their per-thread lookup and the rule
  functions they run (a `torch.autograd.Function` that edits the output
  tensor's `__dict__`) cannot be traced by dynamo. The compiled graph is cut
  at each dispatched site, and each step looks the rule up afresh, exactly
  as in eager mode.
"""

import functools
import inspect
import threading
import weakref

import keras

from keras_linbp import _compat

__all__ = [
    "OP_FUNCTIONS",
    "Event",
    "attribute_key",
    "current_graph",
    "install_attribute",
    "install_call_scope",
    "install_ops",
    "op_key",
    "op_original",
    "pop",
    "push",
    "state",
    "uninstall_attribute",
    "uninstall_call_scope",
    "uninstall_ops",
]

# Backend functions re-routed, per backend module: the table's activations
# plus softmax. Names are Keras's (`keras.ops.<name>`).
OP_FUNCTIONS = {
    "nn": (
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "silu",
        "sigmoid",
        "softplus",
        "softsign",
        "hard_sigmoid",
        "hard_silu",
        "hard_tanh",
        "softmax",
    ),
    "numpy": ("tanh",),
}
_SITE_OPS = frozenset(name for names in OP_FUNCTIONS.values() for name in names)

_lock = threading.Lock()
# key -> [original, dispatcher, users, owner]; key is ("attr", id(layer),
# attribute) or ("op", module name, op name); `owner` (the layer or backend
# module) is held so that its id is not reused while it is installed.
_installed = {}
_local = threading.local()


class _ThreadState:
    def __init__(self):
        self.replacements = {}  # site key -> [function, ...] (a stack)
        self.guard = 0  # > 0 while a dispatched function runs
        self.observers = []  # callables(event) collecting discovery events
        # One counter dict per layer invocation (the Keras name scope object).
        self.op_counts = weakref.WeakKeyDictionary()


def state():
    """This thread's dispatch state."""
    if not hasattr(_local, "state"):
        _local.state = _ThreadState()
    return _local.state


def attribute_key(layer, attribute):
    """The site key of `layer.<attribute>` (`"call"` for a layer-call site)."""
    return ("attr", id(layer), attribute)


def op_key(layer, op, occurrence):
    """The site key of the `occurrence`-th call of `op` in one call of `layer`."""
    return ("op", id(layer), op, occurrence)


class Event:
    """What an observer sees when a dispatched site runs."""

    __slots__ = ("key", "layer", "attribute", "op", "occurrence", "output", "first_op", "last_op", "graph")

    def __init__(self, key, layer, attribute=None, op=None, occurrence=0):
        self.key = key
        self.layer = layer
        self.attribute = attribute
        self.op = op
        self.occurrence = occurrence
        self.output = None
        self.graph = None
        self.first_op = self.last_op = 0


def _run(st, key, original, args, kwargs, event):
    stack = st.replacements.get(key)
    fn = stack[-1] if stack else original
    graph = None
    if st.observers and event is not None:
        graph = current_graph()
        if graph is not None:
            event.first_op = len(graph.get_operations())
    st.guard += 1
    try:
        out = fn(*args, **kwargs)
    finally:
        st.guard -= 1
    if st.observers and event is not None:
        event.output = out
        if graph is not None:
            event.graph = graph
            event.last_op = len(graph.get_operations())
        for observer in st.observers:
            observer(event)
    return out


def current_graph():
    """The TF graph being traced, else None (eager, or another backend)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


def _eager_under_torch_compile(fn):
    """`fn`, run eagerly where `torch.compile` traces its caller (PyTorch);
    `fn` itself on the other backends, whose tracers run Python as is."""
    if keras.backend.backend() != "torch":
        return fn
    import torch

    return torch.compiler.disable(fn)


def _make_attribute_dispatcher(key, layer, attribute, original):
    layer_ref = weakref.ref(layer)

    def dispatch(*args, **kwargs):
        st = state()
        if st.guard or not (st.replacements or st.observers):
            return original(*args, **kwargs)
        event = Event(key, layer_ref(), attribute=attribute) if st.observers else None
        return _run(st, key, original, args, kwargs, event)

    dispatch.__name__ = getattr(original, "__name__", "activation")
    dispatch = _eager_under_torch_compile(dispatch)
    dispatch._linbp_original = original
    return dispatch


def _make_op_dispatcher(op, original):
    def dispatch(*args, **kwargs):
        st = state()
        if st.guard or not (st.replacements or st.observers):
            return original(*args, **kwargs)
        scope = _compat.calling_layer_scope()
        if scope is None:
            # Outside every layer's call(): a loss, a metric, user code.
            return original(*args, **kwargs)
        layer = scope.caller
        counts = st.op_counts.get(scope)
        if counts is None:
            counts = st.op_counts[scope] = {}
        occurrence = counts.get(op, 0)
        counts[op] = occurrence + 1
        key = op_key(layer, op, occurrence)
        event = Event(key, layer, op=op, occurrence=occurrence) if st.observers else None
        return _run(st, key, original, args, kwargs, event)

    dispatch.__name__ = getattr(original, "__name__", op)
    dispatch = _eager_under_torch_compile(dispatch)
    dispatch._linbp_original = original
    return dispatch


@functools.lru_cache(maxsize=None)
def _make_exact(original):
    # Cached: it reads the thread's state per call; a swap installs at every eager step.
    def exact(*args, **kwargs):
        st = state()
        if st.guard or not (st.replacements or st.observers):
            return original(*args, **kwargs)
        st.guard += 1
        try:
            return original(*args, **kwargs)
        finally:
            st.guard -= 1

    exact.__name__ = getattr(original, "__name__", "activation")
    # Eager under torch.compile: the guard must be set while the
    # dispatchers inside run (they run eagerly too).
    exact = _eager_under_torch_compile(exact)
    exact._linbp_original = original
    return exact


def _make_scoped_call(key, layer, attribute, original):
    layer_ref = weakref.ref(layer)

    def call(*args, **kwargs):
        owner = layer_ref()
        scope = _compat.calling_layer_scope()
        if owner is None or (scope is not None and scope.caller is owner):
            # Called by `Layer.__call__`, which opened the scope already.
            return original(*args, **kwargs)
        with _compat.layer_name_scope(owner):
            return original(*args, **kwargs)

    call.__name__ = getattr(original, "__name__", "call")
    call._linbp_original = original
    return call


def install_attribute(layer, attribute):
    """Puts a dispatcher on `layer.<attribute>` (reference counted)."""
    return _install(attribute_key(layer, attribute), layer, attribute, _make_attribute_dispatcher)


def install_call_scope(layer):
    """Makes `layer.call()` open the layer's name scope when it runs outside
    `Layer.__call__` (`stateless_call`, JAX's training step), so that its op
    sites are found there too (reference counted)."""
    return _install(("scope", id(layer)), layer, "call", _make_scoped_call)


def _install(key, layer, attribute, make):
    with _lock:
        record = _installed.get(key)
        if record is None:
            original = getattr(layer, attribute)
            original = getattr(original, "_linbp_original", original)
            dispatcher = make(key, layer, attribute, original)
            record = _installed[key] = [original, dispatcher, 0, layer]
            # object.__setattr__: a plain attribute swap, invisible to
            # Keras's tracking (a function is not trackable anyway).
            object.__setattr__(layer, attribute, dispatcher)
        record[2] += 1
    return key, record[0]


def uninstall_attribute(layer, attribute):
    """Undoes one `install_attribute`; the last one restores the original."""
    _uninstall(attribute_key(layer, attribute), layer, attribute)


def uninstall_call_scope(layer):
    """Undoes one `install_call_scope`."""
    _uninstall(("scope", id(layer)), layer, "call")


def _uninstall(key, layer, attribute):
    with _lock:
        record = _installed[key]
        record[2] -= 1
        if record[2] == 0:
            del _installed[key]
            original = record[0]
            if attribute == "call" and getattr(original, "__self__", None) is layer:
                # The bound method came from the class: drop the override.
                layer.__dict__.pop("call", None)
            else:
                object.__setattr__(layer, attribute, original)


def _each_op():
    """`(owner, name, key, make)` of every re-routed backend function and
    every `_exact_functions` entry; `make(original)` gives its replacement."""
    modules = _compat.backend_op_modules()
    for module_name, names in OP_FUNCTIONS.items():
        for name in names:
            yield modules[module_name], name, ("op", module_name, name), functools.partial(_make_op_dispatcher, name)
    for owner, name in _exact_functions():
        yield owner, name, ("exact", id(owner), name), _make_exact


@functools.lru_cache(maxsize=None)
def _exact_functions():
    """`(owner, name)` of each Keras activation that is not a site but may
    compute with functions that are, kept exact as a whole: the backend
    functions named like a `keras.activations` function (`log_sigmoid`,
    `celu`, `glu`, ...: which call re-routed ones depends on the backend),
    and the `static_call` of the operation classes of Keras's activations
    module (`keras.activations.mish(x)` is `Mish.static_call(x)`, which
    calls the backend `softplus`; not `ReLU`'s, whose calls are relu sites).
    The classes are a Keras internal: if Keras moves them, none is found and
    the op sites tests fail. Searched once: installing keeps what it finds."""
    nn = _compat.backend_op_modules()["nn"]
    found = [(nn, name) for name in sorted(dir(keras.activations))
             if not name.startswith("_") and name not in _SITE_OPS and callable(getattr(nn, name, None))]
    for value in list(vars(inspect.getmodule(keras.activations.mish)).values()):
        if isinstance(value, type) and isinstance(value.__dict__.get("static_call"), staticmethod):
            if value.__name__.lower() not in _SITE_OPS:
                found.append((value, "static_call"))
    return tuple(found)


def install_ops():
    """Puts dispatchers on the backend activation functions, and the exact
    guards of `_exact_functions` (counted)."""
    with _lock:
        for owner, name, key, make in _each_op():
            record = _installed.get(key)
            if record is None:
                # The attribute itself (a class's staticmethod object), so
                # that uninstalling puts back exactly what was there.
                original = owner.__dict__[name]
                function = original.__func__ if isinstance(original, staticmethod) else original
                replacement = make(function)
                if isinstance(original, staticmethod):
                    replacement = staticmethod(replacement)
                record = _installed[key] = [original, replacement, 0, owner]
                setattr(owner, name, replacement)
            record[2] += 1


def uninstall_ops():
    """Undoes one `install_ops`; the last one restores Keras's functions."""
    with _lock:
        for owner, name, key, _ in _each_op():
            record = _installed[key]
            record[2] -= 1
            if record[2] == 0:
                del _installed[key]
                setattr(owner, name, record[0])


def op_original(op):
    """The backend function `op` as Keras defines it (ignoring dispatch)."""
    modules = _compat.backend_op_modules()
    for module_name, names in OP_FUNCTIONS.items():
        if op in names:
            fn = getattr(modules[module_name], op)
            return getattr(fn, "_linbp_original", fn)
    raise KeyError(op)


def push(key, fn):
    """Runs `fn` at the site `key` in this thread, until the matching `pop`."""
    state().replacements.setdefault(key, []).append(fn)


def pop(key):
    """Undoes this thread's last `push(key, ...)`."""
    replacements = state().replacements
    replacements[key].pop()
    if not replacements[key]:
        del replacements[key]
