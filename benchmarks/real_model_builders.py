"""The models `real_models.py` measures, each with one training batch.

keras.applications convnets, keras-hub backbones (with a sequence head) and
`--quick`'s tiny CNN: `BUILDERS[name]()` returns `(model, (x, y))`. Import
this after `measure.setup_backend(backend)`, as `real_models.py` and
`few_bit_memory.py` do: it imports Keras, whose framework's threads must be
pinned first. The batches are tensors of the backend in use (on the device).
"""

import keras
import numpy as np

CLASSES = 10
IMAGE_SIDE = 64
IMAGE_BATCH = 16
SEQUENCE_LENGTH = 128
TEXT_BATCH = 8
VOCABULARY = 1000
HUB_CONFIG = {"num_layers": 4, "hidden_dim": 256, "intermediate_dim": 1024, "num_heads": 4}

APPLICATIONS = ("MobileNetV2", "ResNet50", "EfficientNetB0", "ConvNeXtTiny")
HUB_MODELS = ("GPT2", "BERT", "ViT", "Gemma", "Llama")
QUICK_MODELS = ("TinyCNN",)


def _tensor(values, dtype):
    return keras.ops.convert_to_tensor(np.asarray(values, dtype=dtype))


def _image_batch(batch, side=IMAGE_SIDE, seed=0):
    rng = np.random.default_rng(seed)
    x = _tensor(rng.normal(size=(batch, side, side, 3)), "float32")
    y = _tensor(rng.integers(0, CLASSES, size=(batch,)), "int64")
    return x, y


def _application(name):
    def build():
        constructor = getattr(keras.applications, name)
        model = constructor(
            weights=None,
            input_shape=(IMAGE_SIDE, IMAGE_SIDE, 3),
            classes=CLASSES,
            classifier_activation=None,
        )
        return model, _image_batch(IMAGE_BATCH)

    return build


def _tiny_cnn():
    """The `--quick` model: two conv sites (relu, gelu), one dense (tanh)."""
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="gelu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(16, activation="tanh")(h)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(h), name="tiny_cnn")
    return model, _image_batch(32, side=32)


def _with_sequence_head(backbone, name):
    """backbone -> mean over the sequence of its sequence output -> Dense(10)."""
    inputs = keras.tree.map_structure(
        lambda spec: keras.Input(spec.shape[1:], dtype=spec.dtype, name=spec.name),
        backbone.input,
    )
    outputs = backbone(inputs)
    if isinstance(outputs, dict):
        outputs = outputs["sequence_output"]
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_over_sequence")(outputs)
    logits = keras.layers.Dense(CLASSES, name="head")(pooled)
    return keras.Model(inputs, logits, name=name)


def _token_batch(input_names, seed=0):
    rng = np.random.default_rng(seed)
    shape = (TEXT_BATCH, SEQUENCE_LENGTH)
    x = {}
    for name in input_names:
        if name == "token_ids":
            x[name] = _tensor(rng.integers(0, VOCABULARY, size=shape), "int32")
        elif name == "padding_mask":
            x[name] = _tensor(np.ones(shape), "int32")
        elif name == "segment_ids":
            x[name] = _tensor(np.zeros(shape), "int32")
        else:
            raise ValueError(f"unexpected backbone input {name!r}")
    y = _tensor(rng.integers(0, CLASSES, size=(TEXT_BATCH,)), "int64")
    return x, y


def _hub_backbone(name):
    import keras_hub  # optional extra; ImportError is handled by the caller

    c = HUB_CONFIG
    if name == "GPT2":
        return keras_hub.models.GPT2Backbone(
            vocabulary_size=VOCABULARY, num_layers=c["num_layers"], num_heads=c["num_heads"],
            hidden_dim=c["hidden_dim"], intermediate_dim=c["intermediate_dim"],
            max_sequence_length=SEQUENCE_LENGTH,
        )
    if name == "BERT":
        return keras_hub.models.BertBackbone(
            vocabulary_size=VOCABULARY, num_layers=c["num_layers"], num_heads=c["num_heads"],
            hidden_dim=c["hidden_dim"], intermediate_dim=c["intermediate_dim"],
            max_sequence_length=SEQUENCE_LENGTH,
        )
    if name == "ViT":
        # 64x128 images in 8x8 patches: 128 patches (+ the class token).
        return keras_hub.models.ViTBackbone(
            image_shape=(IMAGE_SIDE, 2 * IMAGE_SIDE, 3), patch_size=8,
            num_layers=c["num_layers"], num_heads=c["num_heads"],
            hidden_dim=c["hidden_dim"], mlp_dim=c["intermediate_dim"],
        )
    if name == "Gemma":
        # GemmaDecoderBlock splits intermediate_dim into gate and up halves.
        return keras_hub.models.GemmaBackbone(
            vocabulary_size=VOCABULARY, num_layers=c["num_layers"],
            num_query_heads=c["num_heads"], num_key_value_heads=c["num_heads"],
            hidden_dim=c["hidden_dim"], intermediate_dim=2 * c["intermediate_dim"],
            head_dim=c["hidden_dim"] // c["num_heads"],
        )
    if name == "Llama":
        return keras_hub.models.LlamaBackbone(
            vocabulary_size=VOCABULARY, num_layers=c["num_layers"],
            num_query_heads=c["num_heads"], num_key_value_heads=c["num_heads"],
            hidden_dim=c["hidden_dim"], intermediate_dim=c["intermediate_dim"],
        )
    raise ValueError(name)


def _hub(name):
    def build():
        backbone = _hub_backbone(name)
        model = _with_sequence_head(backbone, name.lower())
        if name == "ViT":
            rng = np.random.default_rng(0)
            images = rng.normal(size=(TEXT_BATCH, IMAGE_SIDE, 2 * IMAGE_SIDE, 3))
            x = _tensor(images, "float32")
            y = _tensor(rng.integers(0, CLASSES, size=(TEXT_BATCH,)), "int64")
            return model, (x, y)
        return model, _token_batch(list(model.input))

    return build


BUILDERS = {name: _application(name) for name in APPLICATIONS}
BUILDERS.update({name: _hub(name) for name in HUB_MODELS})
BUILDERS["TinyCNN"] = _tiny_cnn


def hub_available():
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        return False
    return True
