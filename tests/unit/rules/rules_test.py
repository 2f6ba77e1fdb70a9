"""Every registered backward rule, through the same checks (Larq style):
its config round-trips, a rule function carrying it has the gradient of an
independent numpy reference, and a `.keras` file keeps it."""

import dataclasses

import keras
import numpy as np
import pytest

import keras_linbp
from keras_linbp import _backend
from keras_linbp import rules
from keras_linbp import tables

pytestmark = pytest.mark.all_backends

A = np.linspace(-3.0, 3.0, 25).astype("float32")


def _tanh_derivative(a):
    return 1.0 - np.tanh(a) ** 2


# rule -> the numpy factor its backward multiplies the upstream gradient by
# at `a`, for the forward tanh.
CASES = {
    "linear": (rules.LinearRule(0.25), lambda a: np.full_like(a, 0.25)),
    "exact": (rules.ExactRule(), _tanh_derivative),
    "straight_through": (rules.StraightThroughRule(clip=1.5), lambda a: (np.abs(a) <= 1.5).astype("float32")),
    "few_bit": (
        rules.FewBitRule(bits=2),
        lambda a: tables.few_bit_table("tanh", 2)[1][np.searchsorted(tables.few_bit_table("tanh", 2)[0], a, side="right")],
    ),
    # Exact, read off the output: tanh' = 1 - tanh^2.
    "from_output": (rules.FromOutputRule(), _tanh_derivative),
}


def test_every_registered_rule_has_a_case():
    assert set(CASES) == set(rules._registry._REGISTRY)
    assert rules.MODES == ("linear", "exact", "few_bit", "from_output")


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trips(name):
    rule, _ = CASES[name]
    completed = rule.for_forward(keras.activations.tanh)
    assert rules.deserialize(rules.serialize(completed)) == completed
    assert rules.get(name) is type(rule)
    assert dataclasses.is_dataclass(rule) and hash(completed) == hash(rules.deserialize(rules.serialize(completed)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_function_gradient_equals_numpy(name):
    rule, factor = CASES[name]
    fn = rule.wrap(keras.activations.tanh)
    x = keras.ops.convert_to_tensor(A)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fn(x)), np.tanh(A), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_backend.elementwise_derivative(fn, x), factor(A), rtol=1e-5, atol=1e-6)
    if name != "exact":
        assert rules.rule_of(fn) == rule.for_forward(keras.activations.tanh)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras_linbp.few_bit("gelu", bits=2),
        lambda: keras_linbp.linear_backprop("tanh", slope=0.25),
        lambda: keras_linbp.straight_through("sign", clip=2.0),
        lambda: keras_linbp.few_bit(keras.activations.silu, bits=1),
        lambda: keras_linbp.from_output("gelu"),
    ],
    ids=["few_bit_gelu", "linear_tanh", "ste_sign", "few_bit_silu", "from_output_gelu"],
)
def test_rule_functions_survive_keras_saving(tmp_path, make):
    # 0.3: saved without a word, then load_model failed ("Could not locate
    # function 'few_bit_gelu'"), and the bits were not saved.
    keras.utils.set_random_seed(0)
    fn = make()
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation=fn, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(outputs))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.get_layer("hidden").activation
    assert rules.rule_of(restored) == rules.rule_of(fn)
    assert restored.forward is fn.forward
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6)
    a = keras.ops.convert_to_tensor(np.linspace(-3, 3, 13).astype("float32"))
    np.testing.assert_allclose(
        _backend.elementwise_derivative(restored, a), _backend.elementwise_derivative(fn, a), rtol=1e-6
    )


def test_a_rule_function_reads_as_it_did():
    fn = keras_linbp.few_bit("gelu", bits=1)
    assert fn.__name__ == "few_bit_gelu" and fn.bits == 1 and fn.table == "gelu"
    assert fn.forward is keras.activations.gelu
    np.testing.assert_array_equal(fn.bounds, tables.few_bit_table("gelu", 1)[0])
    assert keras_linbp.linear_backprop("tanh", 0.5).slope == 0.5
    assert keras_linbp.straight_through("sign").clip == 1.0
    with pytest.raises(AttributeError):
        fn.no_such_thing


def test_every_rule_layer_and_linbp_function_carries_its_rule():
    assert rules.rule_of(keras_linbp.activations.linbp_tanh) == rules.LinearRule(1.0)
    assert rules.rule_of(keras_linbp.layers.FewBit("gelu", bits=3)) == rules.FewBitRule(3, "gelu")
    assert rules.rule_of(keras_linbp.layers.LinBPTanh(slope=0.5)) == rules.LinearRule(0.5)
    assert rules.rule_of(keras_linbp.binary.BinarySign("ste")) == rules.StraightThroughRule(1.0)
    assert rules.rule_of(keras.activations.tanh) is None


def test_few_bit_of_a_name_without_a_table_says_so():
    # 0.3: few_bit("mish") said "Unknown activation" and listed linear
    # backprop's names; few_bit(keras.activations.mish) said "no few-bit table".
    for activation in ("mish", keras.activations.mish):
        with pytest.raises(ValueError, match="No few-bit table for activation 'mish'"):
            keras_linbp.few_bit(activation)
    with pytest.raises(ValueError, match="No few-bit table for activation 'nope'"):
        keras_linbp.few_bit("nope")
