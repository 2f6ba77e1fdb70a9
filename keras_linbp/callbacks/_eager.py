"""The callbacks' probes on the JAX and PyTorch backends.

On TensorFlow a probe is one traced `tf.function` (see `saturation.py`,
`gradient_flow.py`). On JAX and PyTorch it runs eagerly, with the same site
swap (`keras_linbp.sites.swap_sites`):

- `forward`: one inference forward recording each site's input (and the
  extra arguments it was called with);
- `gradient_targets`: from one such forward, the kernels and site inputs
  that `loss_gradients` differentiates with respect to;
- `loss_gradients`: the compiled loss's gradient with respect to chosen
  kernels and to chosen sites' inputs, under a given replacement of the
  sites (the exact rule, or the linear rule as training applies it) --
  `jax.grad` through the model's call in a `keras.StatelessScope`, or
  `torch.autograd.grad`. The gradient with respect to a site's input `a`
  is taken through a zero added to `a` at that site only (at its last call
  in the forward, the one `forward` records): the gradient that flows
  back through that activation alone, as the TensorFlow path's own copy
  of `a` gives.

Both run the model's call inside a `keras.StatelessScope`, so that the
probe changes no variable (a compiled loss's trackers, for one).
"""

import contextlib

import keras

from keras_linbp import _compat
from keras_linbp import sites as linbp_sites
from keras_linbp.callbacks import _sites


def backend():
    return keras.backend.backend()


def to_numpy(value):
    return keras.ops.convert_to_numpy(value)


@contextlib.contextmanager
def no_gradients():
    """No autodiff graph for an inference pass (PyTorch); nothing elsewhere."""
    if backend() == "torch":
        import torch

        with torch.no_grad():
            yield
    else:
        yield


def _in_loop(site, inputs):
    """Whether a site's call runs inside a loop over time steps, where one
    recorded input would stand for the whole sequence: an RNN cell (its
    layer has a `state_size`), or on JAX any call on an abstract value (a
    `lax.scan` body) during the eager forward."""
    if hasattr(site.layer, "state_size"):
        return True
    if backend() == "jax":
        import jax

        return isinstance(inputs, jax.core.Tracer)
    return False


class EagerRecorder:
    """Makes `swap_sites` replacements that keep each site's input in an
    eager forward (the `SiteRecorder` of the JAX and PyTorch backends).

    `inputs[key]` is the input of the site's last call, `extra_args[key]`
    the arguments that came with it, `calls[key]` how many calls there
    were; sites inside a loop (RNN cells) are not recorded and are listed
    in `skipped`.
    """

    def __init__(self):
        self.inputs = {}
        self.extra_args = {}
        self.calls = {}
        self.skipped = []
        self._nested = set()

    def start(self):
        self.inputs.clear()
        self.extra_args.clear()
        self.calls.clear()
        self._nested = set()

    def __call__(self, site, original):
        key = _sites.site_key(site)

        def record(inputs, *args, **kwargs):
            if key in self._nested or _in_loop(site, inputs):
                self._nested.add(key)
                self.inputs.pop(key, None)
                self.extra_args.pop(key, None)
                self.calls.pop(key, None)
                if all(_sites.site_key(s) != key for s in self.skipped):
                    self.skipped.append(site)
            else:
                self.inputs[key] = inputs
                self.extra_args[key] = (args, kwargs)
                self.calls[key] = self.calls.get(key, 0) + 1
            return original(inputs, *args, **kwargs)

        return record


def forward(model, sites, recorder, x):
    """One inference forward of `model` on `x` with `sites` recorded."""
    recorder.start()
    with no_gradients(), keras.StatelessScope():
        with linbp_sites.swap_sites(sites, recorder):
            model(x, training=False)


def input_spec(value):
    """`(shape, dtype, device)` of a recorded input: what its zero needs."""
    return tuple(value.shape), value.dtype, getattr(value, "device", None)


def gradient_targets(model, sites, recorder, x, logged):
    """`(kernels, site_inputs)` for `loss_gradients`, from one recording
    forward on `x` (the inputs' shapes are those of every probe).

    Args:
        model: the model.
        sites: the sites swapped (all of the model's).
        recorder: an `EagerRecorder` (cleared again afterwards: no
            activation stays alive between probes).
        x: the probe inputs.
        logged: `[(site key, stem, kernel or None)]`: a kernel's gradient,
            or (None) the site input's.
    """
    forward(model, sites, recorder, x)
    kernels = {}
    site_inputs = {}
    for key, _, kernel in logged:
        if kernel is not None:
            kernels[key] = kernel
        elif key in recorder.inputs:
            site_inputs[key] = (input_spec(recorder.inputs[key]), recorder.calls[key])
    recorder.start()
    return kernels, site_inputs


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


def _loss(model, sites, make_replacement, x, y, sample_weight):
    with linbp_sites.swap_sites(sites, make_replacement):
        y_pred = model(x, training=False)
    return _compat.compute_loss(
        model, x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
    )


def loss_gradients(model, sites, make_replacement, x, y, sample_weight, kernels,
                   site_inputs):
    """The compiled loss's gradients on `(x, y, sample_weight)`.

    Args:
        model: the model (forward with `training=False`).
        sites: the sites swapped (all of the model's).
        make_replacement: `(site, original) -> function` for `swap_sites`.
        kernels: `{name: keras.Variable}`: gradients with respect to these.
        site_inputs: `{site key: (input_spec(recorded input), its call
            number)}`: gradients with respect to these sites' inputs.

    Returns:
        `{name or site key: numpy gradient}`; zero where the loss does not
        reach.
    """
    names = list(kernels)
    variables = [kernels[name] for name in names]
    calls = {key: call for key, (_, call) in site_inputs.items()}
    if backend() == "jax":
        import jax
        import jax.numpy as jnp

        # Lists, not dicts keyed by site: JAX sorts a dict's keys.
        input_keys = list(site_inputs)
        zeros = [
            jnp.zeros(site_inputs[key][0][0], site_inputs[key][0][1])
            for key in input_keys
        ]

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
        gradients = dict(zip(names, kernel_grads))
        gradients.update(zip(input_keys, input_grads))
    elif backend() == "torch":
        import torch

        zeros = {
            key: torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)
            for key, ((shape, dtype, device), _) in site_inputs.items()
        }
        with torch.enable_grad(), keras.StatelessScope():
            loss = _loss(
                model, sites, _perturbing(make_replacement, calls, zeros),
                x, y, sample_weight,
            )
        targets = [variable.value for variable in variables] + list(zeros.values())
        grads = torch.autograd.grad(loss, targets, allow_unused=True) if targets else []
        grads = [
            torch.zeros_like(target) if grad is None else grad
            for target, grad in zip(targets, grads)
        ]
        gradients = dict(zip(names + list(zeros), grads))
    else:  # pragma: no cover (refused when the callback is made)
        raise NotImplementedError(backend())
    return {key: to_numpy(value) for key, value in gradients.items()}
