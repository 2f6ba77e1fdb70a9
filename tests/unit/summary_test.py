"""`keras_linbp.linbp_summary`: one free function for any model; its rows
are data, and a `LinearBackpropModel` prints the same table itself."""

import keras
import numpy as np
import pytest

import keras_linbp
from keras_linbp.models import LinearBackpropModel
from keras_linbp.options import LinearizeOptions
from keras_linbp.summary import site_rows

pytestmark = pytest.mark.all_backends


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, activation="tanh", name="d1")(inputs)
    h = keras.layers.Dense(6, activation="relu", name="d2")(h)
    h = keras_linbp.layers.LinearBackprop("sigmoid", name="fixed")(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(h))


def _cells(rows):
    return [(row.site.path, row.rule, row.slope, row.note) for row in rows]


EXPECTED = [
    ("d1", "exact", "", "before from_depth=2"),
    ("d2", "linear", "0.5", ""),
    ("fixed", "linear-fixed", "1", "LinearBackprop rule='linear'"),
    ("head", "exact", "", "output layer, softmax"),
]


def test_plain_model_with_options_and_linear_backprop_model_give_the_same_rows():
    plain = _model()
    options = LinearizeOptions(slope=0.5, from_depth=2)
    assert _cells(site_rows(plain, options)) == EXPECTED
    wrapped = LinearBackpropModel.from_model(plain, options=options)
    assert _cells(site_rows(wrapped)) == EXPECTED


def test_the_method_prints_what_the_free_function_prints():
    model = LinearBackpropModel.from_model(_model(), slope=0.5, from_depth=2, name="net")
    from_method, from_function = [], []
    model.linbp_summary(print_fn=from_method.append)
    keras_linbp.linbp_summary(model, print_fn=from_function.append)
    assert from_method == from_function
    assert from_method[0] == (
        "LinearBackpropModel \"net\": backprop='linear', slope=0.5; 2 of 4 activation "
        "sites use the linear backward rule in training."
    )
    assert from_method[3].split() == ["1", "d1", "attribute", "Dense", "tanh", "exact",
                                      "before", "from_depth=2"]


def test_plain_model_summary_names_its_class_and_the_options_in_force():
    lines = []
    keras_linbp.linbp_summary(_model(), print_fn=lines.append, options=LinearizeOptions(backprop="exact"))
    assert lines[0].startswith("Functional ") and "backprop='exact'" in lines[0]
    assert "1 of 4" in lines[0]  # the LinearBackprop layer fixes its own rule
    d2 = next(line for line in lines if line.startswith("2 "))
    assert 'linear when backprop="linear"' in d2


def test_auto_slopes_show_auto_until_calibrated():
    model = LinearBackpropModel.from_model(_model(), slope="auto")
    assert [row.slope for row in site_rows(model)][:2] == ["auto", "auto"]
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    slopes = model.calibrate_slopes(x)
    assert [row.slope for row in site_rows(model)][:2] == [f"{slopes['d1']:g}", f"{slopes['d2']:g}"]
