"""LinearBackpropModel: one training step against a numpy reference of the
paper's Algorithm 2 (`g <- g` at hidden activations), against numpy
backprop, and against plain Keras models with hand-placed `linbp_*`
activations; plus Keras's train_step contract, schedules and errors."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from keras_linbp import activations as linbp_activations
from keras_linbp.callbacks import BackpropSchedule
from keras_linbp.models import LinearBackpropModel

LR = 0.5
SIZES = (4, 5, 3, 2)  # input, hidden sigmoid, hidden tanh, output sigmoid


# --- numpy reference ---------------------------------------------------------


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _init_weights(seed=0):
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        weights.append(rng.normal(0.0, 0.8, (fan_in, fan_out)))
        weights.append(rng.normal(0.0, 0.2, (fan_out,)))
    return weights


def _data(n=8, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, SIZES[0])).astype("float32")
    y = rng.uniform(size=(n, SIZES[-1])).astype("float32")
    return x, y


def _numpy_forward(weights, x):
    w1, b1, w2, b2, w3, b3 = [np.asarray(w, np.float64) for w in weights]
    h1 = _sigmoid(x @ w1 + b1)
    h2 = np.tanh(h1 @ w2 + b2)
    return h1, h2, _sigmoid(h2 @ w3 + b3)


def _numpy_gradients(weights, x, y, rules, sample_weight=None, l2=0.0):
    """Gradients of Keras's MSE (mean over outputs, sum over batch / N).

    `rules` gives the backward rule of the three activations (hidden 1,
    hidden 2, output): "linear" (`g <- g`, Algorithm 2) or "exact"
    (`g <- g * f'(a)`).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w1, b1, w2, b2, w3, b3 = [np.asarray(w, np.float64) for w in weights]
    h1, h2, p = _numpy_forward(weights, x)
    n, outputs = y.shape
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    g = 2.0 * (p - y) / (n * outputs) * sw[:, None]
    if rules[2] == "exact":
        g = g * p * (1.0 - p)
    grads3 = (h2.T @ g, g.sum(0))
    g = g @ w3.T
    if rules[1] == "exact":
        g = g * (1.0 - h2**2)
    grads2 = (h1.T @ g, g.sum(0))
    g = g @ w2.T
    if rules[0] == "exact":
        g = g * h1 * (1.0 - h1)
    grads1 = (x.T @ g + 2.0 * l2 * w1, g.sum(0))
    return [*grads1, *grads2, *grads3]


def _numpy_sgd_step(weights, x, y, rules, lr=LR, **kwargs):
    grads = _numpy_gradients(weights, x, y, rules, **kwargs)
    return [np.asarray(w, np.float64) - lr * g for w, g in zip(weights, grads)]


LINEAR = ("linear", "linear", "exact")
EXACT = ("exact", "exact", "exact")


# --- models ------------------------------------------------------------------


def _mlp_layers(activations=("sigmoid", "tanh", "sigmoid"), kernel_regularizer=None):
    inputs = keras.Input((SIZES[0],))
    h = keras.layers.Dense(
        SIZES[1], activation=activations[0], kernel_regularizer=kernel_regularizer, name="hidden_1"
    )(inputs)
    h = keras.layers.Dense(SIZES[2], activation=activations[1], name="hidden_2")(h)
    outputs = keras.layers.Dense(SIZES[3], activation=activations[2], name="output")(h)
    return inputs, outputs


def _mlp(weights, **options):
    model = LinearBackpropModel(*_mlp_layers(), **options)
    model.set_weights(weights)
    return model


def _assert_weights(model, expected, atol=1e-5):
    for actual, wanted in zip(model.get_weights(), expected):
        np.testing.assert_allclose(actual, wanted, atol=atol, rtol=0)


def _compile(model, mode="graph", optimizer=None, **kwargs):
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(LR),
        loss="mse",
        run_eagerly=mode == "eager",
        jit_compile={"eager": False, "graph": False, "xla": True, "auto": "auto"}[mode],
        **kwargs,
    )
    return model


# --- Algorithm 2 against numpy -----------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "graph", "xla", "auto"])
def test_linear_step_equals_numpy_algorithm_2(mode):
    weights = _init_weights()
    x, y = _data()
    sample_weight = np.array([0.0, 1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.25], "float32")

    model = _compile(_mlp(weights), mode)
    model.train_on_batch(x, y)
    expected = _numpy_sgd_step(weights, x, y, LINEAR)
    _assert_weights(model, expected)
    # The reference is not trivially close to exact backprop.
    exact = _numpy_sgd_step(weights, x, y, EXACT)
    assert max(np.abs(a - b).max() for a, b in zip(expected, exact)) > 1e-3

    model.set_weights(weights)
    model.train_on_batch(x, y, sample_weight=sample_weight)
    _assert_weights(model, _numpy_sgd_step(weights, x, y, LINEAR, sample_weight=sample_weight))


def test_exact_equals_numpy_backprop_and_plain_keras_model():
    weights = _init_weights()
    x, y = _data()
    model = _compile(_mlp(weights, backprop="exact"))
    model.train_on_batch(x, y)
    _assert_weights(model, _numpy_sgd_step(weights, x, y, EXACT))

    plain = keras.Model(*_mlp_layers())
    plain.set_weights(weights)
    _compile(plain).train_on_batch(x, y)
    for ours, theirs in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_from_depth_and_include_output_select_sites():
    weights = _init_weights()
    x, y = _data()
    model = _compile(_mlp(weights, from_depth=2))
    assert [s.path for s in model.linear_sites()] == ["hidden_2"]
    model.train_on_batch(x, y)
    _assert_weights(model, _numpy_sgd_step(weights, x, y, ("exact", "linear", "exact")))

    model = _compile(_mlp(weights, include_output=True))
    model.train_on_batch(x, y)
    _assert_weights(model, _numpy_sgd_step(weights, x, y, ("linear", "linear", "linear")))

    model = _compile(_mlp(weights, sites=["hidden_1"]))
    model.train_on_batch(x, y)
    _assert_weights(model, _numpy_sgd_step(weights, x, y, ("linear", "exact", "exact")))


def test_slope_scales_hidden_gradients():
    weights = _init_weights()
    x, y = _data()
    model = _compile(_mlp(weights, slope=0.5))
    model.train_on_batch(x, y)
    # slope 0.5 at both hidden sites: the output layer's gradient is
    # unchanged, hidden_2's is halved and hidden_1's quartered.
    grads = _numpy_gradients(weights, x, y, LINEAR)
    factors = [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    expected = [w - LR * f * g for w, g, f in zip(weights, grads, factors)]
    _assert_weights(model, expected)


# --- switching the rule --------------------------------------------------------


def test_setting_backprop_takes_effect_at_next_train_on_batch():
    weights = _init_weights()
    x, y = _data()
    model = _compile(_mlp(weights))
    model.train_on_batch(x, y)
    expected = _numpy_sgd_step(weights, x, y, LINEAR)
    model.backprop = "exact"
    model.train_on_batch(x, y)
    expected = _numpy_sgd_step(expected, x, y, EXACT)
    model.backprop = "linear"
    model.train_on_batch(x, y)
    expected = _numpy_sgd_step(expected, x, y, LINEAR)
    _assert_weights(model, expected)
    # predict / evaluate are the plain forward.
    np.testing.assert_allclose(model.predict(x, verbose=0), _numpy_forward(expected, x)[2], atol=1e-5)


@pytest.mark.parametrize(
    "schedule, rules",
    [
        (1, [LINEAR, EXACT, EXACT]),
        (lambda epoch: "exact" if epoch == 1 else "linear", [LINEAR, EXACT, LINEAR]),
    ],
    ids=["int", "callable"],
)
def test_backprop_schedule_switches_by_epoch_under_fit(schedule, rules):
    weights = _init_weights()
    x, y = _data()
    model = _compile(_mlp(weights))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(model.backprop)
    )
    model.fit(
        x, y, batch_size=len(x), epochs=3, shuffle=False, verbose=0,
        callbacks=[BackpropSchedule(schedule), record],
    )
    expected = weights
    for epoch_rules in rules:
        expected = _numpy_sgd_step(expected, x, y, epoch_rules)
    _assert_weights(model, expected)
    assert seen == ["linear" if r == LINEAR else "exact" for r in rules]


# --- Keras's train_step contract -----------------------------------------------


def test_class_weight_regularizer_metrics_and_clipnorm():
    weights = _init_weights()
    x, _ = _data()
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    y = np.eye(2, dtype="float32")[labels]
    class_weight = {0: 0.5, 1: 2.0}
    l2 = 0.01
    model = LinearBackpropModel(*_mlp_layers(kernel_regularizer=keras.regularizers.L2(l2)))
    model.set_weights(weights)
    _compile(model, metrics=["mae"])
    logs = model.train_on_batch(x, y, class_weight=class_weight, return_dict=True)
    sample_weight = np.array([class_weight[c] for c in labels])
    _assert_weights(
        model, _numpy_sgd_step(weights, x, y, LINEAR, sample_weight=sample_weight, l2=l2)
    )
    prediction = _numpy_forward(weights, x)[2]
    np.testing.assert_allclose(logs["mae"], np.abs(prediction - y).mean(), atol=1e-5)
    data_loss = (((prediction - y) ** 2).mean(-1) * sample_weight).mean()
    np.testing.assert_allclose(logs["loss"], data_loss + l2 * (weights[0] ** 2).sum(), atol=1e-5)

    # The optimizer's per-variable gradient clipping is Keras's own.
    clipnorm = 0.05
    model = _compile(_mlp(weights), optimizer=keras.optimizers.SGD(LR, clipnorm=clipnorm))
    model.train_on_batch(x, y)
    grads = _numpy_gradients(weights, x, y, LINEAR)
    clipped = [g * min(1.0, clipnorm / np.linalg.norm(g)) for g in grads]
    assert any(np.linalg.norm(g) > clipnorm for g in grads)
    _assert_weights(model, [w - LR * g for w, g in zip(weights, clipped)])


def test_steps_per_execution_runs_every_step_linearly():
    weights = _init_weights()
    x, y = _data(n=16)
    model = _compile(_mlp(weights), steps_per_execution=2)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    expected = weights
    for start in range(0, 16, 4):
        expected = _numpy_sgd_step(expected, x[start : start + 4], y[start : start + 4], LINEAR)
    _assert_weights(model, expected)


def _two_io_layers(linbp):
    """Two inputs, a nested Sequential block, two outputs."""
    act = (lambda name: linbp_activations.LINBP_FUNCTIONS[name]) if linbp else (lambda name: name)
    leaky = (
        keras.layers.Activation(linbp_activations.linbp_leaky_relu, name="leaky")
        if linbp
        else keras.layers.LeakyReLU(negative_slope=0.2, name="leaky")
    )
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    block = keras.Sequential(
        [
            keras.layers.Dense(6, activation=act("tanh"), name="block_dense"),
            keras.layers.Dense(6, name="block_pre"),
            leaky,
        ],
        name="block",
    )
    h = block(keras.layers.Concatenate()([a, b]))
    h = keras.layers.Dense(5, name="pre_elu")(h)
    h = keras.layers.Activation(act("elu"), name="elu")(h)
    out_1 = keras.layers.Dense(2, activation="sigmoid", name="out_1")(h)
    out_2 = keras.layers.Dense(1, name="out_2")(h)
    return [a, b], [out_1, out_2]


def test_multi_io_nested_model_equals_hand_placed_linbp_activations():
    if not np.isclose(keras.activations.leaky_relu(np.float32(-1.0)), -0.2):
        pytest.skip("keras leaky_relu default slope changed")
    rng = np.random.default_rng(3)
    x = [rng.normal(size=(6, 3)).astype("float32"), rng.normal(size=(6, 2)).astype("float32")]
    y = [rng.uniform(size=(6, 2)).astype("float32"), rng.normal(size=(6, 1)).astype("float32")]

    model = LinearBackpropModel(*_two_io_layers(linbp=False))
    initial = model.get_weights()
    reference = keras.Model(*_two_io_layers(linbp=True))
    plain = keras.Model(*_two_io_layers(linbp=False))
    assert {s.path for s in model.linear_sites()} == {"block/block_dense", "block/leaky", "elu"}
    for m in (model, reference, plain):
        m.set_weights(initial)
        m.compile(
            optimizer=keras.optimizers.SGD(0.3),
            loss=["mse", "mae"],
            loss_weights=[1.0, 0.5],
        )
        m.train_on_batch(x, y, sample_weight=[np.arange(6.0), np.ones(6)])
        m.train_on_batch(x, y)
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    # ...and linear backprop did change the trajectory.
    difference = max(
        np.abs(a - b).max() for a, b in zip(model.get_weights(), plain.get_weights())
    )
    assert difference > 1e-3


def test_conv_batchnorm_relu_trains_under_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = (x[:, 2:6, 2:6, 0].mean(axis=(1, 2)) > 0).astype("float32")
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = LinearBackpropModel(inputs, outputs)
    assert len(model.linear_sites()) == 2
    model.compile(keras.optimizers.Adam(0.03), "binary_crossentropy", metrics=["accuracy"])
    moving_mean = model.layers[2].moving_mean.numpy().copy()
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    assert not np.allclose(model.layers[2].moving_mean.numpy(), moving_mean)


class SubclassedMLP(LinearBackpropModel):
    """The reference MLP written as a subclassed LinearBackpropModel."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden_1 = keras.layers.Dense(SIZES[1], activation="sigmoid")
        self.hidden_2 = keras.layers.Dense(SIZES[2], activation="tanh")
        self.head = keras.layers.Dense(SIZES[3], activation="sigmoid")

    def call(self, inputs):
        return self.head(self.hidden_2(self.hidden_1(inputs)))


def test_subclassed_and_from_model_wrappers_train_linearly_and_share_weights():
    weights = _init_weights()
    x, y = _data()
    expected = _numpy_sgd_step(weights, x, y, LINEAR)

    subclassed = SubclassedMLP()
    subclassed(x)
    subclassed.set_weights(weights)
    assert [s.is_output for s in subclassed.activation_sites()] == [False, False, True]
    _compile(subclassed).train_on_batch(x, y)
    _assert_weights(subclassed, expected)

    sequential = keras.Sequential(
        [keras.Input((SIZES[0],))]
        + [keras.layers.Dense(n, activation=a) for n, a in zip(SIZES[1:], ("sigmoid", "tanh", "sigmoid"))]
    )
    plain_subclassed = PlainSubclassedMLP()
    plain_subclassed(x)
    for inner in (keras.Model(*_mlp_layers()), sequential, plain_subclassed):
        inner.set_weights(weights)
        wrapped = LinearBackpropModel.from_model(inner)
        assert len(wrapped.linear_sites()) == 2
        _compile(wrapped).train_on_batch(x, y)
        # No copies: the wrapped model's own variables were trained.
        _assert_weights(inner, expected)


class PlainSubclassedMLP(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden_1 = keras.layers.Dense(SIZES[1], activation="sigmoid")
        self.hidden_2 = keras.layers.Dense(SIZES[2], activation="tanh")
        self.head = keras.layers.Dense(SIZES[3], activation="sigmoid")

    def call(self, inputs):
        return self.head(self.hidden_2(self.hidden_1(inputs)))


# --- summary and errors ----------------------------------------------------------


class CustomReLUBlock(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3)

    def call(self, inputs):
        return keras.ops.relu(self.dense(inputs))


class DirectTFBlock(keras.layers.Layer):
    """Applies tanh through TensorFlow directly: no Keras plugin reaches it."""

    def call(self, inputs):
        return tf.math.tanh(inputs)


def test_linbp_summary_lists_sites_rules_and_unreachable_activations():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(5, activation="relu", name="first")(inputs)
    h = CustomReLUBlock(name="custom")(h)
    h = DirectTFBlock(name="direct")(h)
    h = keras.layers.Dense(3, activation=linbp_activations.linbp_tanh, name="fixed")(h)
    h = keras.layers.Dense(3, activation="sigmoid", name="late")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="probs")(h)
    model = LinearBackpropModel(inputs, outputs, sites=["first", "late", "custom"], from_depth=3)
    lines = []
    model.linbp_summary(print_fn=lines.append)
    text = "\n".join(lines)
    rows = {line.split()[1]: line for line in lines if line[:1].isdigit()}
    # The relu computed inside CustomReLUBlock.call() is an op site of its own.
    assert list(rows) == ["first", "custom:relu", "fixed", "late", "probs"]
    assert " op " in rows["custom:relu"] and "before from_depth=3" in rows["custom:relu"]
    assert " exact " in rows["first"] and "before from_depth=3" in rows["first"]
    assert "linear-fixed" in rows["fixed"]
    assert " linear " in rows["late"]
    assert "output layer" in rows["probs"] and "softmax" in rows["probs"]
    # Only the direct tf.math.tanh is listed as unreachable.
    unreached = text.split("Not converted")[1].strip().splitlines()[1:]
    assert len(unreached) == 1 and "direct" in unreached[0] and "Tanh" in unreached[0]
    model.backprop = "exact"
    lines.clear()
    model.linbp_summary(print_fn=lines.append)
    assert "1 of 5" in lines[0]  # the fixed site stays linear


def test_errors_name_the_problem():
    weights = _init_weights()
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        LinearBackpropModel.from_model(unbuilt)
    with pytest.raises(ValueError, match="Unknown `backprop` value 'fast'"):
        LinearBackpropModel(*_mlp_layers(), backprop="fast")
    model = _mlp(weights)
    with pytest.raises(ValueError, match="Unknown `backprop`"):
        model.backprop = "approximate"
    with pytest.raises(ValueError, match=r"'missing'.*hidden_1.*hidden_2.*output"):
        LinearBackpropModel(*_mlp_layers(), sites=["hidden_1", "missing"])
    plain = keras.Model(*_mlp_layers())
    plain.compile("sgd", "mse")
    x, y = _data()
    with pytest.raises(ValueError, match="needs a keras_linbp.LinearBackpropModel"):
        plain.fit(x, y, verbose=0, callbacks=[BackpropSchedule(1)])
    with pytest.raises(ValueError, match="schedule"):
        BackpropSchedule("linear")
