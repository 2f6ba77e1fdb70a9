"""The one primitive: `forward(x)` with a custom gradient w.r.t. `x`.

`apply_rule(forward, x, args, kwargs, rule)` returns `forward(x, *args,
**kwargs)` whose gradient w.r.t. `x` is `rule.input_gradient(g, residual)`,
keeping for the backward pass only `rule.residual(x)` (nothing for the
linear rule; a boolean mask for the straight-through estimator; bit-packed
uint8 codes for the few-bit rule). Variables
the forward function reads (a learned slope, PReLU's alpha) keep their
ordinary gradient on every backend.

A rule is a small object in the style of optax's transforms: a frozen
dataclass (hashable by value: the JAX path builds one `custom_vjp` per
distinct rule) with two methods written in `keras.ops`,

- `residual(x)`: what the backward pass keeps of the forward input (None
  for nothing); a rule with `keeps_output = True` is given the output too,
  `residual(x, y)`, and may keep `y` itself (the tensor the next layer
  keeps anyway, so one buffer serves both), or a tuple of tensors;
- `input_gradient(upstream, residual)`: the gradient w.r.t. `x`.

`apply_rule` knows nothing else of a rule, so a new rule is a new class
here and no change to `apply_rule` or the backends.

- TensorFlow: `tf.custom_gradient` around the forward, a `GradientTape`
  inside it for the variables it reads (0.1's path, unchanged).
- JAX: the forward runs on `stop_gradient(x)` (so parameters read inside it
  are differentiated by JAX as usual and `x` gets nothing from it), then a
  `jax.custom_vjp` identity on `(x, y)` gives `x` the rule's gradient and
  passes `g` to `y`. It keeps `rule.residual(x)` only.
- PyTorch: the same split with a native `torch.autograd.Function` that
  saves only the residual (`keras.ops.custom_gradient` would save `x`).

Importing this module imports no backend framework; each backend's code
is built at first use.

Example:

>>> import keras, numpy as np
>>> from keras_linbp import _backend
>>> from keras_linbp.rules import StraightThroughRule
>>> rule = StraightThroughRule(clip=1.0)
>>> x = keras.ops.convert_to_tensor(np.array([-2.0, 0.5, 3.0], "float32"))
>>> fn = lambda a: _backend.apply_rule(keras.ops.tanh, a, (), {}, rule)
>>> print(_backend.elementwise_derivative(fn, x))
[0. 1. 0.]
"""

import contextlib
import functools

import keras

__all__ = ["apply_rule", "backend_name", "residual_of"]


def backend_name():
    return keras.backend.backend()


def residual_of(rule, x, y):
    """What `rule`'s backward keeps of one call: `rule.residual(x)`, or
    `rule.residual(x, y)` for a rule that reads the output."""
    if getattr(rule, "keeps_output", False):
        return rule.residual(x, y)
    return rule.residual(x)


def apply_rule(forward, x, args, kwargs, rule):
    """`forward(x, *args, **kwargs)` with `rule`'s gradient w.r.t. `x`."""
    name = backend_name()
    if name == "tensorflow":
        return _tensorflow(forward, x, args, kwargs, rule)
    if name == "jax":
        return _jax(forward, x, args, kwargs, rule)
    if name == "torch":
        return _torch_outside_compile()(forward, x, args, kwargs, rule)
    raise NotImplementedError(
        f"keras_linbp supports the tensorflow, jax and torch Keras backends; "
        f"KERAS_BACKEND is {name!r}."
    )


# --- TensorFlow ---------------------------------------------------------------


def _tensorflow(forward, x, args, kwargs, rule):
    import tensorflow as tf

    @tf.custom_gradient
    def _apply(a):
        with tf.GradientTape(watch_accessed_variables=True) as variable_tape:
            y = forward(a, *args, **kwargs)
        residual = residual_of(rule, a, y)

        def input_gradient(upstream):
            return rule.input_gradient(upstream, residual)

        if not variable_tape.watched_variables():
            # The common case. Neither `y` nor the tape is captured, and the
            # linear rule's closure does not hold `a` either: no forward
            # tensor is kept alive for the backward pass.
            return y, input_gradient

        def grad_with_variables(upstream, variables=None):
            variable_grads = variable_tape.gradient(y, variables, output_gradients=upstream)
            return input_gradient(upstream), variable_grads

        return y, grad_with_variables

    return _apply(x)


def read_variable(variable):
    """A variable's current value as a tensor (a tensor as it is).

    TensorFlow: a tensor of the graph being traced (or an eager tensor).
    JAX / PyTorch: `variable.value`, which inside Keras's stateless
    training step (JAX) is the value the step was given, not the stored one.
    """
    if backend_name() == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(variable)
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


def scale_gradient(x, scale):
    """`x` forward; backward, the upstream gradient times `scale`, a
    tensor (or, on TensorFlow, a variable read when the gradient is
    computed), so a traced step follows a new value without retracing.
    `scale` itself gets no gradient."""
    name = backend_name()
    if name == "tensorflow":
        return _tensorflow_scale_gradient(x, scale)
    # A number (or numpy scalar) becomes a tensor on the default device.
    scale = keras.ops.convert_to_tensor(scale, dtype="float32")
    if name == "jax":
        return _jax_scale_gradient()(x, scale)
    return _torch_scale_gradient().apply(x, scale)


def _tensorflow_scale_gradient(x, scale):
    import tensorflow as tf

    @tf.custom_gradient
    def identity(a):
        def grad(upstream):
            return upstream * tf.cast(scale, upstream.dtype)

        return tf.identity(a), grad

    return identity(x)


# --- JAX --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _jax_rule_function(rule):
    # Cached per rule value: a jitted step reuses one custom_vjp per rule.
    import jax

    @jax.custom_vjp
    def identity(x, y):
        return y

    def fwd(x, y):
        return y, residual_of(rule, x, y)

    def bwd(residual, upstream):
        return rule.input_gradient(upstream, residual), upstream

    identity.defvjp(fwd, bwd)
    return identity


def _jax(forward, x, args, kwargs, rule):
    import jax

    y = forward(jax.lax.stop_gradient(x), *args, **kwargs)
    return _jax_rule_function(rule)(x, y)


@functools.lru_cache(maxsize=None)
def _jax_scale_gradient():
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def identity(x, scale):
        return x

    def fwd(x, scale):
        return x, scale

    def bwd(scale, upstream):
        return upstream * scale.astype(upstream.dtype), jnp.zeros_like(scale)

    identity.defvjp(fwd, bwd)
    return identity


def eager_scope():
    """A context in which a forward call runs op by op, loops included.

    JAX: `jax.disable_jit()`, so an RNN's `lax.scan` runs as a Python loop
    and a function recording its cell's pre-activations gets concrete
    arrays, not tracers of the scan body (which must not leave it).
    TensorFlow and PyTorch already run loops eagerly outside a trace.
    """
    if backend_name() == "jax":
        import jax

        return jax.disable_jit()
    return contextlib.nullcontext()


# --- PyTorch ------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _torch_function():
    import torch

    class RuleFunction(torch.autograd.Function):
        """Identity on `y`; `x` gets the rule's gradient, `y` gets `g`."""

        @staticmethod
        def forward(ctx, x, y, rule, residual):
            ctx.rule = rule
            ctx.y_needs_grad = y.requires_grad
            # None, a tensor or a tuple of tensors (None inside for nothing).
            ctx.shape = "tuple" if isinstance(residual, tuple) else residual is not None
            parts = residual if isinstance(residual, tuple) else (residual,)
            ctx.present = [part is not None for part in parts]
            ctx.save_for_backward(*[part for part in parts if part is not None])
            return y.view_as(y)

        @staticmethod
        def backward(ctx, upstream):
            saved = iter(ctx.saved_tensors)
            parts = tuple(next(saved) if present else None for present in ctx.present)
            residual = parts if ctx.shape == "tuple" else (parts[0] if ctx.shape else None)
            grad_x = ctx.rule.input_gradient(upstream, residual)
            grad_y = upstream if ctx.y_needs_grad else None
            return grad_x, grad_y, None, None

    return RuleFunction


@functools.lru_cache(maxsize=None)
def _torch_scale_gradient():
    import torch

    class ScaleGradient(torch.autograd.Function):
        """Identity on `x`; backward, `g * scale` (`scale` gets nothing)."""

        @staticmethod
        def forward(ctx, x, scale):
            ctx.save_for_backward(scale)
            return x.view_as(x)

        @staticmethod
        def backward(ctx, upstream):
            (scale,) = ctx.saved_tensors
            return upstream * scale.to(device=upstream.device, dtype=upstream.dtype), None

    return ScaleGradient


@functools.lru_cache(maxsize=None)
def _torch_outside_compile():
    # Under torch.compile (jit_compile=True) the rule runs eagerly: dynamo
    # cannot trace the `__dict__` edit `_torch` makes on its output.
    import torch

    return torch.compiler.disable(_torch)


def _torch(forward, x, args, kwargs, rule):
    # The forward sees a detached `x`: parameters it reads build their own
    # graph (and get their ordinary gradient through `y`); with none, no
    # graph is built and nothing is saved.
    y = forward(x.detach(), *args, **kwargs)
    # Keras's sigmoid/softmax cache their input on the output
    # (`y._keras_logits`, for a stable crossentropy). The returned view keeps
    # `y` as its base, so the cache would keep `x` alive until the view dies:
    # the memory the linear rule exists to free. The view itself has no
    # cache, so losses see the linear site's output, as on TensorFlow.
    y.__dict__.pop("_keras_logits", None)
    residual = residual_of(rule, x.detach(), y)
    return _torch_function().apply(x, y, rule, residual)


# --- local derivatives (calibration, inspection) --------------------------------


def elementwise_derivative(fn, a, args=(), kwargs=None):
    """`d/da sum(fn(a, *args, **kwargs))` as a numpy array: `f'(a)` per
    element for an elementwise `fn` (exact autodiff of the plain function)."""
    import numpy as np

    _, d = value_and_derivative(fn, a, args, kwargs)
    return np.asarray(keras.ops.convert_to_numpy(d), np.float64)


def value_and_derivative(fn, a, args=(), kwargs=None):
    """`(fn(a, *args, **kwargs), d/da sum(fn(a, ...)))` as backend tensors,
    from one forward (on TensorFlow also inside a traced function); the
    derivative is zero where `fn`'s output does not depend on `a`."""
    kwargs = kwargs or {}
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        a = tf.convert_to_tensor(a)
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = fn(a, *args, **kwargs)
        return y, tape.gradient(y, a, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    if name == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.asarray(a)
        y, vjp = jax.vjp(lambda t: fn(t, *args, **kwargs), a)
        (d,) = vjp(jnp.ones_like(y))
        return y, d
    if name == "torch":
        import torch

        a = a.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = fn(a, *args, **kwargs)
            (d,) = torch.autograd.grad(y, a, torch.ones_like(y), allow_unused=True)
        return y.detach(), torch.zeros_like(a) if d is None else d
    raise NotImplementedError(name)  # pragma: no cover
