"""Gates the functional graph reaches through scalings (MobileNetV3's hard
sigmoid), `keras.ops.sigmoid` and `Lambda` gates, gates inside a custom
`call()` (said, not guessed), and recurrent cells kept exact by default
(`include_recurrent`)."""

import numpy as np
import pytest

import keras

import keras_linbp
from keras_linbp import sites as linbp_sites
from keras_linbp.models import LinearBackpropModel

pytestmark = pytest.mark.all_backends
sg = keras.ops.stop_gradient


def _linear(f):
    """The pass-through reference of the linear rule: forward `f`, gradient 1."""

    def g(x):
        return f(sg(x)) + (x - sg(x))

    return g


def _one_step(model, x, y):
    model.compile(
        keras.optimizers.SGD(0.5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def _assert_same(got, expected):
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# --- gates in a functional graph ------------------------------------------------


def _gated_model(hand=None, seed=0):
    """hidden tanh -> `ops.sigmoid` gate (Multiply layer) -> `Lambda` sigmoid
    gate (`*`) -> hard sigmoid `ReLU(6)(x + 3) / 6` gate (`*`) -> logits.

    `hand` maps "hidden" / "op" / "lambda" / "relu6" to a hand-written
    function replacing that activation (the reference models)."""
    hand = hand or {}
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(4, activation=hand.get("hidden", "tanh"), name="hidden")(inputs)
    g = keras.layers.Dense(4, name="pre_op")(h)
    g = hand["op"](g) if "op" in hand else keras.ops.sigmoid(g)
    h = keras.layers.Multiply(name="excite_op")([h, g])
    g = keras.layers.Dense(4, name="pre_lambda")(h)
    g = keras.layers.Lambda(hand.get("lambda", keras.ops.sigmoid), name="lambda_gate")(g)
    h = h * g
    g = keras.layers.Dense(4, name="pre_relu6")(h)
    relu6 = keras.layers.Lambda(hand["relu6"]) if "relu6" in hand else keras.layers.ReLU(6.0)
    g = relu6(g + 3.0) / 6.0
    h = h * g
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def _data(n=8, features=6):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, features)).astype("float32"), rng.integers(0, 3, size=n)


def test_op_lambda_and_scaled_relu6_gates_are_found():
    all_sites = linbp_sites.find_activation_sites(_gated_model())
    found = {s.activation_name: s.is_gate for s in all_sites}
    # The op node, the Lambda and the ReLU(6) feed products only (through
    # `+ 3` and `/ 6` for the last); the hidden tanh also feeds a Dense.
    assert found == {"tanh": False, "sigmoid": True, "relu6": True}
    gates = [s for s in linbp_sites.find_activation_sites(_gated_model()) if s.is_gate]
    assert len(gates) == 3 and all(s.gate_checked for s in gates)


def test_op_lambda_and_relu6_gates_stay_exact_by_default_and_linear_with_include_gates():
    x, y = _data()
    hidden = {"hidden": _linear(keras.activations.tanh)}
    exact_gates = _one_step(_gated_model(hand=hidden), x, y)
    linear_gates = _one_step(
        _gated_model(hand={
            **hidden,
            "op": _linear(keras.activations.sigmoid),
            "lambda": _linear(keras.activations.sigmoid),
            "relu6": _linear(keras.activations.relu6),
        }),
        x, y,
    )
    default = LinearBackpropModel.from_model(_gated_model())
    assert [s.path for s in default.linear_sites()] == ["hidden"]
    _assert_same(_one_step(default, x, y), exact_gates)
    with_gates = LinearBackpropModel.from_model(_gated_model(), include_gates=True)
    assert len(with_gates.linear_sites()) == 4
    _assert_same(_one_step(with_gates, x, y), linear_gates)
    # The two references differ, so the comparison tells the rules apart.
    assert any(not np.allclose(a, b) for a, b in zip(exact_gates, linear_gates))


def test_what_is_not_only_a_factor_is_no_gate():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(4, name="hidden")(inputs)
    # A Lambda whose output is more than the sigmoid (a residual).
    g = keras.layers.Lambda(lambda t: keras.ops.sigmoid(t) + t, name="residual")(h)
    h = h * g
    # 6 / relu6(a) is no scaling of the activation by a constant.
    g = 6.0 / (keras.layers.ReLU(6.0, name="divisor")(keras.layers.Dense(4)(h)) + 1.0)
    h = h * g
    # A product of the gate with itself only.
    g = keras.layers.Dense(4, activation="sigmoid", name="squared")(h)
    h = keras.layers.Dense(4)(g * g)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    found = {s.layer.name: (s.is_gate, s.gate_checked)
             for s in linbp_sites.find_activation_sites(model)}
    assert found == {"residual": (False, True), "divisor": (False, True),
                     "squared": (False, True)}


def test_mobilenet_v3_hard_sigmoid_gates_are_flagged_one_per_squeeze_excite_block():
    model = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    # The model's own structure: one Multiply per squeeze-and-excitation
    # block, fed by `ReLU(6)(x + 3) / 6` of the block's second conv.
    blocks = [layer.name[: -len("squeeze_excite_mul")] for layer in model.layers
              if isinstance(layer, keras.layers.Multiply)
              and layer.name.endswith("squeeze_excite_mul")]
    assert len(blocks) == 9
    all_sites = linbp_sites.find_activation_sites(model)
    gates = [s for s in all_sites if s.is_gate]
    assert len(gates) == len(blocks)
    assert all(isinstance(s.layer, keras.layers.ReLU) and s.activation_name == "relu6"
               for s in gates)
    rows = linbp_sites.explain_selection(all_sites)
    assert {site.path for site, chosen, reasons in rows if "gate" in reasons} == {
        s.path for s in gates}
    default = {s.path for s in linbp_sites.select_sites(all_sites)}
    with_gates = {s.path for s in linbp_sites.select_sites(all_sites, include_gates=True)}
    assert not default & {s.path for s in gates}
    assert with_gates == default | {s.path for s in gates}


class _CustomGate(keras.layers.Layer):
    """x * sigmoid(dense(x)) computed in its own call(): no graph node."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, name="inner")

    def call(self, x):
        return x * keras.ops.sigmoid(self.dense(x))


def test_a_gate_inside_a_custom_call_is_said_to_be_unchecked():
    inputs = keras.Input((4,))
    h = _CustomGate(name="custom")(keras.layers.Dense(4, activation="tanh", name="hidden")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    found = {s.path: (s.is_gate, s.gate_checked) for s in linbp_sites.find_activation_sites(model)}
    assert found == {"hidden": (False, True), "custom:sigmoid": (False, False)}
    rows = {row.site.path: row for row in keras_linbp.summary.site_rows(model)}
    assert rows["custom:sigmoid"].rule == "linear"
    assert keras_linbp.summary.UNCHECKED_GATE_NOTE in rows["custom:sigmoid"].note
    assert rows["hidden"].note == ""
    lines = []
    keras_linbp.linbp_summary(model, print_fn=lines.append)
    assert any("custom:sigmoid" in line and "not checked inside call()" in line for line in lines)


# --- recurrent cells ------------------------------------------------------------------


def _recurrent_model(hand=None, seed=0):
    """LSTM -> Bidirectional(GRU) -> SimpleRNN -> Dense(tanh) -> logits;
    `hand` maps "cell" to `(activation, recurrent_activation)` for every
    cell and "hidden" to the Dense's activation (the reference models)."""
    hand = hand or {}
    activation, recurrent = hand.get("cell", ("tanh", "sigmoid"))
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, 3))
    h = keras.layers.LSTM(4, activation=activation, recurrent_activation=recurrent,
                          return_sequences=True, name="lstm")(inputs)
    h = keras.layers.Bidirectional(
        keras.layers.GRU(3, activation=activation, recurrent_activation=recurrent,
                         return_sequences=True, name="gru"),
        name="bi",
    )(h)
    h = keras.layers.SimpleRNN(3, activation=activation, name="rnn")(h)
    h = keras.layers.Dense(4, activation=hand.get("hidden", "tanh"), name="hidden")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


_CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)


# Registered: `Bidirectional` rebuilds its backward half from the config.
@keras.saving.register_keras_serializable(package="sites_gates_recurrent_test")
def pass_through_tanh(x):
    return _linear(keras.activations.tanh)(x)


@keras.saving.register_keras_serializable(package="sites_gates_recurrent_test")
def pass_through_sigmoid(x):
    return _linear(keras.activations.sigmoid)(x)


def test_recurrent_sites_are_the_cells_activations_and_stay_exact_by_default():
    all_sites = linbp_sites.find_activation_sites(_recurrent_model())
    cell_sites = [s.path for s in all_sites if isinstance(s.layer, _CELLS)]
    # 2 of the LSTM cell, 2 of each GRU half, 1 of the SimpleRNN cell.
    assert len(cell_sites) == 7
    assert [s.path for s in all_sites if s.is_recurrent] == cell_sites
    rows = linbp_sites.explain_selection(all_sites)
    assert [site.path for site, _, reasons in rows if reasons == ["recurrent"]] == cell_sites
    assert [s.path for s in linbp_sites.select_sites(all_sites)] == ["hidden"]
    assert [s.path for s in linbp_sites.select_sites(all_sites, include_recurrent=True)] == (
        cell_sites + ["hidden"])
    # Naming a recurrent site in a list is asking for it; a regex is not naming.
    named = linbp_sites.select_sites(all_sites, sites=["lstm/lstm_cell:activation", "hidden"])
    assert [s.path for s in named] == ["lstm/lstm_cell:activation", "hidden"]
    assert [s.path for s in linbp_sites.select_sites(all_sites, sites="cell|hidden")] == ["hidden"]


def test_recurrent_cells_are_exact_by_default_and_linear_with_include_recurrent():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 5, 3)).astype("float32")
    y = rng.integers(0, 3, size=8)
    hidden = {"hidden": _linear(keras.activations.tanh)}
    exact_cells = _one_step(_recurrent_model(hand=hidden), x, y)
    linear_cells = _one_step(
        _recurrent_model(hand={
            **hidden,
            "cell": (pass_through_tanh, pass_through_sigmoid),
        }),
        x, y,
    )
    _assert_same(_one_step(LinearBackpropModel.from_model(_recurrent_model()), x, y), exact_cells)
    model = LinearBackpropModel.from_model(_recurrent_model(), include_recurrent=True)
    _assert_same(_one_step(model, x, y), linear_cells)
    assert any(not np.allclose(a, b) for a, b in zip(exact_cells, linear_cells))


def test_summary_config_and_calibration_follow_include_recurrent():
    model = LinearBackpropModel.from_model(_recurrent_model())
    rows = keras_linbp.summary.site_rows(model)
    assert {row.note for row in rows if row.site.is_recurrent} == {"recurrent"}
    restored = LinearBackpropModel.from_config(
        LinearBackpropModel.from_model(_recurrent_model(), include_recurrent=True).get_config()
    )
    assert restored.include_recurrent is True
    assert model.get_config()["include_recurrent"] is False
    x = np.random.default_rng(2).normal(size=(8, 5, 3)).astype("float32")
    assert list(keras_linbp.calibrate_slopes(_recurrent_model(), x)) == ["hidden"]
    calibrated = keras_linbp.calibrate_slopes(_recurrent_model(), x, include_recurrent=True)
    assert len(calibrated) == 8 and "lstm/lstm_cell:recurrent_activation" in calibrated
