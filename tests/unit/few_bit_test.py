"""The few-bit backward rule on every backend: `keras_linbp.few_bit`,
`layers.FewBit`, `backprop="few_bit"` in models and `linearize`.

References: the gradient is a numpy lookup of the table
(`levels[np.searchsorted(bounds, a, side="right")]`); the forward is Keras's
activation; the packed residual is a numpy packing of those codes; models
are compared with a hand-written model whose activation is
`f(stop_gradient(a)) + (a - stop_gradient(a)) * stop_gradient(q(a))`, `q`
built from the numpy table with plain comparisons.
"""

import os

import numpy as np
import pytest

import keras
from keras.src import testing

import keras_linbp
from keras_linbp import _backend
from keras_linbp import _few_bit
from keras_linbp import tables
from keras_linbp.models import LinearBackpropModel

pytestmark = pytest.mark.all_backends
BACKEND = keras.backend.backend()
sg = keras.ops.stop_gradient


def input_gradient(fn, x, upstream=None, dtype="float32"):
    """`d/dx sum(upstream * fn(x))` as a numpy float64 array and the
    gradient's dtype, with the backend's autodiff."""
    x = keras.ops.convert_to_tensor(np.asarray(x, "float32"), dtype=dtype)
    up = keras.ops.ones_like(x) if upstream is None else keras.ops.convert_to_tensor(upstream, dtype=dtype)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(fn(x) * up)
        d = tape.gradient(y, x)
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        d = jax.grad(lambda t: jnp.sum(fn(t) * up))(x)
    else:
        t = x.detach().requires_grad_(True)
        (fn(t) * up).sum().backward()
        d = t.grad
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(d, "float32")), np.float64), (
        keras.backend.standardize_dtype(d.dtype)
    )


def lookup(a, bounds, levels):
    return np.asarray(levels)[np.searchsorted(bounds, np.asarray(a, np.float64), side="right")]


def numpy_pack(codes, slot):
    """The packing the rule documents: element i in bits slot*(i % k) of
    byte i // k, k = 8 // slot, the last byte zero-padded."""
    per_byte = 8 // slot
    codes = np.asarray(codes, np.int64).ravel()
    codes = np.concatenate([codes, np.zeros(-len(codes) % per_byte, np.int64)]).reshape(-1, per_byte)
    return (codes << (slot * np.arange(per_byte))).sum(axis=1).astype(np.uint8)


def hand_few_bit(f, bounds, levels):
    """Forward `f`, input gradient `q(a)` from the numpy table, by hand."""

    def g(x, *args, **kwargs):
        q = keras.ops.full_like(x, levels[0])
        for bound, step in zip(bounds, np.diff(levels)):
            q = q + float(step) * keras.ops.cast(keras.ops.greater_equal(x, float(bound)), x.dtype)
        return f(sg(x), *args, **kwargs) + (x - sg(x)) * sg(q)

    return g


# Points away from the bounds' grid edges (multiples of 0.01), so float32
# rounding cannot move a code.
A = np.random.default_rng(0).normal(size=203).round(2) + 0.003


@pytest.mark.parametrize("bits", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("name", ["gelu", "silu", "tanh", "elu", "relu6"])
def test_gradient_is_the_table_lookup_and_forward_is_keras(name, bits):
    fn = keras_linbp.few_bit(name, bits=bits)
    bounds, levels = tables.few_bit_table(name, bits)
    upstream = np.random.default_rng(1).normal(size=A.shape)
    grad, _ = input_gradient(fn, A, upstream)
    np.testing.assert_allclose(grad, upstream * lookup(A, bounds, levels), rtol=1e-5, atol=1e-6)
    x = keras.ops.convert_to_tensor(A.astype("float32"))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fn(x)), keras.ops.convert_to_numpy(keras.activations.get(name)(x))
    )
    assert fn.bits == bits and fn.forward is keras.activations.get(name)
    np.testing.assert_array_equal(fn.bounds, bounds)
    np.testing.assert_array_equal(fn.levels, levels)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1,), (5,), (7,), (8,), (13,), (3, 5, 7), (64, 9)])
def test_packed_residual_equals_numpy_packing_of_the_codes(bits, shape):
    bounds, levels = tables.few_bit_table("gelu", bits)
    rule = _few_bit.FewBitRule(tuple(bounds), tuple(levels))
    a = np.random.default_rng(2).normal(size=shape).round(2) + 0.003
    packed = keras.ops.convert_to_numpy(rule.residual(keras.ops.convert_to_tensor(a.astype("float32"))))
    slot = tables.slot_bits(bits)
    assert packed.dtype == np.uint8 and packed.shape == (-(-a.size * slot // 8),)
    np.testing.assert_array_equal(packed, numpy_pack(np.searchsorted(bounds, a, side="right"), slot))
    # Odd sizes unpack right: the gradient is the lookup, padding dropped.
    grad, _ = input_gradient(keras_linbp.few_bit("gelu", bits), a)
    np.testing.assert_allclose(grad, lookup(a, bounds, levels), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_the_gradient_keeps_the_upstream_dtype(dtype):
    if BACKEND == "jax" and dtype == "float64":
        pytest.skip("JAX runs without x64 here: a float64 input is float32")
    fn = keras_linbp.few_bit("silu", bits=2)
    bounds, levels = tables.few_bit_table("silu", 2)
    grad, grad_dtype = input_gradient(fn, A, dtype=dtype)
    assert grad_dtype == dtype
    a = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.convert_to_tensor(A, dtype=dtype), "float32"))
    tolerance = {"float16": 1e-3, "bfloat16": 1e-2, "float64": 1e-7}[dtype]  # read as float32
    np.testing.assert_allclose(grad, lookup(a, bounds, levels), rtol=tolerance, atol=tolerance)


def test_gelu_with_approximate_uses_the_approximation_table():
    fn = keras_linbp.few_bit("gelu", bits=3)
    approx = tables.few_bit_table("gelu", 3, approximate=True)
    assert not np.array_equal(approx[1], fn.levels)
    grad, _ = input_gradient(lambda t: fn(t, approximate=True), A)
    np.testing.assert_allclose(grad, lookup(A, *approx), rtol=1e-6)


def test_aliases_and_keras_functions_resolve_to_the_table():
    assert keras_linbp.few_bit("swish", 1).bounds.tolist() == keras_linbp.few_bit("silu", 1).bounds.tolist()
    assert keras_linbp.few_bit(keras.activations.gelu).forward is keras.activations.gelu


@pytest.mark.parametrize(
    "activation, bits, error, words",
    [
        ("softmax", 2, ValueError, "softmax"),
        (lambda x: x * 2, 2, ValueError, "No few-bit table"),
        ("gelu", 5, ValueError, "bits"),
        ("gelu", -1, ValueError, "bits"),
        ("gelu", 1.5, TypeError, "bits"),
    ],
)
def test_bad_arguments_raise_when_made(activation, bits, error, words):
    with pytest.raises(error, match=words):
        keras_linbp.few_bit(activation, bits=bits)


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's saved-tensor hooks")
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_torch_saves_only_the_packed_uint8_codes(bits):
    import torch

    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    x = torch.randn(37, 11, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        keras_linbp.few_bit("gelu", bits)(x).sum()
    assert saved == [(torch.uint8, -(-x.numel() * tables.slot_bits(bits) // 8))]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's custom_gradient closure")
def test_tensorflow_backward_closure_holds_only_the_packed_codes():
    import tensorflow as tf

    # The backward function TensorFlow keeps is `input_gradient` closing
    # over the residual alone; capture what `apply_rule` hands it.
    rule = _few_bit.FewBitRule(*map(tuple, tables.few_bit_table("gelu", 2)))
    kept = []

    class Spy(type(rule)):
        def residual(self, x):
            out = super().residual(x)
            kept.append(out)
            return out

    spy = Spy(rule.bounds, rule.levels)
    x = tf.random.normal((33, 7))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _backend.apply_rule(keras.activations.gelu, x, (), {}, spy)
    tape.gradient(y, x)
    assert [(t.dtype, tuple(t.shape)) for t in kept] == [(tf.uint8, (-(-33 * 7 * 2 // 8),))]


class GatedGelu(keras.layers.Layer):
    """Gemma's feed-forward: `gelu(gate(x)) * up(x)`, the GELU an op in `call()`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gate = keras.layers.Dense(512)
        self.up = keras.layers.Dense(512)

    def call(self, x):
        return keras.activations.gelu(self.gate(x), approximate=True) * self.up(x)


@pytest.mark.skipif(BACKEND != "jax", reason="XLA's buffer assignment of a jitted JAX step")
def test_jax_compiled_step_keeps_packed_codes_not_the_input():
    import jax
    import jax.numpy as jnp

    # XLA fused the packing of the codes into the backward pass (their only
    # consumer) and so kept the fp32 input alive: keras-hub Gemma's step
    # took exact backprop's memory. With 4 blocks of 256 x 512 elements, an
    # fp32 input kept per block is 0.5 MiB (2 MiB in all; before the fix
    # few-bit took linear + 2.0 MiB); 2-bit codes are 0.03 MiB a block.
    inputs = keras.Input((64,))
    hidden = inputs
    for _ in range(4):
        hidden = keras.layers.Dense(64)(GatedGelu()(hidden))
    model = keras.Model(inputs, hidden)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(256, 64)).astype("float32"))

    def temp_mib(**options):
        def loss(trainable):
            with keras_linbp.linearize(model, inputs=x, **options):
                out, _ = model.stateless_call(trainable, [], x)
            return jnp.mean(out * out)

        trainable = [v.value for v in model.trainable_variables]
        compiled = jax.jit(jax.grad(loss)).lower(trainable).compile()
        return compiled.memory_analysis().temp_size_in_bytes / 2**20

    exact, linear = temp_mib(sites=[]), temp_mib()
    few_bit = temp_mib(backprop="few_bit", bits=2)
    assert exact - linear > 3.0, (exact, linear)  # the inputs the rule frees
    assert few_bit - linear < 1.0, (exact, linear, few_bit)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function shapes and XLA")
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("bits", [1, 3])
def test_tensorflow_graph_with_an_unknown_batch_size(bits, jit_compile):
    import tensorflow as tf

    fn = keras_linbp.few_bit("gelu", bits)

    @tf.function(input_signature=[tf.TensorSpec([None, 7])], jit_compile=jit_compile)
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(fn(x))
        return tape.gradient(y, x)

    a = A[:35].reshape(5, 7)
    np.testing.assert_allclose(grad(a.astype("float32")).numpy(), lookup(a, fn.bounds, fn.levels), rtol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="what a TensorFlow step traces for XLA")
def test_tensorflow_xla_step_packs_and_unpacks_in_xla_forms():
    import tensorflow as tf

    # Under XLA the gather of the 256-row level table left a full-size
    # factor tensor: keras.applications EfficientNetB0's few-bit step with
    # jit_compile=True took exact backprop's 373.5 MiB (JAX's forms: 351.4,
    # as on JAX). A graph without XLA keeps the gather (TensorFlow's
    # executor would hold each comparison's full-size temporary).
    fn = keras_linbp.few_bit("gelu", 2)

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(fn(x))
        return tape.gradient(y, x)

    def op_types(jit_compile):
        step = tf.function(grad, jit_compile=jit_compile).get_concrete_function(tf.TensorSpec([None, 7]))
        return {op.type for op in step.graph.get_operations()}

    graph, xla = op_types(False), op_types(True)
    assert "GatherV2" in graph and "BitwiseOr" in graph, sorted(graph)
    assert "GatherV2" not in xla and "BitwiseOr" not in xla, sorted(xla)
    assert {"Sum", "SelectV2"} <= xla, sorted(xla)


def test_few_bit_layer_passes_keras_layer_test():
    testing.TestCase().run_layer_test(
        keras_linbp.layers.FewBit,
        init_kwargs={"activation": "gelu", "bits": 3},
        input_shape=(2, 5),
        expected_output_shape=(2, 5),
        expected_num_trainable_weights=0,
        supports_masking=True,
        assert_built_after_instantiation=True,
    )


def test_few_bit_layer_gradient_and_errors():
    layer = keras_linbp.layers.FewBit("silu", bits=1)
    grad, _ = input_gradient(layer, A)
    np.testing.assert_allclose(grad, lookup(A, *tables.few_bit_table("silu", 1)), rtol=1e-6)
    restored = keras_linbp.layers.FewBit.from_config(layer.get_config())
    assert (restored.activation, restored.bits) == ("silu", 1)
    with pytest.raises(ValueError, match="mish"):
        keras_linbp.layers.FewBit(keras.activations.mish)


@keras.saving.register_keras_serializable(package="linbp_few_bit_tests")
class GeluOp(keras.layers.Layer):
    """An op site: gelu(approximate=True) computed in `call()`."""

    def __init__(self, reference=None, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.up = keras.layers.Dense(6, name="up")

    def call(self, x):
        gelu = keras.activations.gelu
        if self.reference is not None:
            gelu = hand_few_bit(gelu, *tables.few_bit_table("gelu", self.reference, approximate=True))
        return gelu(self.up(x), approximate=True)


def _model(reference_bits=None, seed=0):
    """Dense(gelu) -> Dense(silu) -> ReLU(max_value=6) layer -> gelu op ->
    Dense(mish: no table) -> logits; with `reference_bits` ({site: bits}),
    the hand-written few-bit model."""
    keras.utils.set_random_seed(seed)

    def act(name, site):
        if reference_bits is None:
            return name
        return hand_few_bit(keras.activations.get(name), *tables.few_bit_table(name, reference_bits[site]))

    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, activation=act("gelu", "d1"), name="d1")(inputs)
    h = keras.layers.Dense(6, activation=act("silu", "d2"), name="d2")(h)
    if reference_bits is None:
        h = keras.layers.ReLU(max_value=6.0, name="r6")(h)
    else:
        h = keras.layers.Activation(act("relu6", "r6"), name="r6")(h)
    h = GeluOp(None if reference_bits is None else reference_bits["g:gelu"], name="g")(h)
    h = keras.layers.Dense(6, activation="mish", name="m")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def _one_step(model, x, y):
    model.compile(keras.optimizers.SGD(0.3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return 2 * rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, size=n)


BITS = {"d1": 1, "d2": 3, "r6": 2, "g:gelu": 4}


def test_fit_step_equals_hand_written_few_bit_model(tmp_path):
    x, y = _data()
    model = _model()
    reference = _model(BITS)
    reference.set_weights(model.get_weights())
    exact = _model()
    exact.set_weights(model.get_weights())
    few_bit = LinearBackpropModel.from_model(model, backprop="few_bit", bits=BITS)
    rows = {row.site.path: row for row in keras_linbp.summary.site_rows(few_bit)}
    assert {path: (row.rule, row.bits, row.kept) for path, row in rows.items()} == {
        "d1": ("few_bit", "1", "0.125"),
        "d2": ("few_bit", "3", "0.5"),
        "r6": ("few_bit", "2", "0.25"),
        "g:gelu": ("few_bit", "4", "0.5"),
        "m": ("exact", "", ""),
    }
    assert "no few-bit table for mish" in rows["m"].note
    got = _one_step(few_bit, x, y)
    expected = _one_step(reference, x, y)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    exact_expected = _one_step(exact, x, y)
    assert max(np.abs(e - x_).max() for e, x_ in zip(expected, exact_expected)) > 1e-4
    # The .keras round trip keeps the mode and the bits.
    path = os.path.join(tmp_path, "m.keras")
    few_bit.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.backprop, loaded.options.bits) == ("few_bit", BITS)


def test_linearize_applies_the_few_bit_rule_to_the_input_gradient():
    x, y = _data()
    model = _model()
    reference = _model({"d1": 2, "d2": 2, "r6": 2, "g:gelu": 2})
    reference.set_weights(model.get_weights())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def few_bit_loss(t):
        with keras_linbp.linearize(model, backprop="few_bit", bits=2):
            return loss(y, model(t)) * keras.ops.ones_like(t)

    got, _ = input_gradient(few_bit_loss, x)
    expected, _ = input_gradient(lambda t: loss(y, reference(t)) * keras.ops.ones_like(t), x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


class StoredOpActivation(keras.layers.Layer):
    """keras-hub Llama's way: a `keras.ops` function stored and called in `call()`."""

    def __init__(self, op, **kwargs):
        super().__init__(**kwargs)
        self.activation = op

    def call(self, x):
        return self.activation(x)


@pytest.mark.parametrize("op,table", [("silu", ("silu", {})), ("gelu", ("gelu", {"approximate": True}))])
def test_a_stored_keras_op_gets_its_table(op, table):
    # keras-hub Llama stores keras.ops.silu: it kept exact backprop under
    # backprop="few_bit" ("no few-bit table for silu"), so its step kept
    # exact backprop's memory. keras.ops.gelu defaults to the tanh form.
    inputs = keras.Input((7,))
    hidden = StoredOpActivation(getattr(keras.ops, op), name="act")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(7, kernel_initializer="identity", name="head")(hidden))
    wrapped = LinearBackpropModel.from_model(model, backprop="few_bit", bits=2)
    (row,) = keras_linbp.summary.site_rows(wrapped)
    assert row.rule == "few_bit", row
    bounds, levels = tables.few_bit_table(table[0], 2, **table[1])
    a = A[:35].reshape(5, 7)

    def few_bit_sum(t):
        with keras_linbp.linearize(model, backprop="few_bit", bits=2):
            return model(t)

    got, _ = input_gradient(few_bit_sum, a)
    np.testing.assert_allclose(got, lookup(a, bounds, levels), rtol=1e-6)


@pytest.mark.parametrize("op,table", [("silu", ("silu", {})), ("gelu", ("gelu", {"approximate": True}))])
def test_few_bit_of_a_keras_op_uses_its_table(op, table):
    # few_bit(keras.ops.silu) raised "No few-bit table" while a site storing
    # the same op got its table; gelu's op keeps its own default (tanh form).
    fn = keras_linbp.few_bit(getattr(keras.ops, op), bits=2)
    bounds, levels = tables.few_bit_table(table[0], 2, **table[1])
    np.testing.assert_array_equal(fn.levels, levels)
    got, _ = input_gradient(fn, A)
    np.testing.assert_allclose(got, lookup(A, bounds, levels), rtol=1e-6)
    x = keras.ops.convert_to_tensor(A.astype("float32"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fn(x)), keras.ops.convert_to_numpy(getattr(keras.ops, op)(x)), rtol=1e-6
    )


def test_a_bits_dict_naming_no_site_raises_when_the_model_is_made():
    with pytest.raises(ValueError, match="`bits` gives bits for \\['nope'\\]"):
        LinearBackpropModel.from_model(_model(), backprop="few_bit", bits={"nope": 1})
