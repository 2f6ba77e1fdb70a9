"""slope="auto" and per-site slope dicts, against numpy references."""

import os
import warnings

import numpy as np
import pytest

import keras
import tensorflow as tf

import keras_linbp
from keras_linbp.models import LinearBackpropModel


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(8, activation="relu", name="r")(inputs)
    h = keras.layers.Dense(8, activation="sigmoid", name="s")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, size=n)


def _numpy_slopes(model, x, statistic):
    w1, b1, w2, b2 = [v.numpy().astype(np.float64) for v in model.weights[:4]]
    a1 = x.astype(np.float64) @ w1 + b1
    d1 = (a1 > 0).astype(np.float64)
    a2 = np.maximum(a1, 0) @ w2 + b2
    s = 1 / (1 + np.exp(-a2))
    d2 = s * (1 - s)
    if statistic == "rms":
        return {"r": np.sqrt(np.mean(d1**2)), "s": np.sqrt(np.mean(d2**2))}
    return {"r": np.mean(d1), "s": np.mean(d2)}


@pytest.mark.parametrize("statistic", ["rms", "mean"])
def test_calibrated_slopes_equal_numpy(statistic):
    model = _mlp()
    x, _ = _data()
    got = keras_linbp.calibrate_slopes(model, x, statistic=statistic)
    expected = _numpy_slopes(model, x, statistic)
    assert set(got) == {"r", "s"}
    for path in expected:
        np.testing.assert_allclose(got[path], expected[path], rtol=1e-5)


def _assert_sgd_step_with_slopes(trained, plain, x, y, loss_fn, lr, slopes, rtol=1e-5, **options):
    """`trained`'s weights are `plain`'s after one SGD(`lr`) step under
    `linearize(plain, slope=slopes, **options)` (the float-slope rule, eager)."""
    with tf.GradientTape() as tape:
        with keras_linbp.linearize(plain, slope=dict(slopes), **options):
            loss = loss_fn(y, plain(x, training=True))
    grads = tape.gradient(loss, plain.trainable_variables)
    for v, w, g in zip(trained.trainable_variables, plain.trainable_variables, grads):
        np.testing.assert_allclose(v.numpy(), w.numpy() - lr * g.numpy(), rtol=rtol, atol=1e-6)


def _hand(f, slope):
    def g(x):
        return slope * x + tf.stop_gradient(f(x) - slope * x)

    return g


def test_slope_dict_gives_per_site_slopes():
    model = _mlp()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(8, activation=_hand(keras.activations.relu, 0.5), name="r")(inputs)
    h = keras.layers.Dense(8, activation=_hand(keras.activations.sigmoid, 1.0), name="s")(h)
    reference = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    reference.set_weights(model.get_weights())
    x, y = _data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def grads(m, **options):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            if options:
                with keras_linbp.linearize(m, **options):
                    loss = loss_fn(y, m(xt))
            else:
                loss = loss_fn(y, m(xt))
        return tape.gradient(loss, xt).numpy()

    np.testing.assert_allclose(
        grads(model, slope={"r": 0.5}), grads(reference), rtol=1e-5, atol=1e-7
    )


def test_auto_model_calibrates_in_fit_and_trains_with_those_slopes():
    x, y = _data()
    model = _mlp()
    initial = model.get_weights()
    linear = LinearBackpropModel.from_model(model, slope="auto", recalibrate="fit")
    linear.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    linear.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    expected_slopes = _numpy_slopes(_restored(initial), x, "rms")
    for path, value in expected_slopes.items():
        np.testing.assert_allclose(linear.calibrated_slopes[path], value, rtol=1e-5)
        site = next(s for s in linear.linear_sites() if s.path == path)
        assert linear.site_slope(site) == linear.calibrated_slopes[path]
    # The step used them: same update as linearize with the same dict.
    plain = _restored(initial)
    plain.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _assert_sgd_step_with_slopes(linear, plain, x, y, loss_fn, 0.1, linear.calibrated_slopes)
    lines = []
    linear.linbp_summary(print_fn=lines.append)
    assert "slope=auto" in lines[0]
    assert f"{linear.calibrated_slopes['r']:g}" in next(line for line in lines if line.startswith("1 "))


def _restored(weights):
    model = _mlp()
    model.set_weights(weights)
    return model


def test_auto_mode_and_slopes_survive_save_and_load(tmp_path):
    x, y = _data()
    linear = LinearBackpropModel.from_model(_mlp(), slope="auto")
    linear.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    linear.fit(x, y, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "auto.keras")
    linear.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.slope == "auto" and loaded.recalibrate == "epoch"
    assert loaded.calibrated_slopes == pytest.approx(linear.calibrated_slopes)


def test_auto_needs_a_batch_it_can_read():
    linear = LinearBackpropModel.from_model(_mlp(), slope="auto")
    linear.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()

    def generator():
        while True:
            yield x, y

    with pytest.raises(ValueError, match="calibrate_slopes"):
        linear.fit(generator(), steps_per_epoch=1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="calibrate_slopes"):
        linear.train_on_batch(x, y)
    linear.calibrate_slopes(x)
    linear.fit(generator(), steps_per_epoch=1, epochs=1, verbose=0)


def _deep_bn_sigmoid_net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = inputs
    for _ in range(16):
        h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Activation("sigmoid")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def test_deep_bn_net_diverges_at_slope_1_and_trains_with_auto():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:128] / 16.0).astype("float32")[..., None]
    y = digits.target[:128]
    losses = {}
    for slope in (1.0, "auto"):
        model = LinearBackpropModel.from_model(_deep_bn_sigmoid_net(), slope=slope)
        model.compile(
            keras.optimizers.SGD(0.1, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
        losses[slope] = history.history["loss"]
    assert not np.all(np.isfinite(losses[1.0])), losses
    assert np.all(np.isfinite(losses["auto"])) and losses["auto"][-1] < losses["auto"][0], losses


def test_recalibrated_slopes_take_effect_without_retracing_the_step():
    """TensorFlow reads the "auto" slopes from variables: each epoch's new
    slopes drive that epoch's step, and the step is traced once."""
    x, y = _data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    linear = LinearBackpropModel.from_model(_mlp(), slope="auto")
    linear.compile(keras.optimizers.SGD(0.5), loss_fn)

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_begin(self, epoch, logs=None):
            # Runs after the model's own recalibration at this epoch.
            self.seen.append((dict(self.model.calibrated_slopes), self.model.get_weights()))

    # In a traced step train_step's Python body runs once per trace.
    traces = []
    step = linear.train_step
    linear.train_step = lambda *args, **kwargs: traces.append(1) or step(*args, **kwargs)
    record = Record()
    linear.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False, callbacks=[record])
    slopes_2, weights_2 = record.seen[2]
    assert slopes_2 != record.seen[0][0]  # the weights moved, so did the slopes
    assert len(traces) == 1
    plain = _restored(weights_2)
    _assert_sgd_step_with_slopes(linear, plain, x, y, loss_fn, 0.5, slopes_2)


def test_summary_before_calibration_says_auto_not_a_number():
    linear = LinearBackpropModel.from_model(_mlp(), slope="auto")
    lines = []
    linear.linbp_summary(print_fn=lines.append)
    site_line = next(line for line in lines if line.startswith("1 "))
    assert "linear  auto" in site_line


def test_auto_slopes_inside_an_rnn_loop():
    """An LSTM cell's sites run inside TF's while loop; the traced step
    reads the slope variables outside it (the loop's gradient could not
    capture them) and matches the float-slope rule."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5, 3)).astype("float32")
    y = rng.integers(0, 2, size=16)

    def build():
        keras.backend.clear_session()  # the same layer names, so the same site paths
        keras.utils.set_random_seed(0)
        inputs = keras.Input((5, 3))
        return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.LSTM(4)(inputs)))

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    linear = LinearBackpropModel.from_model(
        build(), slope="auto", recalibrate="fit", include_recurrent=True
    )
    linear.compile(keras.optimizers.SGD(0.5), loss_fn)
    linear.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert len(linear.calibrated_slopes) == 2  # the cell's activation and its gates
    plain = build()
    assert {s.path for s in keras_linbp.sites.find_activation_sites(plain)} == set(
        linear.calibrated_slopes
    )
    _assert_sgd_step_with_slopes(
        linear, plain, x, y, loss_fn, 0.5, linear.calibrated_slopes, rtol=1e-4, include_recurrent=True
    )


def test_a_slope_dict_naming_no_site_is_an_error():
    model = _mlp()
    x, _ = _data()
    with pytest.raises(ValueError, match=r"slopes for \['nope'\].*Site paths: \['r', 's'\]"):
        with keras_linbp.linearize(model, slope={"r": 0.5, "nope": 0.2}):
            model(x)
    with pytest.raises(ValueError, match=r"slopes for \['nope'\]"):
        LinearBackpropModel.from_model(_mlp(), slope={"nope": 0.2})


def test_switching_to_auto_uses_the_slopes_calibrated_before():
    x, y = _data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _mlp()
    initial = model.get_weights()
    linear = LinearBackpropModel.from_model(model, slope=1.0)
    slopes = linear.calibrate_slopes(x)
    linear.slope = "auto"
    linear.recalibrate = "never"  # keep the slopes calibrated above
    linear.compile(keras.optimizers.SGD(0.5), loss_fn)
    linear.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    _assert_sgd_step_with_slopes(linear, _restored(initial), x, y, loss_fn, 0.5, slopes)
