"""The probes' autodiff: the one step that differs by backend.

Everything else a probe computes is written once in `keras.ops`
(`_statistics`); the derivatives are taken here:

- `activation_and_derivative`: `f(a)` and the local derivative `|f'(a)|`
  of a site's plain activation;
- `traced_loss_gradients` (TensorFlow, inside the traced probe): the
  compiled loss's gradient by `tf.GradientTape`, with respect to chosen
  kernels and to the recorded inputs of chosen sites (each site's own copy
  of `a`, `SiteRecorder(isolate=True)`);
- `eager_loss_gradients` (JAX, PyTorch): the same gradients by `jax.grad`
  through the model's call in a `keras.StatelessScope`, or by
  `torch.autograd.grad`. The gradient with respect to a site's input `a`
  is taken through a zero added to `a` at that site only (at its last call
  in the forward, the one `_eager.forward` records): the gradient that
  flows back through that activation alone, as the TensorFlow path's own
  copy of `a` gives.

Each returns backend tensors; what the statistics make of them is
converted to numpy only where `tf.summary` writes it.
"""

import keras

from keras_linbp import _backend
from keras_linbp import _compat
from keras_linbp import sites as linbp_sites
from keras_linbp.callbacks import _sites
from keras_linbp.callbacks._tensorflow import tf


def activation_and_derivative(f, a):
    """`(f(a), |f'(a)|)` for an elementwise `f`, by the backend's autodiff
    of `f` from one forward (`_backend.value_and_derivative`; inside the
    traced TensorFlow probe a tape, elsewhere eagerly)."""
    h, d = _backend.value_and_derivative(f, a)
    return h, keras.ops.abs(d)


def _loss(model, sites, make_replacement, x, y, sample_weight):
    with linbp_sites.swap_sites(sites, make_replacement):
        y_pred = model(x, training=False)
    return _compat.compute_loss(
        model, x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
    )


def _zero_for_missing(targets, gradients, zeros_like):
    # No path from the loss (stop_gradient, an unused output, a sign under
    # exact backprop): the gradient is zero.
    return {
        key: zeros_like(targets[key]) if gradients[key] is None else gradients[key]
        for key in targets
    }


def traced_loss_gradients(model, sites, recorder, make_replacement, x, y, sample_weight,
                          kernels, input_keys):
    """The compiled loss's gradients in the traced TensorFlow probe.

    Args:
        model: the model (forward with `training=False`).
        sites: the sites swapped (all of the model's).
        recorder: a `SiteRecorder(isolate=True)`, started here with
            `make_replacement` (`(site, original) -> function`).
        kernels: `{name: keras.Variable}`: gradients with respect to these.
        input_keys: site keys: gradients with respect to these sites'
            recorded inputs (those the forward reached outside a loop).

    Returns:
        `{name or site key: gradient tensor}`; zero where the loss does not
        reach.
    """
    with tf.GradientTape() as tape:
        # Kernel-less sites report d loss / d a: the tape watches each
        # recorded `a`, even one that depends on no variable (a first layer).
        recorder.start(replace=make_replacement, on_input=tape.watch)
        loss = _loss(model, sites, recorder, x, y, sample_weight)
        # Keras divides the loss by the replica count under a
        # tf.distribute strategy; the probe runs on the whole batch.
        loss *= tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)
    # The backend variables: a keras.Variable's string dtype breaks
    # tape.gradient's zeros for unconnected targets.
    targets = {key: kernel.value for key, kernel in kernels.items()}
    targets.update({key: recorder.inputs[key] for key in input_keys if key in recorder.inputs})
    return _zero_for_missing(targets, tape.gradient(loss, targets), tf.zeros_like)


def _perturbing(make_replacement, perturbations, zeros):
    """`swap_sites` replacements: `make_replacement`'s function, with
    `zeros[key]` added to the site's input at its `perturbations[key]`-th
    call."""

    counts = {}

    def make(site, original):
        function = make_replacement(site, original)
        key = _sites.site_key(site)
        if key not in zeros:
            return function
        last_call = perturbations[key]

        def perturbed(inputs, *args, **kwargs):
            counts[key] = counts.get(key, 0) + 1
            if counts[key] == last_call:
                inputs = inputs + zeros[key]
            return function(inputs, *args, **kwargs)

        return perturbed

    return make


def eager_loss_gradients(model, sites, make_replacement, x, y, sample_weight, kernels,
                         site_inputs):
    """The compiled loss's gradients on `(x, y, sample_weight)`, on JAX and
    PyTorch.

    Args:
        model, sites, make_replacement, kernels: as for
            `traced_loss_gradients`.
        site_inputs: `{site key: (_eager.input_spec(recorded input), its
            call number)}` (`_eager.gradient_targets`): gradients with
            respect to these sites' inputs.

    Returns:
        `{name or site key: gradient tensor}`; zero where the loss does not
        reach.
    """
    names = list(kernels)
    variables = [kernels[name] for name in names]
    calls = {key: call for key, (_, call) in site_inputs.items()}
    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        # Lists, not dicts keyed by site: JAX sorts a dict's keys.
        input_keys = list(site_inputs)
        zeros = [jnp.zeros(*site_inputs[key][0][:2]) for key in input_keys]

        def loss_of(values, zeros):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return _loss(
                    model, sites,
                    _perturbing(make_replacement, calls, dict(zip(input_keys, zeros))),
                    x, y, sample_weight,
                )

        kernel_grads, input_grads = jax.grad(loss_of, argnums=(0, 1))(
            [variable.value for variable in variables], zeros
        )
        return {**dict(zip(names, kernel_grads)), **dict(zip(input_keys, input_grads))}
    if keras.backend.backend() == "torch":
        import torch

        zeros = {
            key: torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)
            for key, ((shape, dtype, device), _) in site_inputs.items()
        }
        with torch.enable_grad(), keras.StatelessScope():
            loss = _loss(
                model, sites, _perturbing(make_replacement, calls, zeros), x, y, sample_weight
            )
        targets = {**dict(zip(names, [variable.value for variable in variables])), **zeros}
        grads = (
            torch.autograd.grad(loss, list(targets.values()), allow_unused=True)
            if targets else []
        )
        return _zero_for_missing(targets, dict(zip(targets, grads)), torch.zeros_like)
    raise NotImplementedError(keras.backend.backend())  # pragma: no cover
