"""What `step_time.py` measures: three networks, four variants, their sizes.

The networks -- an MLP with sigmoid, an MLP with GELU, a small CNN with
ReLU -- in four variants with identical weights (`VARIANTS`; see
`step_time.py`). Keras is imported inside the functions: the benchmark
chooses its backend (`measure.setup_backend`) before anything imports it.
"""

import numpy as np

VARIANTS = ("exact", "linear_model", "linear_layers", "identity")
MODELS = ("mlp_sigmoid", "mlp_gelu", "cnn_relu")
ACTIVATION = {"mlp_sigmoid": "sigmoid", "mlp_gelu": "gelu", "cnn_relu": "relu"}
LABEL = {"mlp_sigmoid": "MLP sigmoid", "mlp_gelu": "MLP GELU", "cnn_relu": "CNN ReLU"}

# name -> sizes; "time" for step timing, "memory" for the memory probe.
FULL = {
    "time": {"mlp_width": 512, "mlp_depth": 4, "mlp_batch": 256, "cnn_side": 32, "cnn_batch": 64},
    "memory": {"mlp_width": 1024, "mlp_depth": 6, "mlp_batch": 2048, "cnn_side": 32, "cnn_batch": 256},
    "repeats": 9,
    "block_seconds": 0.4,
}
QUICK = {
    "time": {"mlp_width": 256, "mlp_depth": 4, "mlp_batch": 128, "cnn_side": 16, "cnn_batch": 32},
    "memory": {"mlp_width": 512, "mlp_depth": 6, "mlp_batch": 1024, "cnn_side": 16, "cnn_batch": 128},
    "repeats": 5,
    "block_seconds": 0.08,
}
# For tests: seconds, not a measurement.
SMOKE = {
    "time": {"mlp_width": 32, "mlp_depth": 2, "mlp_batch": 16, "cnn_side": 8, "cnn_batch": 8},
    "memory": {"mlp_width": 64, "mlp_depth": 2, "mlp_batch": 32, "cnn_side": 8, "cnn_batch": 16},
    "repeats": 5,
    "block_seconds": 0.005,
}
SIZES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}
INPUT_FEATURES = 784
CLASSES = 10


def build_layers(model_name, variant, sizes):
    """(inputs, logits) of one network; the activation depends on `variant`."""
    import keras

    from keras_linbp import activations

    name = ACTIVATION[model_name]
    if variant == "identity":
        activation = None
    elif variant == "linear_layers":
        activation = activations.LINBP_FUNCTIONS[name]
    else:
        activation = name
    if model_name.startswith("mlp"):
        inputs = keras.Input((INPUT_FEATURES,))
        h = inputs
        for _ in range(sizes["mlp_depth"]):
            h = keras.layers.Dense(sizes["mlp_width"], activation=activation)(h)
    else:
        side = sizes["cnn_side"]
        inputs = keras.Input((side, side, 3))
        h = keras.layers.Conv2D(16, 3, padding="same", activation=activation)(inputs)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(32, 3, padding="same", activation=activation)(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dense(64, activation=activation)(h)
    return inputs, keras.layers.Dense(CLASSES)(h)


def build_model(model_name, variant, sizes, jit_compile, weights=None):
    """One compiled variant (SGD 0.01, cross-entropy on logits)."""
    import keras

    from keras_linbp.models import LinearBackpropModel

    inputs, outputs = build_layers(model_name, variant, sizes)
    if variant == "linear_model":
        model = LinearBackpropModel(inputs, outputs, backprop="linear")
    else:
        model = keras.Model(inputs, outputs)
    if weights is not None:
        model.set_weights(weights)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def make_batch(model_name, sizes, batch_key, seed=0):
    """(x, y) already on the device (numpy would be converted every step)."""
    import keras

    rng = np.random.default_rng(seed)
    batch = sizes[batch_key]
    if model_name.startswith("mlp"):
        x = rng.normal(size=(batch, INPUT_FEATURES))
    else:
        side = sizes["cnn_side"]
        x = rng.normal(size=(batch, side, side, 3))
    y = rng.integers(0, CLASSES, size=(batch,))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.constant(x, tf.float32), tf.constant(y, tf.int64)
    label_dtype = "int32" if backend == "jax" else "int64"
    return keras.ops.convert_to_tensor(x, "float32"), keras.ops.convert_to_tensor(y, label_dtype)


def batch_key(model_name):
    return "mlp_batch" if model_name.startswith("mlp") else "cnn_batch"


def build_variants(model_name, sizes, jit_compile, variants):
    """{variant: compiled model}, all with the first variant's weights."""
    import keras

    keras.utils.set_random_seed(0)
    models = {}
    weights = None
    for variant in variants:
        models[variant] = build_model(model_name, variant, sizes, jit_compile, weights)
        weights = models[variant].get_weights() if weights is None else weights
    return models


def check_sites(model_name, model, sizes):
    sites = model.linear_sites()
    assert len(sites) == (sizes["mlp_depth"] if model_name.startswith("mlp") else 3), sites
