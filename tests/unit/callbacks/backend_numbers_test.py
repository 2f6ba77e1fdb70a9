"""`SaturationHistograms` and `GradientFlow` on every Keras backend:
statistics against numpy, gradient norms against the backend's own autodiff
(exact: the plain model; linear: a model with hand-written
`f(stop_gradient(a)) + slope * (a - stop_gradient(a))` activations) and a
numpy backward pass, the probe batch taken from `fit`'s own data, and the
event files read back with TensorBoard's `EventAccumulator`."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_linbp
from keras_linbp.callbacks import GradientFlow
from keras_linbp.callbacks import SaturationHistograms

pytestmark = pytest.mark.all_backends

BACKEND = keras.backend.backend()
N = 24


def _events(log_dir):
    """`{tag: {step: value}}` of the tensors in `<log_dir>/train`."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        os.path.join(log_dir, "train"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: {event.step: tf.make_ndarray(event.tensor_proto)
              for event in accumulator.Tensors(tag)}
        for tag in accumulator.Tags()["tensors"]
    }


def _data(seed=0, scale=2.5):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((N, 5))).astype("float32")
    y = rng.integers(0, 3, N)
    return x, y


def _layers(linear_slope=None):
    """d1 (tanh) -> d2 (no activation) -> act (ReLU, a kernel-less site) ->
    out (softmax). With `linear_slope`, the hidden activations are written
    by hand with the linear rule: `f(sg(a)) + slope * (a - sg(a))`."""

    def activation(name):
        function = keras.activations.get(name)
        if linear_slope is None:
            return function

        def linear(a):
            stopped = keras.ops.stop_gradient(a)
            return function(stopped) + linear_slope * (a - stopped)

        return linear

    return _network(activation)


def _network(activation):
    """The layers of `_layers`, each hidden activation `activation(name)`."""
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, activation=activation("tanh"), name="d1")(inputs)
    a = keras.layers.Dense(6, name="d2")(h)
    h = keras.layers.Activation(activation("relu"), name="act")(a)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(h)
    return inputs, outputs


def _compile(model):
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    return model


def _kernel_gradients(model, x, y):
    """`{layer name: d loss / d kernel}` by the backend's own autodiff."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    variables = model.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        grads = tape.gradient(loss, variables)
    elif BACKEND == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss_of(values):
            y_pred, _ = model.stateless_call(values, non_trainable, x)
            return loss_fn(y, y_pred)

        grads = jax.grad(loss_of)([v.value for v in variables])
    else:
        import torch

        loss = loss_fn(y, model(keras.ops.convert_to_tensor(x)))
        grads = torch.autograd.grad(loss, [v.value for v in variables])
    return {
        v.path.split("/")[0]: keras.ops.convert_to_numpy(g)
        for v, g in zip(variables, grads)
        if v.path.endswith("kernel")
    }


def _numpy_activation_gradient(model, x, y, slope):
    """d loss / d a at the `act` site (the input of its ReLU), by a numpy
    backward pass: exact (`slope=None`) or linear with `slope`."""
    w = {layer.name: [np.asarray(v) for v in layer.get_weights()] for layer in model.layers}
    h1 = np.tanh(x @ w["d1"][0] + w["d1"][1])
    a = h1 @ w["d2"][0] + w["d2"][1]
    h2 = np.maximum(a, 0.0)
    z = h2 @ w["out"][0] + w["out"][1]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(3)[y]) / len(x)
    dh2 = dz @ w["out"][0].T
    return dh2 * ((a > 0) if slope is None else slope)


@pytest.mark.parametrize("linear_model", [False, True], ids=["plain", "LinearBackpropModel"])
def test_gradient_flow_against_autodiff(tmp_path, linear_model):
    x, y = _data()
    slope = 0.5 if linear_model else 1.0
    inputs, outputs = _layers()
    if linear_model:
        model = keras_linbp.LinearBackpropModel(inputs, outputs, slope=slope)
    else:
        model = keras.Model(inputs, outputs)
    _compile(model)
    reference = keras.Model(*_layers(linear_slope=slope))
    reference.set_weights(model.get_weights())

    model.fit(x, y, epochs=1, batch_size=N, verbose=0,
              callbacks=[GradientFlow(str(tmp_path), data=(x, y))])
    events = _events(str(tmp_path))

    def logged(stem, rule):
        return float(events[f"gradient_flow/{stem}/{rule}_norm"][0])

    exact = _kernel_gradients(model, x, y)
    linear = _kernel_gradients(reference, x, y)
    for layer in ("d1", "out"):
        np.testing.assert_allclose(logged(layer, "exact"), np.linalg.norm(exact[layer]),
                                   rtol=1e-4)
        np.testing.assert_allclose(logged(layer, "linear"), np.linalg.norm(linear[layer]),
                                   rtol=1e-4)
    # The rules differ where it matters (d1 sits behind two linear sites).
    assert abs(logged("d1", "exact") - logged("d1", "linear")) > 1e-3
    # The kernel-less ReLU layer: d loss / d a, against numpy.
    np.testing.assert_allclose(
        logged("act", "exact"),
        np.linalg.norm(_numpy_activation_gradient(model, x, y, None)), rtol=1e-4,
    )
    np.testing.assert_allclose(
        logged("act", "linear"),
        np.linalg.norm(_numpy_activation_gradient(model, x, y, slope)), rtol=1e-4,
    )
    histogram = events["gradient_flow/out/exact_gradient"][0]
    assert histogram.shape == (30, 3) and histogram[:, 2].sum() == 6 * 3


def test_saturation_fractions_against_numpy(tmp_path):
    x, _ = _data(scale=3.0)
    inputs = keras.Input((5,))
    a1 = keras.layers.Dense(7, activation="tanh", name="t")(inputs)
    a2 = keras.layers.Dense(7, activation="relu", name="r")(a1)
    outputs = keras.layers.Dense(4, activation="sigmoid", name="s")(a2)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.0), "mse")

    callback = SaturationHistograms(str(tmp_path), data=x, image=False, buckets=10)
    model.fit(x, np.zeros((N, 4), "float32"), epochs=2, batch_size=8, verbose=0,
              callbacks=[callback])
    events = _events(str(tmp_path))

    w = {layer.name: layer.get_weights() for layer in model.layers[1:]}
    pre_t = x @ w["t"][0] + w["t"][1]
    pre_r = np.tanh(pre_t) @ w["r"][0] + w["r"][1]
    pre_s = np.maximum(pre_r, 0) @ w["s"][0] + w["s"][1]
    sigmoid = 1 / (1 + np.exp(-pre_s))
    expected = {
        "saturation/t/saturated_fraction": np.mean(1 - np.tanh(pre_t) ** 2 < 0.1),
        "saturation/r/dead_fraction": np.mean(pre_r <= 0),
        "saturation/s/saturated_fraction": np.mean(sigmoid * (1 - sigmoid) < 0.1 * 0.25),
        "saturation/t/mean_abs_pre_activation": np.mean(np.abs(pre_t)),
        "saturation/r/mean_abs_pre_activation": np.mean(np.abs(pre_r)),
        "saturation/s/nonfinite": 0,
    }
    assert 0 < expected["saturation/t/saturated_fraction"] < 1
    assert 0 < expected["saturation/r/dead_fraction"] < 1
    for tag, value in expected.items():
        assert sorted(events[tag]) == [0, 1], tag
        np.testing.assert_allclose(events[tag][0], value, rtol=1e-5, atol=1e-6,
                                   err_msg=tag)
    # Histograms: TensorBoard's layout, every unit counted once, over [min, max].
    for stem, values in (("t", pre_t), ("r", pre_r)):
        histogram = events[f"activations/{stem}/pre_activation"][0]
        assert histogram.shape == (10, 3)
        assert histogram[:, 2].sum() == values.size
        np.testing.assert_allclose([histogram[0, 0], histogram[-1, 1]],
                                   [values.min(), values.max()], rtol=1e-5)
        counts, _ = np.histogram(values, bins=10, range=(values.min(), values.max()))
        assert np.abs(histogram[:, 2] - counts).sum() <= 2  # edge rounding
    derivative = events["activations/t/derivative"][0]
    np.testing.assert_allclose(derivative[-1, 1], np.max(1 - np.tanh(pre_t) ** 2), rtol=1e-5)
    assert "activations/s/derivative" in events
    assert "activations/r/derivative" in events


@pytest.mark.parametrize("source", ["training", "validation"])
def test_probe_batch_from_fit(tmp_path, source):
    x, y = _data(scale=3.0)
    x_val, y_val = _data(seed=1, scale=0.5)
    model = _compile(keras.Model(*_layers()))
    kwargs = dict(validation_data=(x_val, y_val)) if source == "validation" else {}
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0,
              callbacks=[SaturationHistograms(str(tmp_path), image=False),
                         GradientFlow(str(tmp_path))], **kwargs)
    events = _events(str(tmp_path))
    batch = (x_val if source == "validation" else x)[:8]
    w = model.get_layer("d1").get_weights()
    np.testing.assert_allclose(
        events["saturation/d1/mean_abs_pre_activation"][0],
        np.mean(np.abs(batch @ w[0] + w[1])), rtol=1e-5,
    )
    assert events["gradient_flow/d1/exact_norm"][0] > 0


def test_probe_batch_from_a_torch_data_loader(tmp_path):
    if BACKEND != "torch":
        pytest.skip("a torch DataLoader is fit data on the PyTorch backend")
    import torch

    x, y = _data(scale=3.0)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)
    model = _compile(keras.Model(*_layers()))
    model.fit(loader, epochs=1, verbose=0,
              callbacks=[SaturationHistograms(str(tmp_path), image=False),
                         GradientFlow(str(tmp_path / "given"), data=loader)])
    w = model.get_layer("d1").get_weights()
    np.testing.assert_allclose(
        _events(str(tmp_path))["saturation/d1/mean_abs_pre_activation"][0],
        np.mean(np.abs(x[:8] @ w[0] + w[1])), rtol=1e-5,
    )
    assert _events(str(tmp_path / "given"))["gradient_flow/d1/exact_norm"][0] > 0


def test_callbacks_import_no_tensorflow_until_made():
    if BACKEND == "tensorflow":
        pytest.skip("TensorFlow is the backend")
    code = (
        "import sys\n"
        "from keras_linbp.callbacks import GradientFlow, SaturationHistograms\n"
        "print('tensorflow' in sys.modules)\n"
        "sys.modules['tensorflow'] = None  # as if not installed\n"
        "try:\n"
        "    SaturationHistograms('logs')\n"
        "except ImportError as error:\n"
        "    print('ImportError:', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "False"
    assert lines[1].startswith("ImportError: SaturationHistograms writes TensorBoard")
    assert "pip install tensorflow" in lines[1]


def _few_bit_layers(bits):
    """`_layers()` with the hidden activations written by hand with the
    few-bit rule: `f(sg(a)) + q(sg(a)) * (a - sg(a))`, q the numpy table."""
    from keras_linbp import tables

    def activation(name):
        function = keras.activations.get(name)
        bounds, levels = tables.few_bit_table(name, bits)

        def few_bit(a):
            stopped = keras.ops.stop_gradient(a)
            codes = np.searchsorted(bounds, keras.ops.convert_to_numpy(stopped), side="right")
            factor = keras.ops.convert_to_tensor(levels[codes].astype("float32"))
            return function(stopped) + factor * (a - stopped)

        return few_bit

    return _network(activation)


def test_gradient_flow_compares_exact_with_the_few_bit_rule_the_model_trains_with(tmp_path):
    # 0.3 logged linear backprop's gradient as `linear_norm` on a few-bit
    # model (TF: few-bit 0.356, linear 1.269, logged 1.269).
    x, y = _data()
    inputs, outputs = _layers()
    model = _compile(keras_linbp.LinearBackpropModel(inputs, outputs, backprop="few_bit", bits=1))
    reference = keras.Model(*_few_bit_layers(bits=1))
    reference.set_weights(model.get_weights())
    model.fit(x, y, epochs=1, batch_size=N, verbose=0,
              callbacks=[GradientFlow(str(tmp_path), data=(x, y))])
    events = _events(str(tmp_path))
    assert not any(tag.endswith("/linear_norm") for tag in events)
    few_bit = _kernel_gradients(reference, x, y)
    exact = _kernel_gradients(model, x, y)
    for layer in ("d1", "out"):
        logged = float(events[f"gradient_flow/{layer}/few_bit_norm"][0])
        np.testing.assert_allclose(logged, np.linalg.norm(few_bit[layer]), rtol=1e-4)
    assert abs(np.linalg.norm(few_bit["d1"]) - np.linalg.norm(exact["d1"])) > 1e-3


def test_gradient_flow_on_a_from_output_model_logs_the_exact_gradient_twice(tmp_path):
    # The from-output rule's gradient is exact: its norm equals exact's.
    x, y = _data()
    inputs, outputs = _layers()
    model = _compile(keras_linbp.LinearBackpropModel(inputs, outputs, backprop="from_output"))
    model.fit(x, y, epochs=1, batch_size=N, verbose=0,
              callbacks=[GradientFlow(str(tmp_path), data=(x, y))])
    events = _events(str(tmp_path))
    assert not any(tag.endswith("/linear_norm") for tag in events)
    exact = _kernel_gradients(model, x, y)
    for layer in ("d1", "out"):
        for rule in ("exact", "from_output"):
            logged = float(events[f"gradient_flow/{layer}/{rule}_norm"][0])
            np.testing.assert_allclose(logged, np.linalg.norm(exact[layer]), rtol=1e-4)
