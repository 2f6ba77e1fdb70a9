"""Scale-out: `keras.distribution` on JAX, multi-worker `tf.distribute` on TensorFlow.

(`tf.distribute.MirroredStrategy` on two logical CPUs is tested beside the
callbacks and models: `tests/unit/callbacks/callbacks_test.py`.)

- JAX, `keras.distribution.DataParallel` and `ModelParallel` (a `LayoutMap`
  that shards the Dense kernels) over two host devices: after a few `fit`
  steps a `LinearBackpropModel`'s weights equal those of the same model on
  one device and those of a pass-through reference model (activation
  `s*a + stop_gradient(f(a) - s*a)`, plain Keras), with a fixed slope and
  with `slope="auto"` (its slopes recomputed in numpy each epoch). Two host
  devices need `XLA_FLAGS=--xla_force_host_platform_device_count=2` before
  JAX is imported, so the training runs in a child process: this file, run
  as a script (`python distribution_test.py jax OUT.npz`).
- TensorFlow, `MultiWorkerMirroredStrategy` with two localhost workers: `fit`
  fails inside Keras (3.15, TF 2.21) for a plain `keras.Model` as well, in
  `_maybe_symbolic_build`'s `strategy.reduce` of the first batch. The test
  is a strict xfail: once Keras fixes it the test passes, fails as XPASS,
  and says to update docs/guide/backends.md.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import keras

BACKEND = keras.backend.backend()
HERE = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SLOPES = (0.5, "auto")
EPOCHS = 2
LEARNING_RATE = 0.1
ACTIVATIONS = {"d1": "tanh", "d2": "sigmoid"}  # the two linear sites
MULTI_WORKER_ERROR = "Attempt to convert a value (PerReplica"


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((32, 6)).astype("float32"), rng.integers(0, 4, 32)


def _derivative(name, a):
    """f'(a) in numpy, for the activations of ACTIVATIONS."""
    if name == "tanh":
        return 1.0 - np.tanh(a) ** 2
    s = 1.0 / (1.0 + np.exp(-a))
    return s * (1.0 - s)


def numpy_rms_slopes(weights, x):
    """`slope="auto"`'s slopes, `sqrt(mean(f'(a)^2))` per site, computed in
    numpy from the weights [d1 kernel, d1 bias, d2 kernel, d2 bias, ...]."""
    slopes, h = {}, x.astype("float64")
    for index, (name, activation) in enumerate(ACTIVATIONS.items()):
        a = h @ weights[2 * index] + weights[2 * index + 1]
        slopes[name] = float(np.sqrt(np.mean(_derivative(activation, a) ** 2)))
        h = np.tanh(a) if activation == "tanh" else 1.0 / (1.0 + np.exp(-a))
    return slopes


def build(kind, slope=1.0):
    """Dense(tanh) -> Dense(sigmoid) -> Dense logits, seed 0.

    kind: "linbp" (a `LinearBackpropModel` with `slope`), "reference" (plain
    Keras, each activation written as the pass-through `s*a +
    stop_gradient(f(a) - s*a)` with `slope[name]`) or "exact" (plain Keras).
    """
    import keras_linbp

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = inputs
    for name, activation in ACTIVATIONS.items():
        if kind == "reference":
            f, s = keras.activations.get(activation), slope[name]
            activation = (lambda f, s: lambda a: s * a + keras.ops.stop_gradient(f(a) - s * a))(f, s)
        h = keras.layers.Dense(8, activation=activation, name=name)(h)
    outputs = keras.layers.Dense(4, name="head")(h)
    if kind == "linbp":
        return keras_linbp.LinearBackpropModel(inputs, outputs, slope=slope)
    return keras.Model(inputs, outputs)


def train(model, x, y, epochs=EPOCHS):
    model.compile(
        keras.optimizers.SGD(LEARNING_RATE), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return [keras.ops.convert_to_numpy(w) for w in model.get_weights()]


def train_reference(slope, x, y):
    """The pass-through reference on one device. With `slope="auto"` the
    slopes are recomputed in numpy at each epoch's start, as `fit`
    recalibrates them (plain SGD: no optimizer state to carry over)."""
    weights = [keras.ops.convert_to_numpy(w) for w in build("exact").get_weights()]
    for _ in range(EPOCHS):
        slopes = numpy_rms_slopes(weights, x) if slope == "auto" else dict.fromkeys(ACTIVATIONS, slope)
        model = build("reference", slopes)
        model.set_weights(weights)
        weights = train(model, x, y, epochs=1)
    return weights


# --- JAX: keras.distribution --------------------------------------------------


def _jax_distributions():
    import jax

    devices = jax.devices()
    assert len(devices) == 2, devices
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["d1/kernel"] = (None, "model")  # columns split over the devices
    layout_map["d2/kernel"] = ("model", None)  # rows split
    return {
        "data_parallel": keras.distribution.DataParallel(devices=devices),
        "model_parallel": keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"),
    }


def _jax_child(out):
    """Trains every configuration; writes weights, slopes and shardings to `out`."""
    x, y = _data()
    results = {}
    for slope in SLOPES:
        results[f"{slope}/one_device"] = train(build("linbp", slope), x, y)
        results[f"{slope}/reference"] = train_reference(slope, x, y)
        for name, distribution in _jax_distributions().items():
            with distribution.scope():
                model = build("linbp", slope)
                results[f"{slope}/{name}"] = train(model, x, y)
            kernel = model.get_layer("d1").kernel.value
            results[f"{slope}/{name}/d1_kernel_spec"] = tuple(kernel.sharding.spec)  # a tuple: kept as metadata
            results[f"{slope}/{name}/devices"] = len(kernel.sharding.device_set)
    results["exact"] = train(build("exact"), x, y)
    arrays = {f"{key}/{i}": w for key, ws in results.items() if isinstance(ws, list) for i, w in enumerate(ws)}
    meta = {key: value for key, value in results.items() if not isinstance(value, list)}
    np.savez(out, meta=json.dumps(meta), **arrays)


def _weights(results, key):
    return [results[f"{key}/{i}"] for i in range(6)]


@pytest.fixture(scope="module")
def jax_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("distribution") / "results.npz"
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        TF_CPP_MIN_LOG_LEVEL="2",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
    )
    run = subprocess.run(
        [sys.executable, HERE, "jax", str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    with np.load(out) as loaded:
        results = dict(loaded)
    results.update(json.loads(str(results.pop("meta"))))
    return results


@pytest.mark.all_backends
@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on the JAX backend")
@pytest.mark.parametrize("slope", SLOPES, ids=str)
@pytest.mark.parametrize("strategy", ["data_parallel", "model_parallel"])
def test_jax_distribution_matches_one_device_and_the_reference(jax_results, strategy, slope):
    assert jax_results[f"{slope}/{strategy}/devices"] == 2
    if strategy == "model_parallel":
        assert jax_results[f"{slope}/{strategy}/d1_kernel_spec"] == [None, "model"]
    distributed = _weights(jax_results, f"{slope}/{strategy}")
    one_device = _weights(jax_results, f"{slope}/one_device")
    reference = _weights(jax_results, f"{slope}/reference")
    for got, single, expected in zip(distributed, one_device, reference):
        np.testing.assert_allclose(got, single, atol=1e-6)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # The comparison can tell the rules apart: exact backprop lands elsewhere.
    exact = _weights(jax_results, "exact")
    assert max(np.max(np.abs(a - b)) for a, b in zip(distributed, exact)) > 1e-3


# --- TensorFlow: MultiWorkerMirroredStrategy -------------------------------------


def _free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _worker_child(kind, out):
    """One MultiWorkerMirroredStrategy worker (TF_CONFIG set by the parent)."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = _data()
    with strategy.scope():
        model = build(kind, 0.5)
        weights = train(model, x, y)
    np.savez(out, *weights)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs the TensorFlow backend")
@pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason="Keras 3.15 / TF 2.21: MultiWorkerMirroredStrategy fit fails for any keras.Model "
    f"({MULTI_WORKER_ERROR}...) in Trainer._maybe_symbolic_build; if this passes, "
    "update docs/guide/backends.md (Scale-out)",
)
@pytest.mark.parametrize("kind", ["exact", "linbp"], ids=["keras.Model", "LinearBackpropModel"])
def test_multi_worker_mirrored_strategy_fit(tmp_path, kind):
    workers = [f"localhost:{_free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(tf_config),
            KERAS_BACKEND="tensorflow",
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
        )
        command = [sys.executable, HERE, "worker", kind, str(tmp_path / f"worker{index}.npz")]
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=180)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    failed = [output for process, output in zip(processes, outputs) if process.returncode != 0]
    known = [output for output in failed if MULTI_WORKER_ERROR in output]
    if known:
        raise ValueError(known[0][known[0].rindex("ValueError"):][:300])
    assert not failed, failed[0][-4000:]
    # Two workers share each batch of 16: the same steps as one device.
    x, y = _data()
    expected = train_reference(0.5, x, y) if kind == "linbp" else train(build("exact"), x, y)
    for index in range(2):
        with np.load(tmp_path / f"worker{index}.npz") as got:
            for i, weight in enumerate(expected):
                np.testing.assert_allclose(got[f"arr_{i}"], weight, atol=1e-6)


if __name__ == "__main__":
    if sys.argv[1] == "jax":
        _jax_child(sys.argv[2])
    else:
        _worker_child(sys.argv[2], sys.argv[3])
