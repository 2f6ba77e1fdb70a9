"""LinearBackpropModel under mixed precision and MirroredStrategy, and its
`.keras` save / load and SavedModel export."""

import numpy as np
import tensorflow as tf
from tensorflow.python.distribute import mirrored_strategy

import keras

from keras_linbp.models import LinearBackpropModel
from models_test import EXACT
from models_test import LINEAR
from models_test import SIZES
from models_test import _assert_weights
from models_test import _compile
from models_test import _data
from models_test import _init_weights
from models_test import _mlp
from models_test import _mlp_layers
from models_test import _numpy_sgd_step


def test_mixed_float16_uses_keras_loss_scaling():
    keras.config.set_dtype_policy("mixed_float16")
    weights = _init_weights()
    x, y = _data()
    model = _compile(_mlp(weights))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.layers[1].compute_dtype == "float16"
    model.train_on_batch(x, y)
    linear = _numpy_sgd_step(weights, x, y, LINEAR)
    exact = _numpy_sgd_step(weights, x, y, EXACT)
    for actual, want_linear, want_exact in zip(model.get_weights(), linear, exact):
        assert actual.dtype == np.float32
        error = np.abs(actual - want_linear).max()
        assert error < 2e-3
        assert error < 0.2 * max(np.abs(want_exact - want_linear).max(), 1e-2)


def _mirrored_strategy_with_own_collective_keys(devices):
    """A `MirroredStrategy` whose collective keys no other strategy uses.

    Every `MirroredStrategy` of a process numbers its collective ops from the
    same keys (group 1, instances 100, 101, ...), and the TF runtime keeps
    what it learned about each key -- a tensor's shape -- for the life of
    the process. A second strategy whose all-reduces have other shapes then
    aborts with "Shape mismatch in the collective instance 100" (this test
    failed after `callbacks_test.py::test_mirrored_strategy`, and that one
    after this). TF's own tests avoid it the same way
    (`tensorflow/python/distribute/strategy_combinations.py`): move the key
    base before creating a strategy, and again after, so that a strategy
    created later without this helper gets fresh keys too.
    """
    mirrored_strategy.MirroredStrategy._collective_key_base += 100000
    strategy = tf.distribute.MirroredStrategy(devices)
    mirrored_strategy.MirroredStrategy._collective_key_base += 100000
    return strategy


def test_mirrored_strategy_on_two_devices_equals_one_device():
    weights = _init_weights()
    x, y = _data(n=16)
    strategy = _mirrored_strategy_with_own_collective_keys(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        distributed = _compile(_mlp(weights))
    single = _compile(_mlp(weights))
    for model in (distributed, single):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    _assert_weights(distributed, single.get_weights())
    expected = _numpy_sgd_step(weights, x[:8], y[:8], LINEAR)
    expected = _numpy_sgd_step(expected, x[8:], y[8:], LINEAR)
    _assert_weights(distributed, expected)


@keras.saving.register_keras_serializable(package="keras_linbp_tests")
class SavedSubclassedMLP(LinearBackpropModel):
    def __init__(self, units=SIZES[1], **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="tanh")
        self.head = keras.layers.Dense(SIZES[-1])

    def call(self, inputs):
        return self.head(self.hidden(inputs))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_linbp_tests")
class SavedPlainMLP(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(SIZES[1], activation="relu")
        self.head = keras.layers.Dense(SIZES[-1], activation="sigmoid")

    def call(self, inputs):
        return self.head(self.hidden(inputs))


def _options(model):
    return (
        model.backprop,
        model.slope,
        model.sites_option,
        model.from_depth,
        model.include_output,
        model.include_softmax,
        model.include_gates,
        # Layer names of a subclassed model are auto-generated again on load.
        [(s.activation_name, s.depth) for s in model.linear_sites()],
    )


def _models_to_save(x):
    functional = LinearBackpropModel(
        *_mlp_layers(), slope=0.5, sites=["hidden_2", "output"], include_output=True
    )
    functional.set_weights(_init_weights())
    subclassed = SavedSubclassedMLP(units=6, backprop="exact", from_depth=1)
    subclassed(x)
    plain = SavedPlainMLP()
    plain(x)
    wrapped = LinearBackpropModel.from_model(plain, sites=r"^saved_plain_mlp/dense")
    return {"functional": functional, "subclassed": subclassed, "from_model": wrapped}


def test_keras_file_round_trip_restores_options_weights_and_optimizer(tmp_path):
    x, y = _data()
    for kind, model in _models_to_save(x).items():
        model.compile(keras.optimizers.Adam(0.05), "mse")
        model.train_on_batch(x, y)  # Adam now has moment estimates.
        path = tmp_path / f"{kind}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert isinstance(loaded, LinearBackpropModel), kind
        assert model.linear_sites(), kind
        assert type(loaded) is type(model), kind
        assert _options(loaded) == _options(model), kind
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
        for m in (model, loaded):
            m.train_on_batch(x, y)
        _assert_weights(loaded, model.get_weights(), atol=1e-6)


def test_export_gives_inference_saved_model(tmp_path):
    x, _ = _data()
    model = _mlp(_init_weights())
    model.export(tmp_path / "exported", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(reloaded.serve(x).numpy(), model.predict(x, verbose=0), atol=1e-6)
