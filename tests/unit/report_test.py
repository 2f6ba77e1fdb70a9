"""`python -m keras_linbp.report`: reads the callbacks' event files and
writes one PNG."""

import keras
import numpy as np
import tensorflow as tf

import keras_linbp
from keras_linbp import report
from keras_linbp.callbacks import GradientFlow
from keras_linbp.callbacks import SaturationHistograms

RNG = np.random.default_rng(11)


def small_model():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="sigmoid", name="d1")(inputs)
    h = keras_linbp.layers.LinearBackprop("tanh", name="lb")(keras.layers.Dense(8, name="d2")(h))
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(h)
    return keras.Model(inputs, outputs)


def test_report_writes_png(tmp_path):
    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.integers(0, 3, 32)
    model = small_model()
    model.compile(keras.optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0, batch_size=16,
              callbacks=[GradientFlow(str(tmp_path), data=(x, y)),
                         SaturationHistograms(str(tmp_path), data=x, image=False)])
    out = tmp_path / "figures" / "report.png"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(str(out)).shape[:2]
    assert width > height > 200
    # An empty directory: a clear error, exit code 2.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty), "--out", str(tmp_path / "x.png")]) == 2


def test_read_scalars_matches_what_was_written(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
        for step, value in [(0, 0.25), (1, 0.5), (1, 0.75)]:  # step 1 rewritten
            tf.summary.scalar("saturation/layer_a/saturated_fraction", value, step=step)
        tf.summary.scalar("gradient_flow/layer_a/exact_norm", 2.0, step=0)
        tf.summary.scalar("unrelated/tag", 1.0, step=0)
    writer.close()
    scalars = report.read_scalars(str(tmp_path))
    steps, values = scalars["saturation/layer_a/saturated_fraction"]
    np.testing.assert_array_equal(steps, [0, 1])
    np.testing.assert_allclose(values, [0.25, 0.75])
    assert "unrelated/tag" not in scalars
    saturation, gradient_flow = report.collect(scalars)
    assert list(saturation) == [("layer_a", "saturated_fraction")]
    assert list(gradient_flow["layer_a"]) == ["exact_norm"]
