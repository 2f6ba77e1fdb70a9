"""BinaryDense / BinaryConv2D: Keras layer contract, numpy forward and
gradient references for both backward rules, and .keras save/load."""

import numpy as np
import pytest
import tensorflow as tf
import keras

import keras_linbp
from keras.src import testing

from keras_linbp import sites
from keras_linbp.binary import BinaryConv2D
from keras_linbp.binary import BinaryDense
from keras_linbp.binary import BinarySign
from keras_linbp.binary import WeightClip
from keras_linbp.binary import binary_sign


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def pass_mask(x, rule):
    """d(sign_rule(x))/dx as the rule defines it (numpy)."""
    if rule == "linear":
        return np.ones_like(x)
    return (np.abs(x) <= 1.0).astype(x.dtype)


class LayerContractTest(testing.TestCase):
    def test_binary_dense_contract(self):
        for rule in ("linear", "ste"):
            self.run_layer_test(
                BinaryDense,
                init_kwargs={"units": 3, "rule": rule},
                input_shape=(2, 4),
                expected_output_shape=(2, 3),
                expected_num_trainable_weights=2,
                expected_num_non_trainable_weights=0,
                supports_masking=True,
            )

    def test_binary_sign_contract(self):
        self.run_layer_test(
            BinarySign,
            init_kwargs={"rule": "ste"},
            input_shape=(2, 3),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=0,
            supports_masking=True,
        )

    def test_binary_conv2d_contract(self):
        self.run_layer_test(
            BinaryConv2D,
            init_kwargs={
                "filters": 3,
                "kernel_size": 3,
                "padding": "same",
                "rule": "ste",
                "binarize_inputs": False,
                "use_bias": False,
            },
            input_shape=(2, 5, 5, 2),
            expected_output_shape=(2, 5, 5, 3),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=0,
        )


def test_unknown_rule_names_the_rules():
    with pytest.raises(ValueError, match="'exact'.*linear.*ste"):
        BinaryDense(3, rule="exact")
    with pytest.raises(ValueError, match="clip_value"):
        WeightClip(0.0)


def test_default_constraint_clips_latent_kernel_after_update():
    layer = BinaryDense(2, rule="linear")
    model = keras.Sequential([keras.Input((3,)), layer])
    model.compile(optimizer=keras.optimizers.SGD(100.0), loss="mse")
    model.train_on_batch(np.ones((4, 3), "float32"), 50 * np.ones((4, 2), "float32"))
    kernel = layer.kernel.numpy()
    assert np.all(np.abs(kernel) <= 1.0)
    # The big step pushed every latent weight to the bound.
    np.testing.assert_allclose(np.abs(kernel), 1.0)
    assert BinaryDense(2, kernel_constraint=None).kernel_constraint is None


def _dense_case(rule, binarize_inputs):
    rng = np.random.default_rng(0)
    x = (1.5 * rng.standard_normal((5, 4))).astype("float32")
    # Latent weights outside [-1, 1] (assigned directly; the constraint acts
    # only after optimizer updates), so the ste kernel mask is not all ones.
    kernel = (1.5 * rng.standard_normal((4, 3))).astype("float32")
    bias = rng.standard_normal(3).astype("float32")
    upstream = rng.standard_normal((5, 3)).astype("float32")
    layer = BinaryDense(3, rule=rule, binarize_inputs=binarize_inputs)
    layer.build((None, 4))
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    return layer, x, kernel, bias, upstream


@pytest.mark.parametrize("rule", ["linear", "ste"])
@pytest.mark.parametrize("binarize_inputs", [True, False])
def test_dense_forward_and_gradients_match_numpy(rule, binarize_inputs):
    layer, x, kernel, bias, upstream = _dense_case(rule, binarize_inputs)
    x_t = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x_t)
        y = layer(x_t)
        loss = tf.reduce_sum(y * upstream)
    grad_x = tape.gradient(loss, x_t).numpy()
    grad_kernel, grad_bias = tape.gradient(loss, [layer.kernel, layer.bias])

    xb = np_sign(x) if binarize_inputs else x
    wb = np_sign(kernel)
    np.testing.assert_allclose(y.numpy(), xb @ wb + bias, rtol=1e-6, atol=1e-5)
    expected_grad_x = upstream @ wb.T
    if binarize_inputs:
        expected_grad_x = expected_grad_x * pass_mask(x, rule)
    np.testing.assert_allclose(grad_x, expected_grad_x, rtol=1e-6, atol=1e-5)
    expected_grad_kernel = (xb.T @ upstream) * pass_mask(kernel, rule)
    np.testing.assert_allclose(grad_kernel.numpy(), expected_grad_kernel, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(grad_bias.numpy(), upstream.sum(0), rtol=1e-6, atol=1e-5)
    if rule == "ste":
        # The case really exercises the clipping on both sides.
        assert 0 < pass_mask(kernel, rule).mean() < 1
        assert 0 < pass_mask(x, rule).mean() < 1


def _np_patches(x, kh, kw):
    """im2col for 'valid' stride-1 convolution: (n, oh, ow, kh*kw*c)."""
    n, h, w, c = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    out = np.zeros((n, oh, ow, kh * kw * c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i : i + kh, j : j + kw, :].reshape(n, -1)
    return out


def _np_col2im(patch_grads, x_shape, kh, kw):
    n, h, w, c = x_shape
    grad = np.zeros(x_shape, patch_grads.dtype)
    for i in range(patch_grads.shape[1]):
        for j in range(patch_grads.shape[2]):
            grad[:, i : i + kh, j : j + kw, :] += patch_grads[:, i, j].reshape(n, kh, kw, c)
    return grad


@pytest.mark.parametrize("rule", ["linear", "ste"])
def test_conv2d_forward_and_gradients_match_numpy(rule):
    rng = np.random.default_rng(1)
    x = (1.5 * rng.standard_normal((2, 5, 6, 2))).astype("float32")
    kernel = (1.5 * rng.standard_normal((3, 2, 2, 4))).astype("float32")
    upstream = rng.standard_normal((2, 3, 5, 4)).astype("float32")
    layer = BinaryConv2D(4, (3, 2), rule=rule, use_bias=False)
    layer.build((None, 5, 6, 2))
    layer.kernel.assign(kernel)
    x_t = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x_t)
        y = layer(x_t)
        loss = tf.reduce_sum(y * upstream)
    grad_x = tape.gradient(loss, x_t).numpy()
    grad_kernel = tape.gradient(loss, layer.kernel).numpy()

    patches = _np_patches(np_sign(x), 3, 2)  # (n, oh, ow, kh*kw*c)
    wb = np_sign(kernel).reshape(-1, 4)
    np.testing.assert_allclose(y.numpy(), patches @ wb, atol=1e-5)
    expected_grad_x = _np_col2im(upstream @ wb.T, x.shape, 3, 2) * pass_mask(x, rule)
    np.testing.assert_allclose(grad_x, expected_grad_x, atol=1e-5)
    expected_grad_kernel = np.einsum("nijk,nijf->kf", patches, upstream).reshape(kernel.shape)
    expected_grad_kernel = expected_grad_kernel * pass_mask(kernel, rule)
    np.testing.assert_allclose(grad_kernel, expected_grad_kernel, atol=1e-4)


def test_binary_sign_rules_against_numpy():
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], "float32")
    for rule in ("linear", "ste"):
        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            y = binary_sign(rule)(x_t)
        np.testing.assert_array_equal(y.numpy(), np_sign(x))
        np.testing.assert_array_equal(tape.gradient(y, x_t).numpy(), pass_mask(x, rule))


def test_binary_units_are_activation_sites():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3)(inputs)
    h = BinaryDense(3, rule="ste", name="hidden")(h)
    outputs = BinaryDense(2, rule="linear", binarize_inputs=False, name="out")(h)
    model = keras.Model(inputs, outputs)
    found = sites.find_activation_sites(model)
    assert [(s.path, s.activation_name, s.saturation) for s in found] == [
        ("hidden/hidden_input_sign", "sign", "binary")
    ]
    assert found[0].layer.rule == "ste"
    assert found[0].fixed_rule == keras_linbp.rules.StraightThroughRule(clip=1.0)
    # A LinearBackpropModel leaves the layer's own rule alone and says so.
    linear_model = keras_linbp.LinearBackpropModel(inputs, outputs)
    assert linear_model.linear_sites() == []
    lines = []
    linear_model.linbp_summary(print_fn=lines.append)
    (row,) = [line for line in lines if "hidden_input_sign" in line]
    assert "ste-fixed" in row and "linear-fixed" not in row


def test_save_load_keras_file(tmp_path):
    inputs = keras.Input((6, 6, 1))
    h = BinaryConv2D(4, 3, rule="ste", binarize_inputs=False, use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(h)
    outputs = BinaryDense(3, rule="linear")(h)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(2).standard_normal((3, 6, 6, 1)).astype("float32")
    path = tmp_path / "binary.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    conv, dense = restored.layers[1], restored.layers[-1]
    assert isinstance(conv, BinaryConv2D) and conv.rule == "ste" and not conv.binarize_inputs
    assert isinstance(dense, BinaryDense) and dense.rule == "linear" and dense.binarize_inputs
    assert dense.input_quantizer.rule == "linear" and conv.input_quantizer is None
    assert isinstance(dense.kernel_constraint, WeightClip)
    assert dense.kernel_constraint.clip_value == 1.0
