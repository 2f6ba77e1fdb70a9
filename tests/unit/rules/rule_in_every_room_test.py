"""Each room asks the rule: a hand-placed rule is fixed in every mode, the
summary shows it, the schedule keeps a model's own rule, the callbacks'
plain function is the activation's, and options a mode would ignore fail
at construction. Each test failed on 0.3."""

import warnings

import keras
import numpy as np
import pytest

import keras_linbp
from keras_linbp import _backend
from keras_linbp import rules
from keras_linbp import tables
from keras_linbp.callbacks import _sites as callback_sites
from keras_linbp.models import BackpropSchedule

pytestmark = pytest.mark.all_backends

A = np.linspace(-2.5, 2.5, 21).astype("float32")


def _one_site_model(activation):
    inputs = keras.Input((A.size,))
    outputs = keras.layers.Activation(activation, name="act")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(outputs))


def _site_derivative(model, **options):
    """d sum(act(a)) / d a under `linearize(model, **options)`."""
    act = model.get_layer("act")

    def through_site(a):
        with warnings.catch_warnings():
            # The only site fixes its rule: "applies to no activation site".
            warnings.simplefilter("ignore", UserWarning)
            with keras_linbp.linearize(model, include_output=True, **options):
                return act(a)

    model(A[None])  # built, sites known
    return _backend.elementwise_derivative(through_site, keras.ops.convert_to_tensor(A[None]))[0]


@pytest.mark.parametrize("mode", ["linear", "few_bit", "from_output"])
@pytest.mark.parametrize(
    "make, factor",
    [
        (lambda: keras_linbp.linear_backprop("tanh", slope=0.25), lambda a: np.full_like(a, 0.25)),
        (
            lambda: keras_linbp.few_bit("tanh", bits=1),
            lambda a: tables.few_bit_table("tanh", 1)[1][np.searchsorted(tables.few_bit_table("tanh", 1)[0], a, side="right")],
        ),
    ],
    ids=["linear_backprop", "few_bit"],
)
def test_a_hand_placed_rule_function_is_fixed_in_every_mode(mode, make, factor):
    # 0.3: the model's slope-1 linear rule replaced it (off by 5-6x).
    model = _one_site_model(make())
    np.testing.assert_allclose(_site_derivative(model, backprop=mode), factor(A), rtol=1e-6)
    wrapped = keras_linbp.LinearBackpropModel.from_model(model, backprop=mode)
    (site,) = [site for site in wrapped.activation_sites() if site.path == "act"]
    assert site.fixed_rule == rules.rule_of(model.get_layer("act").activation)
    assert site.activation_name == "tanh" and site.saturation == "bounded"


def test_the_summary_shows_hand_placed_and_layer_rules():
    # 0.3: a FewBit(bits=3) row had empty bits / bytes, the header left it
    # out, and a few_bit(...) function read `exact . no few-bit table`.
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, activation=keras_linbp.few_bit("gelu", bits=1), name="fn")(inputs)
    h = keras_linbp.layers.FewBit("silu", bits=3, name="layer")(h)
    h = keras.layers.Dense(4, activation="gelu", name="plain")(h)
    model = keras_linbp.LinearBackpropModel(inputs, keras.layers.Dense(2, name="out")(h), backprop="few_bit")
    rows = {row.site.path: row for row in keras_linbp.summary.site_rows(model)}
    assert (rows["fn"].rule, rows["fn"].bits, rows["fn"].kept, rows["fn"].note) == ("few_bit-fixed", "1", "0.125", "rule function")
    assert (rows["layer"].rule, rows["layer"].bits, rows["layer"].kept) == ("few_bit-fixed", "3", "0.5")
    assert (rows["plain"].rule, rows["plain"].bits) == ("few_bit", "2")
    lines = []
    model.linbp_summary(print_fn=lines.append)
    assert "3 of 3 activation sites use the few-bit backward rule" in lines[0]
    # In a linear model the fixed few-bit rows keep their columns too.
    linear = keras_linbp.LinearBackpropModel.from_model(model, backprop="linear")
    rows = {row.site.path: row for row in keras_linbp.summary.site_rows(linear)}
    assert (rows["layer"].bits, rows["plain"].rule, rows["plain"].slope) == ("3", "linear", "1")


def test_an_int_schedule_switches_between_exact_and_the_models_own_rule():
    # 0.3: BackpropSchedule(N) made a few-bit model linear for epochs 0..N-1.
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2)(keras.layers.Dense(4, activation="gelu")(inputs))
    model = keras_linbp.LinearBackpropModel(inputs, outputs, backprop="few_bit", bits=1)
    model.compile("sgd", "mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(self.model.backprop)

    x = np.zeros((4, 3), "float32")
    model.fit(x, np.zeros((4, 2)), epochs=3, verbose=0, callbacks=[BackpropSchedule(2), Record()])
    assert seen == ["few_bit", "few_bit", "exact"]


def test_the_plain_function_of_a_rule_site_is_the_activation():
    # 0.3: a FewBit site's "plain" derivative was its few-bit rule.
    inputs = keras.Input((A.size,))
    h = keras_linbp.layers.FewBit("tanh", bits=1, name="layer")(inputs)
    h = keras.layers.Dense(A.size, activation=keras_linbp.few_bit("tanh", bits=1), name="fn")(h)
    model = keras.Model(inputs, h)
    x = keras.ops.convert_to_tensor(A)
    for site in keras_linbp.sites.find_activation_sites(model):
        plain = callback_sites.plain_function(site, keras_linbp.sites.original_function(site))
        np.testing.assert_allclose(_backend.elementwise_derivative(plain, x), 1 - np.tanh(A) ** 2, rtol=1e-5, atol=1e-7)


def test_options_a_mode_would_ignore_fail_at_construction():
    # 0.3 accepted slope= in few-bit mode and ignored it.
    for slope in (0.5, {"d": 0.5}, "auto"):
        with pytest.raises(ValueError, match="`slope` applies to backprop='linear'"):
            keras_linbp.LinearizeOptions(backprop="few_bit", slope=slope)
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2)(keras.layers.Dense(4, activation="gelu", name="d")(inputs))
    with pytest.raises(ValueError, match="`slope` applies"):
        keras_linbp.LinearBackpropModel(inputs, outputs, backprop="few_bit", slope=0.5)
    model = keras_linbp.LinearBackpropModel(inputs, outputs, backprop="few_bit")
    # 0.3: `lm.bits = {"nope": 1}` failed only at the next step.
    with pytest.raises(ValueError, match="`bits` gives bits for \\['nope'\\]"):
        model.bits = {"nope": 1}
    assert model.bits == 2
    with pytest.raises(ValueError, match="`slope` applies"):
        model.slope = 0.5


def test_a_few_bit_model_with_no_table_warns_it_trains_exact():
    # 0.3 trained exact without the warning linear mode gives.
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2)(keras.layers.Dense(4, activation="mish", name="d")(inputs))
    model = keras_linbp.LinearBackpropModel(inputs, outputs, backprop="few_bit")
    model.compile("sgd", "mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(np.zeros((4, 3), "float32"), np.zeros((4, 2)), epochs=1, verbose=0)
    messages = [str(w.message) for w in caught if "applies to no activation site" in str(w.message)]
    assert messages and "no few-bit table for mish" in messages[0], [str(w.message) for w in caught]
