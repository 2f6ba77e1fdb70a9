"""The callbacks' edge cases: each test failed on keras_linbp 0.1.0 (kernels
without a gradient, slope changes, batch counting with steps_per_execution,
data containers, refusals before training, the image renderer, the docs).

References are independent of the code under test: `tf.GradientTape` on
the plain model or on a hand-written forward pass, numpy, the process
table of the operating system.
"""

import gc
import os
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_linbp
from keras_linbp.callbacks import GradientFlow
from keras_linbp.callbacks import SaturationHistograms
from callbacks_test import frozen_fit
from callbacks_test import gradient_flow_model
from callbacks_test import histogram
from callbacks_test import read_run
from callbacks_test import reference_gradients
from callbacks_test import saturation_model
from callbacks_test import scalar

RNG = np.random.default_rng(19)


def plain_gradient_norms(model, x, y, loss_fn, variables):
    """`{name: ||d loss / d variable||}` by a tape on the plain model;
    0 where the variable gets no gradient."""
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=False))
    gradients = tape.gradient(loss, [v.value for v in variables.values()])
    return {
        name: 0.0 if gradient is None else float(tf.norm(gradient))
        for name, gradient in zip(variables, gradients)
    }


# --- 1. kernels that get no gradient -----------------------------------------


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # Keras, on the unused head
def test_gradient_flow_logs_zero_for_kernels_without_gradient(tmp_path):
    # A stop_gradient branch and a second head the loss does not use.
    inputs = keras.Input((6,))
    frozen = keras.layers.Dense(5, activation="tanh", name="frozen_branch")(inputs)
    frozen = keras.layers.Lambda(keras.ops.stop_gradient, name="stop")(frozen)
    trained = keras.layers.Dense(5, activation="tanh", name="trained")(inputs)
    merged = keras.layers.Concatenate()([frozen, trained])
    used = keras.layers.Dense(3, activation="softmax", name="used_head")(merged)
    unused = keras.layers.Dense(2, activation="sigmoid", name="unused_head")(merged)
    model = keras.Model(inputs, [used, unused])
    model.compile(keras.optimizers.SGD(learning_rate=0.0),
                  loss=["sparse_categorical_crossentropy", None])
    x = RNG.standard_normal((16, 6)).astype("float32")
    y = RNG.integers(0, 3, 16)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0,
                        callbacks=[GradientFlow(str(tmp_path), data=(x, y))])
    assert len(history.history["loss"]) == 2  # training went on
    run = read_run(str(tmp_path))

    def loss_fn(labels, outputs):
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, outputs[0]))

    layers = ("frozen_branch", "trained", "used_head", "unused_head")
    expected = plain_gradient_norms(
        model, x, y, loss_fn, {name: model.get_layer(name).kernel for name in layers}
    )
    assert expected["frozen_branch"] == 0.0 and expected["unused_head"] == 0.0
    for epoch in (0, 1):
        for name in layers:
            assert scalar(run, f"gradient_flow/{name}/exact_norm", epoch) == pytest.approx(
                expected[name], rel=1e-4, abs=1e-12
            )
    assert scalar(run, "gradient_flow/unused_head/linear_norm") == 0.0
    assert scalar(run, "gradient_flow/frozen_branch/linear_norm") == 0.0


def test_gradient_flow_binary_dense_upstream_of_a_sign(tmp_path):
    # Exact backprop through bd2's input sign passes nothing to bd1.
    inputs = keras.Input((6,))
    h = keras_linbp.binary.BinaryDense(8, binarize_inputs=False, activation="tanh",
                                       rule="ste", name="bd1")(inputs)
    outputs = keras_linbp.binary.BinaryDense(3, activation="softmax", rule="ste", name="bd2")(h)
    model = keras.Model(inputs, outputs)
    x = RNG.standard_normal((16, 6)).astype("float32")
    y = RNG.integers(0, 3, 16)
    frozen_fit(model, x, y, [GradientFlow(str(tmp_path), data=(x, y))])
    run = read_run(str(tmp_path))
    assert scalar(run, "gradient_flow/bd1/exact_norm") == 0.0
    # The linear probe keeps the sign's own rule (ste): bd1 gets a gradient.
    assert scalar(run, "gradient_flow/bd1/linear_norm") > 0.0


# --- 2. the slope in force at each probe --------------------------------------


class SetSlope(keras.callbacks.Callback):
    def __init__(self, epoch, slope):
        super().__init__()
        self.epoch, self.slope = epoch, slope

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.slope = self.slope


def test_gradient_flow_follows_slope_changes(tmp_path):
    from keras_linbp.models import LinearBackpropModel

    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.integers(0, 3, 32)
    model = LinearBackpropModel.from_model(gradient_flow_model(), slope=1.0)
    callback = GradientFlow(str(tmp_path), data=(x, y), histograms=False)
    model.compile(keras.optimizers.SGD(learning_rate=0.0), "sparse_categorical_crossentropy")
    # Mid-fit: slope 0.5 from epoch 1 on, set by another callback.
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False,
              callbacks=[SetSlope(1, 0.5), callback])
    # Between fits: slope 2.
    model.slope = 2.0
    model.fit(x, y, initial_epoch=2, epochs=3, batch_size=16, verbose=0, shuffle=False,
              callbacks=[callback])
    # The slopes reach the traced probe as a tensor: one trace for all three.
    assert callback._probe_function.experimental_get_tracing_count() == 1
    run = read_run(str(tmp_path))
    for step, slope in ((0, 1.0), (1, 0.5), (2, 2.0)):
        expected = reference_gradients(model, x, y, linear=True, slope=slope)
        for layer in ("d2", "act", "lb"):
            assert scalar(run, f"gradient_flow/{layer}/linear_norm", step) == pytest.approx(
                expected[layer], rel=1e-4
            ), (step, layer)


def per_site_reference(model, x, y, slopes):
    """`reference_gradients` with one slope per converted site (d2, act)."""

    def activation(fn, a, slope):
        return slope * a + tf.stop_gradient(fn(a) - slope * a)

    d1, d2, out = (model.get_layer(n) for n in ("d1", "d2", "out"))
    with tf.GradientTape(persistent=True) as tape:
        a1 = tf.constant(x) @ d1.kernel + d1.bias
        tape.watch(a1)
        h1 = activation(tf.sigmoid, a1, 1.0)  # LinearBackprop: its own slope 1
        h2 = activation(tf.tanh, h1 @ d2.kernel + d2.bias, slopes["d2"])
        tape.watch(h2)
        h3 = activation(tf.tanh, h2, slopes["act"])
        probabilities = tf.nn.softmax(h3 @ out.kernel + out.bias)
        loss = -tf.reduce_mean(tf.math.log(tf.gather(probabilities, y, axis=1, batch_dims=1)))
    return {
        "lb": float(tf.norm(tape.gradient(loss, a1))),
        "d2": float(tf.norm(tape.gradient(loss, d2.kernel))),
        "act": float(tf.norm(tape.gradient(loss, h2))),
    }


class PerSiteSlopeModel(keras.Model):
    """A plain model that states a slope per site, as a LinearBackpropModel
    with per-site slopes will."""

    slopes = {"d2": 0.5, "act": 3.0}

    def site_slope(self, site):
        return self.slopes[site.name]


def test_gradient_flow_reads_per_site_slopes(tmp_path):
    plain = gradient_flow_model()
    model = PerSiteSlopeModel(plain.inputs, plain.outputs)
    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.integers(0, 3, 32)
    callback = GradientFlow(str(tmp_path), data=(x, y), histograms=False)
    frozen_fit(model, x, y, [callback])
    PerSiteSlopeModel.slopes = {"d2": 2.0, "act": 0.25}
    try:
        model.fit(x, y, initial_epoch=1, epochs=2, verbose=0, callbacks=[callback])
    finally:
        PerSiteSlopeModel.slopes = {"d2": 0.5, "act": 3.0}
    run = read_run(str(tmp_path))
    for step, slopes in ((0, {"d2": 0.5, "act": 3.0}), (1, {"d2": 2.0, "act": 0.25})):
        expected = per_site_reference(model, x, y, slopes)
        for layer in ("d2", "act", "lb"):
            assert scalar(run, f"gradient_flow/{layer}/linear_norm", step) == pytest.approx(
                expected[layer], rel=1e-4
            ), (step, layer)


# --- 3. batch_freq counts batches --------------------------------------------


def test_batch_freq_counts_batches_with_steps_per_execution(tmp_path):
    x = RNG.standard_normal((64, 8)).astype("float32")
    y = RNG.integers(0, 3, 64)
    model = saturation_model()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), "sparse_categorical_crossentropy",
                  steps_per_execution=4)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False,
              callbacks=[SaturationHistograms(str(tmp_path), data=x, sites=["mixed_tanh"],
                                              batch_freq=4, image=False)])
    run = read_run(str(tmp_path))
    assert sorted(run["saturation/mixed_tanh/nonfinite"]) == [4, 8, 12, 16]
    # A frequency the executions cannot honour is refused before training.
    with pytest.raises(ValueError, match=r"batch_freq.*steps_per_execution"):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0,
                  callbacks=[SaturationHistograms(str(tmp_path), data=x, batch_freq=2, image=False)])


def test_batch_freq_steps_continue_over_epochs_with_a_partial_execution(tmp_path):
    # 6 batches per epoch, executions of 4: the second one is partial.
    x = RNG.standard_normal((24, 8)).astype("float32")
    y = RNG.integers(0, 3, 24)
    model = saturation_model()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), "sparse_categorical_crossentropy",
                  steps_per_execution=4)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False,
              callbacks=[SaturationHistograms(str(tmp_path), data=x, sites=["mixed_tanh"],
                                              batch_freq=4, image=False)])
    run = read_run(str(tmp_path))
    # Batches trained when each execution ends: 4, 6 | 10, 12. A probe runs
    # at the first execution end at or past each multiple of 4 (4, 8, 12).
    assert sorted(run["saturation/mixed_tanh/nonfinite"]) == [4, 10, 12]


# --- 4. data=[xa, xb] is x for a two-input model --------------------------------


def two_input_model():
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), name="b")
    ha = keras.layers.Dense(5, activation="tanh", name="from_a",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=2))(a)
    hb = keras.layers.Dense(5, activation="tanh", name="from_b",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=3))(b)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(
        keras.layers.Concatenate()([ha, hb])
    )
    return keras.Model([a, b], outputs)


@pytest.mark.parametrize("container", [list, tuple])
def test_list_of_arrays_matching_the_inputs_is_x(tmp_path, container):
    xa = RNG.standard_normal((12, 4)).astype("float32")
    xb = RNG.standard_normal((12, 3)).astype("float32")
    y = RNG.integers(0, 3, 12)
    model = two_input_model()
    frozen_fit(model, [xa, xb], y, [
        SaturationHistograms(str(tmp_path / "x"), data=container([xa, xb]), image=False),
        GradientFlow(str(tmp_path / "xy"), data=([xa, xb], y), histograms=False),
    ])
    run = read_run(str(tmp_path / "x"))
    for name, x in (("from_a", xa), ("from_b", xb)):
        layer = model.get_layer(name)
        a = x @ layer.kernel.numpy() + layer.bias.numpy()
        assert scalar(run, f"saturation/{name}/mean_abs_pre_activation") == pytest.approx(
            np.mean(np.abs(a)), rel=1e-5
        )
        assert histogram(run, f"activations/{name}/pre_activation")[:, 2].sum() == 12 * 5
    # ([xa, xb], y) is still (x, y): the loss gradient uses the labels.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model([xa, xb])))
    expected = float(tf.norm(tape.gradient(loss, model.get_layer("from_b").kernel.value)))
    run = read_run(str(tmp_path / "xy"))
    assert scalar(run, "gradient_flow/from_b/exact_norm") == pytest.approx(expected, rel=1e-4)


# --- 5. the image renderer ends with the fit -----------------------------------


def renderer_processes():
    """PIDs of this process's children running the image renderer."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read()
        except OSError:
            continue
        if parent == os.getpid() and b"_keras_linbp_plotting" in command:
            found.append(int(entry))
    return found


class RaiseAtEpochEnd(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("stop here")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table")
def test_image_renderer_does_not_outlive_a_failed_fit(tmp_path):
    pytest.importorskip("matplotlib")
    assert renderer_processes() == []
    x = RNG.standard_normal((16, 8)).astype("float32")
    model = saturation_model()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    callback = SaturationHistograms(str(tmp_path), data=x, sites=["dead_relu"], image=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="stop here"):
            model.fit(x, RNG.integers(0, 3, 16), epochs=3, verbose=0,
                      callbacks=[callback, RaiseAtEpochEnd()])
        # The probe before the failure had its image drawn and written (the
        # summaries flushed), and then the process ended: wait for both.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            written = "activations/histogram_grid" in read_run(str(tmp_path))
            if written and not renderer_processes():
                break
            time.sleep(0.1)
        assert written
        assert renderer_processes() == []
        del callback
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert sorted(read_run(str(tmp_path))["activations/histogram_grid"]) == [0]


# --- 6. which pattern matched nothing ------------------------------------------


def test_sites_pattern_matching_nothing_names_the_pattern(tmp_path):
    x = RNG.standard_normal((16, 8)).astype("float32")
    y = RNG.integers(0, 3, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frozen_fit(saturation_model(), x, y,
                   [SaturationHistograms(str(tmp_path), data=x, sites="^conv")])
    messages = [str(w.message) for w in caught if "^conv" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("SaturationHistograms")
    assert "'^conv'" in messages[0] and "mixed_tanh" in messages[0]
    assert "has no activation sites" not in messages[0]
    with pytest.raises(ValueError, match=r"no_such_layer.*saturated_sigmoid.*dead_relu"):
        frozen_fit(saturation_model(), x, y,
                   [GradientFlow(str(tmp_path), data=(x, y), sites=["dead_relu", "no_such_layer"])])


# --- 7. an unbatched dataset or a generator as data= ------------------------------


def test_unbatched_dataset_is_refused_before_training(tmp_path):
    x = RNG.standard_normal((16, 8)).astype("float32")
    y = RNG.integers(0, 3, 16)
    unbatched = tf.data.Dataset.from_tensor_slices(x)
    with pytest.raises(ValueError, match=r"`data`.*unbatched.*\.batch\("):
        frozen_fit(saturation_model(), x, y, [SaturationHistograms(str(tmp_path), data=unbatched)])
    # Batched, it works.
    frozen_fit(saturation_model(), x, y,
               [SaturationHistograms(str(tmp_path), data=unbatched.batch(8), image=False)])


def test_generator_as_data_is_refused_at_construction(tmp_path):
    def batches():
        yield RNG.standard_normal((4, 8)).astype("float32")

    for callback in (SaturationHistograms, GradientFlow):
        with pytest.raises(TypeError, match=r"`data`.*generator"):
            callback(str(tmp_path), data=batches())
        with pytest.raises(TypeError, match=r"`data`.*iterator"):
            callback(str(tmp_path), data=iter([np.zeros((2, 8))]))


# --- 10. small untruths ----------------------------------------------------------


def test_report_labels_the_gradient_each_layer_reports(tmp_path):
    pytest.importorskip("matplotlib")
    from keras_linbp import report

    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.integers(0, 3, 32)
    frozen_fit(gradient_flow_model(), x, y, [GradientFlow(str(tmp_path), data=(x, y))])
    # Dense layers report d loss / d kernel; LinearBackprop and Activation
    # layers (no kernel) d loss / d a.
    assert report.read_gradient_targets(str(tmp_path)) == {
        "lb": "input", "d2": "kernel", "act": "input", "out": "kernel",
    }
    figure = report.build_report(str(tmp_path))
    labels = [axes.get_ylabel() for axes in figure.axes]
    gradient_label = [label for label in labels if "∂loss" in label]
    assert gradient_label and "∂a" in gradient_label[0] and "kernel" in gradient_label[0]
    legend = [text.get_text() for axes in figure.axes if axes.get_legend()
              for text in axes.get_legend().get_texts()]
    assert any(text.startswith("act") and "∂a" in text for text in legend)
    assert any(text.startswith("d2") and "kernel" in text for text in legend)


def test_docs_count_the_passes_each_callback_runs():
    import importlib
    import pkgutil

    import keras_linbp.callbacks as package

    assert "two extra forward and backward passes" in " ".join(GradientFlow.__doc__.split())
    assert "one extra inference forward" in SaturationHistograms.__doc__.lower()
    for module in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{module.name}")
        assert "ONE extra forward" not in (module.__doc__ or ""), module.__name__


def test_benchmark_names_its_model_truly():
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[3]
    source = (root / "benchmarks" / "callback_overhead.py").read_text()
    assert "quickstart-sized" not in source and "quickstart-like" not in source
    tree = ast.parse(source)
    # The hidden sizes the benchmark builds, read from its source.
    units = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Dense"
        and node.args and isinstance(node.args[0], ast.Constant)
    ]
    described = "64-" + "-".join(str(u) for u in units)
    assert described in ast.get_docstring(tree)


def test_gradient_flow_uses_a_linear_backprop_models_per_site_slopes(tmp_path):
    from keras_linbp.models import LinearBackpropModel

    slopes = {"d2": 0.5, "act": 3.0}
    model = LinearBackpropModel.from_model(gradient_flow_model(), slope=slopes)
    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.integers(0, 3, 32)
    frozen_fit(model, x, y, [GradientFlow(str(tmp_path), data=(x, y), histograms=False)])
    run = read_run(str(tmp_path))
    expected = per_site_reference(model, x, y, slopes)
    for layer in ("d2", "act", "lb"):
        assert scalar(run, f"gradient_flow/{layer}/linear_norm") == pytest.approx(
            expected[layer], rel=1e-4
        ), layer
