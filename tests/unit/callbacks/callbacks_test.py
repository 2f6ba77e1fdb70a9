"""`SaturationHistograms` and `GradientFlow`: the event files are read back
with TensorBoard's own reader and the values compared with references
computed independently (numpy, `tf.GradientTape` on hand-written forward
passes, identity backward written with `tf.stop_gradient`)."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import keras_linbp
from keras_linbp.callbacks import GradientFlow
from keras_linbp.callbacks import SaturationHistograms

RNG = np.random.default_rng(7)


def read_run(log_dir):
    """`{tag: {step: ndarray}}` of every TF2 summary in `<log_dir>/train`."""
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(log_dir, "train"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: {e.step: tf.make_ndarray(e.tensor_proto) for e in accumulator.Tensors(tag)}
        for tag in accumulator.Tags()[event_accumulator.TENSORS]
    }


def scalar(run, tag, step=0):
    return float(run[tag][step])


def histogram(run, tag, step=0):
    """TensorBoard's v2 histogram tensor: rows of (left, right, count)."""
    return np.asarray(run[tag][step], dtype=np.float64)


def frozen_fit(model, x, y, callbacks, **kwargs):
    """One epoch with a zero learning rate: the weights the probe sees are
    the weights the references read afterwards."""
    model.compile(keras.optimizers.SGD(learning_rate=0.0), "sparse_categorical_crossentropy")
    kwargs.setdefault("batch_size", 16)
    model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks, shuffle=False, **kwargs)


def saturation_model():
    inputs = keras.Input((8,))
    small = keras.initializers.RandomNormal(stddev=0.01, seed=1)
    saturated = keras.layers.Dense(
        16, activation="sigmoid", kernel_initializer=small,
        bias_initializer=keras.initializers.Constant(20.0), name="saturated_sigmoid",
    )(inputs)
    dead = keras.layers.Dense(
        16, activation="relu", kernel_initializer=small,
        bias_initializer=keras.initializers.Constant(-100.0), name="dead_relu",
    )(inputs)
    linear_regime = keras.layers.Dense(
        16, activation="tanh", kernel_initializer=keras.initializers.RandomNormal(stddev=0.05, seed=2),
        name="linear_tanh",
    )(inputs)
    mixed = keras.layers.Dense(
        16, activation="tanh", kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=3),
        name="mixed_tanh",
    )(inputs)
    merged = keras.layers.Concatenate()([saturated, dead, linear_regime, mixed])
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(merged)
    return keras.Model(inputs, outputs)


def pre_activation(model, name, x):
    layer = model.get_layer(name)
    return x @ layer.kernel.numpy() + layer.bias.numpy()


def test_saturation_fractions_against_numpy(tmp_path):
    x = RNG.standard_normal((64, 8)).astype("float32")
    y = RNG.integers(0, 3, 64)
    model = saturation_model()
    frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path), data=x)])
    run = read_run(str(tmp_path))

    assert scalar(run, "saturation/saturated_sigmoid/saturated_fraction") >= 0.95
    assert scalar(run, "saturation/dead_relu/dead_fraction") >= 0.95
    assert scalar(run, "saturation/linear_tanh/saturated_fraction") <= 0.05
    # The mixed layer: compare with numpy at the documented default
    # threshold, |tanh'(a)| < 0.1 * 1.
    a = pre_activation(model, "mixed_tanh", x)
    expected = np.mean(1.0 - np.tanh(a) ** 2 < 0.1)
    assert 0.1 < expected < 0.9
    assert scalar(run, "saturation/mixed_tanh/saturated_fraction") == pytest.approx(expected, abs=1e-6)
    assert scalar(run, "saturation/mixed_tanh/mean_abs_pre_activation") == pytest.approx(
        np.mean(np.abs(a)), rel=1e-5
    )
    assert scalar(run, "saturation/mixed_tanh/nonfinite") == 0
    # Rectifiers have no saturated_fraction, bounded units no dead_fraction.
    assert "saturation/dead_relu/saturated_fraction" not in run
    assert "saturation/mixed_tanh/dead_fraction" not in run
    # Histograms: every unit of the probe batch, derivative in [0, max|f'|].
    for name in ("pre_activation", "activation", "derivative"):
        buckets = histogram(run, f"activations/mixed_tanh/{name}")
        assert buckets[:, 2].sum() == x.shape[0] * 16
    derivative = histogram(run, "activations/mixed_tanh/derivative")
    assert derivative[:, 0].min() >= np.min(1.0 - np.tanh(a) ** 2) - 1e-6
    assert derivative[:, 1].max() <= 1.0 + 1e-6
    # Softmax output: histograms of a and f(a), no derivative.
    assert "activations/out/activation" in run
    assert "activations/out/derivative" not in run
    # The image as TensorBoard's image plugin reads it: width, height, PNG.
    width, height, png = run["activations/histogram_grid"][0]
    pixels = tf.io.decode_png(png).numpy()
    assert pixels.shape[:2] == (int(height), int(width)) and pixels.std() > 0


def test_nonfinite_pre_activations_are_counted_not_histogrammed(tmp_path):
    x = RNG.standard_normal((32, 8)).astype("float32")
    x[3, 0] = np.nan
    x[7, 2] = np.inf
    y = RNG.integers(0, 3, 32)
    model = saturation_model()
    frozen_fit(model, np.nan_to_num(x), y, [SaturationHistograms(str(tmp_path), data=x)])
    run = read_run(str(tmp_path))
    a = pre_activation(model, "mixed_tanh", x)
    nonfinite = int(np.sum(~np.isfinite(a)))
    assert nonfinite == 32  # two rows of 16 units
    assert scalar(run, "saturation/mixed_tanh/nonfinite") == nonfinite
    finite = a[np.isfinite(a)]
    assert scalar(run, "saturation/mixed_tanh/saturated_fraction") == pytest.approx(
        np.mean(1.0 - np.tanh(finite) ** 2 < 0.1), abs=1e-6
    )
    for tag, steps in run.items():
        if tag.startswith("activations/") and tag != "activations/histogram_grid":
            buckets = np.asarray(steps[0], dtype=np.float64)
            assert np.all(np.isfinite(buckets)), tag
            units = 3 if tag.startswith("activations/out/") else 16
            assert buckets[:, 2].sum() == (32 - 2) * units, tag


def test_sites_selects_by_name_and_missing_name_raises(tmp_path):
    x = RNG.standard_normal((16, 8)).astype("float32")
    y = RNG.integers(0, 3, 16)
    model = saturation_model()
    frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path), data=x, sites=["dead_relu"])])
    layers = {tag.split("/")[1] for tag in read_run(str(tmp_path)) if tag.startswith("saturation/")}
    assert layers == {"dead_relu"}
    with pytest.raises(ValueError, match="no_such_layer"):
        frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path), data=x, sites=["no_such_layer"])])


class CountBatches(keras.callbacks.Callback):
    batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        CountBatches.batches += 1


def test_unwritable_log_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    x = RNG.standard_normal((16, 8)).astype("float32")
    y = RNG.integers(0, 3, 16)
    CountBatches.batches = 0
    for callback in (SaturationHistograms, GradientFlow):
        with pytest.raises(PermissionError, match="a_file"):
            frozen_fit(saturation_model(), x, y, [callback(str(blocker / "logs"), data=(x, y)), CountBatches()])
    assert CountBatches.batches == 0


def test_model_without_sites_warns_once(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = RNG.standard_normal((16, 4)).astype("float32")
    y = RNG.integers(0, 3, 16)
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, verbose=0, callbacks=[SaturationHistograms(str(tmp_path), data=x)])
    messages = [str(w.message) for w in caught if "activation sites" in str(w.message)]
    assert len(messages) == 1
    assert not any(t.startswith("saturation/") for t in read_run(str(tmp_path)))


def gradient_flow_model():
    inputs = keras.Input((6,))
    a1 = keras.layers.Dense(8, name="d1", kernel_initializer=keras.initializers.RandomNormal(stddev=1.5, seed=4))(inputs)
    h1 = keras_linbp.layers.LinearBackprop("sigmoid", name="lb")(a1)
    h2 = keras.layers.Dense(8, activation="tanh", name="d2",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=1.5, seed=5))(h1)
    h3 = keras.layers.Activation("tanh", name="act")(h2)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(h3)
    return keras.Model(inputs, outputs)


def reference_gradients(model, x, y, linear, slope=1.0):
    """Hand-written forward pass. `linear=True`: backward `slope * g`
    through the activations the default selection converts (d2, act -- not
    the output) and `g` through the LinearBackprop layer (lb), written as
    `slope * a + stop_gradient(f(a) - slope * a)`."""

    def activation(fn, a, slope=slope):
        return slope * a + tf.stop_gradient(fn(a) - slope * a) if linear else fn(a)

    d1, d2, out = (model.get_layer(n) for n in ("d1", "d2", "out"))
    with tf.GradientTape(persistent=True) as tape:
        a1 = tf.constant(x) @ d1.kernel + d1.bias
        tape.watch(a1)
        h1 = activation(tf.sigmoid, a1, slope=1.0)
        h2 = activation(tf.tanh, h1 @ d2.kernel + d2.bias)
        tape.watch(h2)
        h3 = activation(tf.tanh, h2)
        probabilities = tf.nn.softmax(h3 @ out.kernel + out.bias)
        picked = tf.gather(probabilities, y, axis=1, batch_dims=1)
        loss = -tf.reduce_mean(tf.math.log(picked))
    return {
        # LinearBackprop and Activation layers have no kernel: their input.
        "lb": float(tf.norm(tape.gradient(loss, a1))),
        "d2": float(tf.norm(tape.gradient(loss, d2.kernel))),
        "act": float(tf.norm(tape.gradient(loss, h2))),
        "out": float(tf.norm(tape.gradient(loss, out.kernel))),
    }


def test_gradient_flow_exact_and_linear_norms(tmp_path):
    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.integers(0, 3, 32)
    model = gradient_flow_model()
    frozen_fit(model, x, y, [GradientFlow(str(tmp_path), data=(x, y)),
                             SaturationHistograms(str(tmp_path), data=x, image=False)])
    run = read_run(str(tmp_path))
    exact = reference_gradients(model, x, y, linear=False)
    linear = reference_gradients(model, x, y, linear=True)
    for layer in ("lb", "d2", "act", "out"):
        assert scalar(run, f"gradient_flow/{layer}/exact_norm") == pytest.approx(exact[layer], rel=1e-4)
        assert scalar(run, f"gradient_flow/{layer}/linear_norm") == pytest.approx(linear[layer], rel=1e-4)
        counts = histogram(run, f"gradient_flow/{layer}/exact_gradient")[:, 2]
        assert counts.sum() > 0
    # The rules differ where an activation sits between loss and layer.
    assert exact["lb"] != pytest.approx(linear["lb"], rel=1e-2)
    # The LinearBackprop layer's derivative histogram is sigmoid's real one
    # (<= 1/4), not the 1 its linear backward pass would give.
    derivative = histogram(run, "activations/lb/derivative")
    assert derivative[:, 1].max() <= 0.25 + 1e-6
    # The probe used the (32-example) data given, not a training batch.
    assert histogram(run, "activations/lb/pre_activation")[:, 2].sum() == 32 * 8


def test_gradient_flow_uses_a_linear_backprop_models_own_rule(tmp_path):
    from keras_linbp.models import LinearBackpropModel

    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.integers(0, 3, 32)
    model = LinearBackpropModel.from_model(gradient_flow_model(), slope=0.5)
    frozen_fit(model, x, y, [GradientFlow(str(tmp_path), data=(x, y)),
                             SaturationHistograms(str(tmp_path), data=x, image=False)])
    run = read_run(str(tmp_path))
    exact = reference_gradients(model, x, y, linear=False)
    linear = reference_gradients(model, x, y, linear=True, slope=0.5)
    for layer in ("lb", "d2", "act", "out"):
        assert scalar(run, f"gradient_flow/{layer}/exact_norm") == pytest.approx(exact[layer], rel=1e-4)
        assert scalar(run, f"gradient_flow/{layer}/linear_norm") == pytest.approx(linear[layer], rel=1e-4)
    a = pre_activation(model, "d1", x)
    assert scalar(run, "saturation/lb/mean_abs_pre_activation") == pytest.approx(np.mean(np.abs(a)), rel=1e-5)


def test_default_probe_is_first_validation_then_training_batch(tmp_path):
    x = RNG.standard_normal((40, 8)).astype("float32")
    y = RNG.integers(0, 3, 40)
    model = saturation_model()
    frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path / "val"), sites=["mixed_tanh"], image=False)],
               batch_size=16, validation_data=(x[:10], y[:10]))
    frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path / "train"), sites=["mixed_tanh"], image=False)],
               batch_size=16)
    a = pre_activation(model, "mixed_tanh", x)
    for run_name, rows in (("val", 10), ("train", 16)):
        run = read_run(str(tmp_path / run_name))
        assert histogram(run, "activations/mixed_tanh/pre_activation")[:, 2].sum() == rows * 16
    # The validation probe is exactly its first 10 rows.
    val = read_run(str(tmp_path / "val"))
    assert scalar(val, "saturation/mixed_tanh/mean_abs_pre_activation") == pytest.approx(
        np.mean(np.abs(a[:10])), rel=1e-5
    )


def test_nested_sequential_and_batch_freq(tmp_path):
    block = keras.Sequential([keras.layers.Dense(5, activation="sigmoid", name="inner")], name="block")
    model = keras.Sequential([keras.Input((4,)), block, keras.layers.Dense(2, activation="softmax", name="head")])
    x = RNG.standard_normal((64, 4)).astype("float32")
    y = RNG.integers(0, 2, 64)
    frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path), data=x, batch_freq=2, image=False)])
    run = read_run(str(tmp_path))
    # 64 / 16 = 4 batches: probes after batches 2 and 4, step = batches seen.
    assert sorted(run["saturation/inner/saturated_fraction"]) == [2, 4]
    a = x @ block.layers[0].kernel.numpy() + block.layers[0].bias.numpy()
    s = 1.0 / (1.0 + np.exp(-a))
    assert scalar(run, "saturation/inner/saturated_fraction", step=4) == pytest.approx(
        np.mean(s * (1 - s) < 0.1 * 0.25), abs=1e-6
    )


def test_mirrored_strategy(tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.integers(0, 3, 32)
    with strategy.scope():
        model = gradient_flow_model()
        model.compile(keras.optimizers.SGD(learning_rate=0.0), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0,
              callbacks=[GradientFlow(str(tmp_path), data=(x, y)),
                         SaturationHistograms(str(tmp_path), data=x, image=False)])
    run = read_run(str(tmp_path))
    exact = reference_gradients(model, x, y, linear=False)
    assert scalar(run, "gradient_flow/d2/exact_norm") == pytest.approx(exact["d2"], rel=1e-4)
    assert scalar(run, "gradient_flow/lb/linear_norm") == pytest.approx(
        reference_gradients(model, x, y, linear=True)["lb"], rel=1e-4
    )
    # The whole probe batch, not one replica's half.
    assert histogram(run, "activations/d2/pre_activation")[:, 2].sum() == 32 * 8


def test_binary_and_unknown_activations(tmp_path):
    def cube_tanh(a):  # outside the table: saturation "unknown"
        return tf.tanh(a) ** 3

    inputs = keras.Input((4,))
    pre = keras.layers.Dense(8, name="pre", kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=6))(inputs)
    binary = keras_linbp.layers.LinearBackprop("sign", name="binary")(pre)
    custom = keras.layers.Dense(8, activation=cube_tanh, name="custom",
                                kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=8))(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(
        keras.layers.Concatenate()([binary, custom])
    )
    model = keras.Model(inputs, outputs)
    x = RNG.standard_normal((32, 4)).astype("float32")
    frozen_fit(model, x, RNG.integers(0, 2, 32), [SaturationHistograms(str(tmp_path), data=x, image=False)])
    run = read_run(str(tmp_path))
    a = pre_activation(model, "pre", x)
    assert scalar(run, "saturation/binary/clipped_fraction") == pytest.approx(np.mean(np.abs(a) > 1), abs=1e-6)
    # Unknown: |f'| by central differences in numpy, saturation measured
    # against the largest |f'| in the batch; dead where f' is exactly 0.
    a = pre_activation(model, "custom", x).astype(np.float64)
    step = 1e-5
    slope = np.abs((np.tanh(a + step) ** 3 - np.tanh(a - step) ** 3) / (2 * step))
    expected = np.mean(slope < 0.1 * slope.max())
    assert scalar(run, "saturation/custom/saturated_fraction") == pytest.approx(expected, abs=1.5 / a.size)
    assert scalar(run, "saturation/custom/dead_fraction") == pytest.approx(np.mean(a == 0), abs=1e-6)


def test_gradient_flow_needs_labels(tmp_path):
    x = RNG.standard_normal((16, 8)).astype("float32")
    with pytest.raises(ValueError, match="needs labels"):
        frozen_fit(saturation_model(), x, RNG.integers(0, 3, 16), [GradientFlow(str(tmp_path), data=x)])


def test_rnn_cell_sites_are_left_out_of_saturation_but_not_gradient_flow(tmp_path):
    x = RNG.standard_normal((16, 5, 3)).astype("float32")
    y = RNG.integers(0, 3, 16)
    model = keras.Sequential([
        keras.Input((5, 3)),
        keras.layers.SimpleRNN(4, name="rnn"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path), data=x, image=False),
                                 GradientFlow(str(tmp_path), data=(x, y))])
    messages = [str(w.message) for w in caught if "inside a loop" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("SaturationHistograms")
    run = read_run(str(tmp_path))
    assert not [t for t in run if t.startswith("saturation/") and "out" not in t]
    cell = model.get_layer("rnn").cell
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x)))
    expected = float(tf.norm(tape.gradient(loss, cell.kernel)))
    assert scalar(run, f"gradient_flow/{cell.name}/exact_norm") == pytest.approx(expected, rel=1e-4)


def test_generator_training_data_needs_explicit_probe(tmp_path):
    x = RNG.standard_normal((16, 8)).astype("float32")
    y = RNG.integers(0, 3, 16)

    def batches():
        while True:
            yield x, y

    model = saturation_model()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="iterator.*data="):
        model.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False,
                  callbacks=[SaturationHistograms(str(tmp_path))])


def test_image_cadence_and_argument_checks(tmp_path):
    x = RNG.standard_normal((16, 8)).astype("float32")
    model = saturation_model()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    model.fit(x, RNG.integers(0, 3, 16), epochs=3, verbose=0,
              callbacks=[SaturationHistograms(str(tmp_path), data=x, sites=["dead_relu"], image=2)])
    run = read_run(str(tmp_path))
    assert sorted(run["saturation/dead_relu/dead_fraction"]) == [0, 1, 2]
    assert sorted(run["activations/histogram_grid"]) == [0, 2]


def test_default_image_keeps_within_time_budget(tmp_path, monkeypatch):
    # image=True draws while drawing has cost <= budget x training time: the
    # first probe always (nothing spent yet); with a zero budget, no other.
    from keras_linbp.callbacks import saturation as saturation_module

    monkeypatch.setattr(saturation_module, "IMAGE_TIME_BUDGET", 0.0)
    x = RNG.standard_normal((16, 8)).astype("float32")
    model = saturation_model()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    model.fit(x, RNG.integers(0, 3, 16), epochs=3, verbose=0,
              callbacks=[SaturationHistograms(str(tmp_path), data=x, sites=["dead_relu"])])
    run = read_run(str(tmp_path))
    assert sorted(run["saturation/dead_relu/dead_fraction"]) == [0, 1, 2]
    assert sorted(run["activations/histogram_grid"]) == [0]
    for bad in ({"image": 0}, {"threshold": 1.5}, {"freq": 0}, {"batch_freq": 0}):
        with pytest.raises(ValueError):
            SaturationHistograms(str(tmp_path), **bad)


class TwoActivationBlock(keras.layers.Layer):
    """Activations called inside `call()`: three op sites on one layer."""

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(input_shape[-1], 4), name="w",
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=9),
        )

    def call(self, x):
        a = keras.ops.matmul(x, self.w)
        return (keras.activations.gelu(a) * keras.activations.sigmoid(a)
                + keras.activations.gelu(a * 2.0))


def test_op_sites_inside_custom_call_and_an_lstm(tmp_path):
    x = RNG.standard_normal((16, 5, 3)).astype("float32")
    y = RNG.integers(0, 2, 16)
    inputs = keras.Input((5, 3))
    h = keras.layers.LSTM(4, name="lstm")(inputs)
    block = TwoActivationBlock(name="block")
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(block(h))
    model = keras.Model(inputs, outputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path), data=x, image=False),
                                 GradientFlow(str(tmp_path), data=(x, y))])
    assert [w for w in caught if "inside a loop" in str(w.message)]
    run = read_run(str(tmp_path))
    lstm = model.get_layer("lstm")
    out = model.get_layer("out")
    h = lstm(x).numpy()
    a = h @ block.w.numpy()
    # Each op site is its own stem, with its own input.
    assert scalar(run, "saturation/block/gelu/mean_abs_pre_activation") == pytest.approx(
        np.mean(np.abs(a)), rel=1e-5)
    assert scalar(run, "saturation/block/gelu_1/mean_abs_pre_activation") == pytest.approx(
        np.mean(np.abs(2 * a)), rel=1e-5)
    sigmoid = 1 / (1 + np.exp(-a))
    assert scalar(run, "saturation/block/sigmoid/saturated_fraction") == pytest.approx(
        np.mean(sigmoid * (1 - sigmoid) < 0.1 * 0.25), abs=1e-6)

    # References: each activation's input a separate (watched) copy of a.
    def reference(linear):
        def activation(fn, t):
            return t + tf.stop_gradient(fn(t) - t) if linear else fn(t)

        gelu = lambda t: tf.nn.gelu(t, approximate=False)  # noqa: E731
        with tf.GradientTape(persistent=True) as tape:
            hidden = lstm(x)  # (the LSTM's own sites: exact in both)
            a = hidden @ block.w
            a_gelu, a_sigmoid, a_gelu_1 = tf.identity(a), tf.identity(a), tf.identity(a * 2.0)
            for t in (a_gelu, a_sigmoid, a_gelu_1):
                tape.watch(t)
            mixed = (activation(gelu, a_gelu) * activation(tf.sigmoid, a_sigmoid)
                     + activation(gelu, a_gelu_1))
            probabilities = tf.nn.softmax(mixed @ out.kernel + out.bias)
            loss = -tf.reduce_mean(tf.math.log(tf.gather(probabilities, y, axis=1, batch_dims=1)))
        return {
            "block/gelu": float(tf.norm(tape.gradient(loss, a_gelu))),
            "block/sigmoid": float(tf.norm(tape.gradient(loss, a_sigmoid))),
            "block/gelu_1": float(tf.norm(tape.gradient(loss, a_gelu_1))),
            "out": float(tf.norm(tape.gradient(loss, out.kernel))),
            "lstm_cell": float(tf.norm(tape.gradient(loss, lstm.cell.kernel))),
        }

    exact = reference(linear=False)
    for stem, value in exact.items():
        assert scalar(run, f"gradient_flow/{stem}/exact_norm") == pytest.approx(value, rel=1e-4), stem
    linear = reference(linear=True)
    for stem in ("block/gelu", "block/sigmoid", "block/gelu_1", "out"):
        assert scalar(run, f"gradient_flow/{stem}/linear_norm") == pytest.approx(
            linear[stem], rel=1e-4), stem


class SubclassedMLP(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(
            5, activation="tanh", name="hidden",
            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=12))
        self.head = keras.layers.Dense(3, activation="softmax", name="head")

    def call(self, x):
        return self.head(self.hidden(x))


def test_unbuilt_subclassed_model(tmp_path):
    # Keras builds a subclassed model in its first training step, after
    # on_train_begin: the callbacks build it on the probe batch.
    x = RNG.standard_normal((16, 4)).astype("float32")
    y = RNG.integers(0, 3, 16)
    model = SubclassedMLP()
    assert not model.built
    frozen_fit(model, x, y, [SaturationHistograms(str(tmp_path), data=x, image=False),
                             GradientFlow(str(tmp_path), data=(x, y))])
    run = read_run(str(tmp_path))
    hidden = model.hidden
    a = x @ hidden.kernel.numpy() + hidden.bias.numpy()
    assert scalar(run, "saturation/hidden/mean_abs_pre_activation") == pytest.approx(
        np.mean(np.abs(a)), rel=1e-5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x)))
    expected = float(tf.norm(tape.gradient(loss, hidden.kernel.value)))
    assert scalar(run, "gradient_flow/hidden/exact_norm") == pytest.approx(expected, rel=1e-4)
