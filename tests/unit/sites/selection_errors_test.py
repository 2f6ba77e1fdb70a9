"""A `sites` regex or name that matches no site is an error, raised as soon
as the model is known: when a built model is made, at the first step of an
unbuilt one, and (callbacks) when `fit` hands the model over, before any
step."""

import numpy as np
import pytest

import keras

import keras_linbp
from keras_linbp import sites as linbp_sites
from keras_linbp.callbacks import GradientFlow
from keras_linbp.callbacks import SaturationHistograms
from keras_linbp.models import LinearBackpropModel

pytestmark = pytest.mark.all_backends

PATHS = r"Site paths: hidden, head"


def _functional():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(hidden))


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 3, size=8)


class _CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


def test_a_pattern_matching_nothing_fails_when_a_built_model_is_made():
    with pytest.raises(ValueError, match=r"pattern '\^conv' matches no activation site.*" + PATHS):
        LinearBackpropModel.from_model(_functional(), sites="^conv")
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation="tanh", name="head")(inputs)
    with pytest.raises(ValueError, match=r"'\^conv'.*Site paths: head"):
        LinearBackpropModel(inputs, outputs, sites="^conv")
    # A pattern that matches is fine, even where the match is left out.
    LinearBackpropModel.from_model(_functional(), sites="^head")


def test_select_sites_explain_selection_and_linearize_raise_for_the_pattern():
    model = _functional()
    all_sites = linbp_sites.find_activation_sites(model)
    for call in (
        lambda: linbp_sites.select_sites(all_sites, sites="nope"),
        lambda: linbp_sites.explain_selection(all_sites, sites="nope"),
    ):
        with pytest.raises(ValueError, match="'nope' matches no activation site.*" + PATHS):
            call()
    with pytest.raises(ValueError, match="'nope' matches no activation site"):
        with keras_linbp.linearize(model, sites="nope"):
            pass


class SubclassedNet(LinearBackpropModel):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(5, activation="tanh", name="hidden")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.hidden(x))


def test_an_unbuilt_model_raises_at_its_first_step_not_a_warning():
    x, y = _data()
    model = SubclassedNet(sites="^conv")  # not built: nothing to check yet
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    counter = _CountBatches()
    with pytest.raises(ValueError, match=r"'\^conv' matches no activation site.*hidden"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[counter])
    assert counter.batches <= 1  # raised by the first step


@pytest.mark.parametrize("callback_class", [GradientFlow, SaturationHistograms])
def test_callback_names_are_checked_when_the_model_is_handed_over(tmp_path, callback_class):
    x, y = _data()
    # Construction checks types only: the model is not known yet.
    callback = callback_class(str(tmp_path), data=(x, y), sites=["hidden", "nope"])
    with pytest.raises(ValueError, match=r"`sites` names \['nope'\].*'hidden', 'head'"):
        callback.set_model(_functional())
    model = _functional()
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    counter = _CountBatches()
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[counter, callback])
    assert counter.batches == 0  # before any step
