"""`LinearBackprop` and its named variants.

The layer contract is Keras's own: `keras.src.testing.TestCase.run_layer_test`
(build, symbolic and eager call, config and serialization round trip,
training inside a compiled `fit`, mixed precision). Forward values are
compared with `keras.layers.Activation`, gradients with numpy
`slope * upstream`.
"""

import json

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized
from keras.src import testing

import keras_linbp
from keras_linbp import activations
from keras_linbp import layers

RNG = np.random.default_rng(3)

# (class, init kwargs, run_training_check). A compiled `fit` costs about a
# second; training is checked for a representative few.
CONTRACT_CASES = [
    ("LinearBackprop_tanh", layers.LinearBackprop, {"activation": "tanh"}, True),
    ("LinearBackprop_sign_slope", layers.LinearBackprop, {"activation": "sign", "slope": 0.5}, False),
    ("LinearBackprop_keras_fn", layers.LinearBackprop, {"activation": keras.activations.mish}, False),
    ("LinearBackprop_swish_alias", layers.LinearBackprop, {"activation": "swish", "slope": 2.0}, False),
] + [
    (cls.__name__, cls, {"slope": 0.25} if cls is layers.LinBPSign else {}, cls is layers.LinBPSign)
    for cls in layers.NAMED_LAYERS
]


class LayerContractTest(testing.TestCase):
    @parameterized.named_parameters(*CONTRACT_CASES)
    def test_run_layer_test(self, layer_cls, init_kwargs, run_training_check):
        self.run_layer_test(
            layer_cls,
            init_kwargs=init_kwargs,
            input_shape=(2, 3, 4),
            expected_output_shape=(2, 3, 4),
            expected_output_dtype="float32",
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
            expected_num_losses=0,
            supports_masking=True,
            run_training_check=run_training_check,
            run_mixed_precision_check=True,
            assert_built_after_instantiation=True,
        )


def test_every_named_layer_has_its_own_table_activation():
    names = [cls.activation_name for cls in layers.NAMED_LAYERS]
    assert len(set(names)) == len(names)
    for cls in layers.NAMED_LAYERS:
        assert cls.activation_name in activations.ACTIVATIONS
        assert cls.activation_name in cls.__doc__
        assert issubclass(cls, layers.LinearBackprop)
    required = {"LinBPSigmoid", "LinBPTanh", "LinBPReLU", "LinBPHardTanh", "LinBPSign"}
    assert required <= {cls.__name__ for cls in layers.NAMED_LAYERS}


def _layer_gradient(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    # The upstream gradient arrives in the output's dtype, as in a real
    # backward pass.
    return y, tape.gradient(y, x, output_gradients=tf.cast(upstream, y.dtype))


def test_forward_is_activation_layer_and_gradient_is_slope_times_upstream():
    cases = [(layers.LinearBackprop("elu", slope=0.5), "elu", 0.5), (layers.LinearBackprop("gelu"), "gelu", 1.0)]
    cases += [(cls(slope=-1.5), cls.activation_name, -1.5) for cls in layers.NAMED_LAYERS]
    x = RNG.normal(scale=3.0, size=(4, 5)).astype("float32")
    x[0, :3] = [0.0, 1.0, -1.0]
    upstream = RNG.normal(size=(4, 5)).astype("float32")
    for layer, activation, slope in cases:
        y, grad = _layer_gradient(layer, x, upstream)
        if activation == "sign":
            expected = np.where(x >= 0, 1.0, -1.0).astype("float32")
        else:
            expected = keras.layers.Activation(activation)(x).numpy()
        np.testing.assert_array_equal(y.numpy(), expected, err_msg=layer.name)
        np.testing.assert_array_equal(grad.numpy(), np.float32(slope) * upstream, err_msg=layer.name)


def test_layer_is_exported_at_package_level():
    assert keras_linbp.LinearBackprop is layers.LinearBackprop


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_layers_under_mixed_precision_policy(policy):
    keras.config.set_dtype_policy(policy)
    compute_dtype = policy.split("_")[1]
    x = RNG.normal(size=(8, 6)).astype("float32")
    upstream = RNG.normal(size=(8, 6)).astype("float32")
    for layer in (layers.LinearBackprop("sigmoid", slope=0.5), layers.LinBPTanh(), layers.LinBPSign()):
        assert layer.compute_dtype == compute_dtype
        y, grad = _layer_gradient(layer, x, upstream)
        assert y.dtype == compute_dtype
        # Autocast casts the float32 input to the compute dtype; the
        # gradient w.r.t. the float32 input comes back as float32.
        assert grad.dtype == "float32"
        numpy_dtype = ml_dtypes.bfloat16 if compute_dtype == "bfloat16" else np.float16
        expected = upstream.astype(numpy_dtype) * numpy_dtype(layer.slope)
        np.testing.assert_array_equal(grad.numpy(), expected.astype("float32"))

    # A small model trains under the policy. Under mixed_float16 Keras wraps
    # the optimizer in a LossScaleOptimizer whose first steps may be skipped
    # while the dynamic loss scale comes down from 2**15 (float16 overflow).
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8),
            layers.LinBPTanh(),
            keras.layers.Dense(8, activation=activations.linbp_relu),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    for _ in range(6):
        logs = model.train_on_batch(x, x[:, :1], return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_masking_passes_through_and_is_respected_downstream():
    # Time steps whose features are all 0 are masked; the mask must survive
    # the LinearBackprop layer so that the average pooling skips them.
    x = RNG.normal(size=(2, 5, 3)).astype("float32")
    x[0, 3:] = 0.0
    x[1, 1] = 0.0
    inputs = keras.Input((5, 3))
    masked = keras.layers.Masking(0.0)(inputs)
    activated = layers.LinBPTanh()(masked)
    outputs = keras.layers.GlobalAveragePooling1D()(activated)
    model = keras.Model(inputs, outputs)

    keep = np.any(x != 0.0, axis=-1)
    expected = np.stack([np.tanh(x[i][keep[i]]).mean(axis=0) for i in range(2)])
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-6, atol=1e-7)

    layer = layers.LinearBackprop("relu")
    mask = tf.constant(keep)
    np.testing.assert_array_equal(layer.compute_mask(tf.constant(x), mask).numpy(), keep)


def test_config_round_trip_keeps_slope_and_activation():
    layer = layers.LinearBackprop("hard_tanh", slope=0.3, name="lbp")
    config = layer.get_config()
    assert config["activation"] == "hard_tanh" and config["slope"] == pytest.approx(0.3)
    clone = layers.LinearBackprop.from_config(config)
    assert clone.slope == layer.slope and clone.activation_fn is keras.activations.hard_tanh
    assert clone.name == "lbp"

    named = layers.LinBPReLU6(slope=4.0)
    assert "activation" not in named.get_config()
    clone = layers.LinBPReLU6.from_config(named.get_config())
    assert clone.slope == 4.0 and clone.activation_fn is keras.activations.relu6


def test_callable_activation_round_trips_through_config():
    # A Keras function of the table, a Keras-only function (not a table
    # name), the table's own sign and a linbp_* function.
    x = RNG.normal(size=(3, 4)).astype("float32")
    for activation in (
        keras.activations.tanh,
        keras.activations.mish,
        activations.sign,
        activations.linbp_softsign,
    ):
        layer = layers.LinearBackprop(activation, slope=0.5)
        config = keras.saving.serialize_keras_object(layer)
        clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
        assert type(clone) is layers.LinearBackprop
        assert clone.activation_fn is activation and clone.slope == 0.5
        np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())


def test_unknown_activation_name_raises_value_error_listing_names():
    with pytest.raises(ValueError) as info:
        layers.LinearBackprop("mishh")
    assert "'mishh'" in str(info.value)
    for name in ("sigmoid", "tanh", "sign", "hard_silu"):
        assert name in str(info.value)


def test_named_layer_rejects_a_different_activation():
    with pytest.raises(ValueError, match="LinBPTanh always applies 'tanh'"):
        layers.LinBPTanh(activation="relu")
    assert layers.LinBPTanh(activation="tanh").activation_fn is keras.activations.tanh


def test_layer_rejects_integer_and_bool_input():
    for dtype in ("int32", "bool"):
        with pytest.raises(TypeError, match="floating"):
            layers.LinBPSigmoid()(np.ones((2, 3), dtype=dtype))


@pytest.mark.parametrize("cls", [layers.LinearBackprop, *layers.NAMED_LAYERS], ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_layer_rejects_a_symbolic_integer_input_when_called(cls, dtype):
    # Keras's own Activation layer keeps a symbolic int input's dtype; a
    # linear-backprop layer cannot run on it, so the functional call fails
    # (not the first fit / predict, after a float32 spec was promised).
    layer = cls("tanh") if cls is layers.LinearBackprop else cls()
    with pytest.raises(TypeError, match=rf"{cls.__name__}.*floating.*dtype {dtype}"):
        layer(keras.Input((3,), dtype=dtype))
    # A floating input still gives Keras's spec: the same shape and dtype.
    out = layer(keras.Input((3,), dtype="float32"))
    assert (out.shape, out.dtype) == ((None, 3), "float32")


def test_unregistered_callable_fails_to_load_with_a_clear_error():
    def my_activation(x):
        return x * tf.sigmoid(x)

    config = layers.LinearBackprop(my_activation).get_config()
    with pytest.raises((TypeError, ValueError), match="register_keras_serializable"):
        layers.LinearBackprop.from_config(config)
    with keras.saving.custom_object_scope({"my_activation": my_activation}):
        assert layers.LinearBackprop.from_config(config).activation_fn is my_activation
