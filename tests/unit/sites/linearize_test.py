"""`keras_linbp.linearize` in custom loops: input gradients eager and in
`tf.function`, restoring the model, nesting, threads, options and the
zero-sites warning.

References are written by hand (`_site_models.hand_linear`).
"""

import threading
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_linbp
from keras_linbp import _compat
from keras_linbp.models import LinearBackpropModel
from _site_models import GemmaLike, _data, _mlp, hand_linear  # noqa: F401


# --- linearize ---------------------------------------------------------------


def _input_gradient(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(y, model(x))
    return tape.gradient(loss, x).numpy()


@pytest.mark.parametrize("from_depth", [1, 2, 3])
def test_linearize_input_gradients_eager_and_tf_function(from_depth):
    x, y = _data()
    model = _mlp()
    reference = _mlp(reference_from=from_depth)
    reference.set_weights(model.get_weights())
    expected = _input_gradient(reference, x, y)
    exact = _input_gradient(model, x, y)
    assert np.abs(expected - exact).max() > 1e-5

    with keras_linbp.linearize(model, from_depth=from_depth) as linear_sites:
        assert [s.path for s in linear_sites] == [f"d{k}" for k in range(from_depth, 4)]
        eager = _input_gradient(model, x, y)
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-7)

    @tf.function
    def traced(x, y):
        with keras_linbp.linearize(model, from_depth=from_depth):
            loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = loss_fn(y, model(x))
            return tape.gradient(loss, x)

    np.testing.assert_allclose(traced(tf.constant(x), y).numpy(), expected, rtol=1e-5, atol=1e-7)
    # Exact again after the block.
    np.testing.assert_allclose(_input_gradient(model, x, y), exact, rtol=1e-6, atol=1e-8)


def test_linearize_restores_the_model_after_an_exception():
    x, y = _data()
    model = _gemma_and_mlp()
    exact = _input_gradient(model, x, y)
    nn = _compat.backend_op_modules()["nn"]
    gelu_before = nn.gelu
    with pytest.raises(RuntimeError, match="boom"):
        with keras_linbp.linearize(model):
            assert nn.gelu is not gelu_before
            raise RuntimeError("boom")
    assert nn.gelu is gelu_before
    assert "activation" not in model.get_layer("d").__dict__ or (
        model.get_layer("d").activation is keras.activations.tanh
    )
    np.testing.assert_allclose(_input_gradient(model, x, y), exact, rtol=1e-6, atol=1e-8)


def _gemma_and_mlp():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6,))
    h = GemmaLike(name="gemma")(inputs)
    h = keras.layers.Dense(7, activation="tanh", name="d")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def test_linearize_nests_inner_wins_and_outer_returns():
    x, y = _data()
    model = _mlp()
    with keras_linbp.linearize(model):
        outer = _input_gradient(model, x, y)
        with keras_linbp.linearize(model, slope=0.5, from_depth=3):
            inner = _input_gradient(model, x, y)
        again = _input_gradient(model, x, y)
    # Inner block: d3 at slope 0.5, d1 and d2 at the outer block's slope 1.
    reference = _mlp(reference_from=1)
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(outer, _input_gradient(reference, x, y), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(again, outer, rtol=1e-6, atol=1e-8)
    assert np.abs(inner - outer).max() > 1e-6


def test_linearize_is_per_thread():
    x, y = _data()
    model = _mlp()
    exact = _input_gradient(model, x, y)
    inside = threading.Event()
    done = threading.Event()
    results = {}

    def linear_thread():
        with keras_linbp.linearize(model):
            inside.set()
            results["linear"] = _input_gradient(model, x, y)
            done.wait(30)

    thread = threading.Thread(target=linear_thread)
    thread.start()
    assert inside.wait(30)
    results["other"] = _input_gradient(model, x, y)  # while the block is open
    done.set()
    thread.join(30)
    np.testing.assert_allclose(results["other"], exact, rtol=1e-6, atol=1e-8)
    assert np.abs(results["linear"] - exact).max() > 1e-5


def test_linearize_options_are_validated_like_the_model():
    model = _mlp()
    for kwargs, error, pattern in [
        ({"slope": "abc"}, ValueError, "slope"),
        ({"slope": float("nan")}, ValueError, "slope"),
        ({"from_depth": 0}, ValueError, "from_depth"),
        ({"from_depth": 1.7}, TypeError, "from_depth"),
        ({"sites": 123}, TypeError, "sites"),
        ({"sites": ["nope"]}, ValueError, "nope"),
        ({"slope": "auto"}, ValueError, "calibrate"),
    ]:
        with pytest.raises(error, match=pattern):
            with keras_linbp.linearize(model, **kwargs):
                pass


def test_linear_model_options_are_linearize_defaults():
    x, y = _data()
    model = _mlp()
    linear = LinearBackpropModel.from_model(model, from_depth=3, slope=0.5)
    with keras_linbp.linearize(linear) as selected:
        assert [s.path for s in selected] == ["d3"]
        got = _input_gradient(linear, x, y)
    with keras_linbp.linearize(model, from_depth=3, slope=0.5):
        expected = _input_gradient(model, x, y)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "options, reason",
    [({"sites": ["head"]}, "output layer"), ({"from_depth": 9}, "before from_depth=9")],
)
def test_zero_linear_sites_warns_once_naming_why(options, reason):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(h)
    model = LinearBackpropModel(inputs, outputs, **options)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    relevant = [w for w in caught if "applies to no activation site" in str(w.message)]
    assert len(relevant) == 1
    assert reason in str(relevant[0].message)
