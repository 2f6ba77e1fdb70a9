"""An op site is a call the user makes in a layer's `call()`, never one
inside a Keras activation that keeps exact backprop.

`keras.activations.mish(x)` computes `x * tanh(softplus(x))` with Keras's
backend `softplus`, the same function a user's own `keras.ops.softplus(x)`
reaches; `log_sigmoid`, `celu`, `glu`, `squareplus`, ... are built from
backend functions too on some backend. Called in a custom layer's `call()`,
each must train with its exact derivative under every rule, while the
user's direct `keras.ops.softplus(x)` beside it is still a site. References
are independent: the same layers in a plain `keras.Model`, Keras's autodiff,
the user's softplus written as `a * q + stop_gradient(softplus(a) - a * q)`
(input gradient `q`: 1 for the linear rule, numpy's table level for the
few-bit rule).
"""

import functools

import keras
import numpy as np
import pytest

import keras_linbp
from keras_linbp import tables

pytestmark = pytest.mark.all_backends

# Keras activations that are not sites themselves (the table knows none of
# them) and may compute with backend functions that are; those an older
# Keras lacks are left out.
_PARAMS = {"threshold": {"threshold": 0.1, "default_value": -0.5}}
EXACT_ACTIVATIONS = {
    name: functools.partial(getattr(keras.activations, name), **_PARAMS.get(name, {}))
    for name in (
        "mish", "log_sigmoid", "celu", "glu", "squareplus", "sparse_plus", "sparse_sigmoid", "hard_shrink",
        "soft_shrink", "tanh_shrink", "threshold", "log_softmax", "sparsemax",
    )
    if hasattr(keras.activations, name)
}
sg = keras.ops.stop_gradient


class KerasActivations(keras.layers.Layer):
    """Concatenates Keras activations of its input, each called in
    `call()`, and (`user_softplus`) the user's own `keras.ops.softplus`."""

    def __init__(self, names, user_softplus=None, **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)
        self.user_softplus = user_softplus

    def call(self, x):
        outputs = [EXACT_ACTIVATIONS[name](x) for name in self.names]
        if self.user_softplus is not None:
            outputs.append(self.user_softplus(x))
        return keras.ops.concatenate(outputs, axis=-1)


def network(names, user_softplus=None):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, name="hidden")(inputs)
    mixed = KerasActivations(names, user_softplus, name="act")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(mixed))


@pytest.mark.parametrize("name", EXACT_ACTIVATIONS)
def test_keras_activation_called_in_call_is_not_a_site(name):
    model = network([name])
    assert keras_linbp.sites.find_activation_sites(model) == []


def test_user_softplus_beside_mish_is_the_only_site():
    model = network(["mish"], user_softplus=keras.ops.softplus)
    sites = keras_linbp.sites.find_activation_sites(model)
    assert [(site.path, site.kind, site.attribute) for site in sites] == [("act:softplus", "op", "softplus")]


def softplus_with_input_gradient(factor):
    """softplus, input gradient `factor(a)` (a stop-gradient tensor)."""

    def g(a):
        q = sg(factor(a))
        return a * q + sg(keras.ops.softplus(a) - a * q)

    return g


def few_bit_factor(bits):
    bounds, levels = tables.few_bit_table("softplus", bits)

    def factor(a):
        q = keras.ops.full_like(a, levels[0])
        for bound, step in zip(bounds, np.diff(levels)):
            q = q + float(step) * keras.ops.cast(keras.ops.greater_equal(a, float(bound)), a.dtype)
        return q

    return factor


def trained_weights(model, x, y):
    model.compile(keras.optimizers.SGD(1.0), "mse")
    model.train_on_batch(x, y)
    return model.get_weights()


@pytest.mark.parametrize("backprop", ["linear", "few_bit"])
def test_keras_activations_train_exactly_and_user_softplus_with_the_rule(backprop):
    names = list(EXACT_ACTIVATIONS)
    plain = network(names, user_softplus=keras.ops.softplus)
    if backprop == "linear":
        factor = keras.ops.ones_like
        model = keras_linbp.LinearBackpropModel.from_model(plain, backprop="linear", slope=1.0)
    else:
        factor = few_bit_factor(2)
        model = keras_linbp.LinearBackpropModel.from_model(plain, backprop="few_bit", bits=2)
    reference = network(names, user_softplus=softplus_with_input_gradient(factor))
    exact = network(names, user_softplus=keras.ops.softplus)
    weights = plain.get_weights()
    for other in (reference, exact):
        other.set_weights(weights)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    got = trained_weights(model, x, y)
    want = trained_weights(reference, x, y)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # The user's softplus did train with the rule: exact backprop differs.
    exact_weights = trained_weights(exact, x, y)
    assert max(np.abs(a - b).max() for a, b in zip(want, exact_weights)) > 1e-4
    assert [site.path for site in keras_linbp.sites.find_activation_sites(model)] == ["act:softplus"]


# Keras's names of the ops some activations reach.
_OWN_OP = {"swish": "silu", "hard_swish": "hard_silu"}


@pytest.mark.parametrize(
    "name", [n for n in dir(keras.activations) if not n.startswith("_") and n not in ("get", "serialize", "deserialize")]
)
def test_each_keras_activation_is_at_most_one_site_of_its_own_op(name):
    # Every Keras activation, present and future: called in `call()` it is
    # one site of its own op (gelu, swish -> silu, ...) or none (mish,
    # log_sigmoid, ...); never a site of another op it is computed with.
    function = functools.partial(getattr(keras.activations, name), **_PARAMS.get(name, {}))

    class Calls(keras.layers.Layer):
        def call(self, x):
            return function(x)

    model = keras.Sequential([keras.Input((4,)), Calls(name="act")])
    ops = [site.attribute for site in keras_linbp.sites.find_activation_sites(model)]
    assert ops in ([], [_OWN_OP.get(name, name)])
