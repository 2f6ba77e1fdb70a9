"""Shared test set-up: quiet TF, fresh seeds, one Keras backend per run.

The backend comes from KERAS_BACKEND (default tensorflow). On TensorFlow
every test runs; on JAX and PyTorch only the tests marked `all_backends`
(the numeric contract, `tests/integration/backends_test.py`) are collected, the others
being TensorFlow-specific (tf.GradientTape references, tf.distribute, the
TensorBoard callbacks' TF path).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    import tensorflow as tf

    # Two logical CPU devices for MirroredStrategy tests; must happen before
    # TF initialises its devices, i.e. before any test runs an op.
    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )


# Warnings third-party code raises that we cannot fix, each matched by its
# message and the module that raises it (a warning our own code causes
# still shows, and is fixed where it starts).
THIRD_PARTY_WARNINGS = (
    # Keras variables' and TensorFlow variables' `__array__` takes no
    # `copy` argument (NumPy 2); Keras reads them with `np.array` when it
    # saves a model and in `convert_to_numpy`.
    r"ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning:keras\.src",
    # `keras.src.testing.TestCase.run_layer_test`, Keras's layer contract,
    # trains weightless layers on a generator with the default shuffle=True.
    r"ignore:`shuffle=True` was passed, but will be ignored:UserWarning:keras\.src",
    r"ignore:The model does not have any trainable weights:UserWarning:keras\.src",
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "all_backends: runs on every Keras backend (TensorFlow, JAX, PyTorch)"
    )
    # A label, not a filter: slow tests run like every other (`-m "not slow"`
    # leaves them out of a quick local run).
    config.addinivalue_line(
        "markers", "slow: an example or benchmark run end to end in a subprocess (~10-30 s)"
    )
    for line in THIRD_PARTY_WARNINGS:
        config.addinivalue_line("filterwarnings", line)


def pytest_ignore_collect(collection_path, config):
    # Other backends: do not even import the TensorFlow-only test modules.
    if BACKEND == "tensorflow" or collection_path.suffix != ".py":
        return None
    name = collection_path.name
    if name.startswith("test_") or name.endswith("_test.py"):
        text = collection_path.read_text(encoding="utf-8")
        return "pytest.mark.all_backends" not in text
    return None


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    selected = [item for item in items if item.get_closest_marker("all_backends")]
    deselected = [item for item in items if not item.get_closest_marker("all_backends")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
