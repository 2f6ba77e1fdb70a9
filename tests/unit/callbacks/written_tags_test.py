"""The complete set of TensorBoard tags each callback writes, against
`keras_linbp.callbacks.tags`; and the tag stems of sites."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from callbacks_test import frozen_fit
from callbacks_test import read_run

import keras_linbp
from keras_linbp.callbacks import GradientFlow
from keras_linbp.callbacks import SaturationHistograms
from keras_linbp.callbacks import tags

RNG = np.random.default_rng(23)


def cube_tanh(a):  # outside the activation table
    return tf.tanh(a) ** 3


def every_kind_model():
    inputs = keras.Input((6,))
    bounded = keras.layers.Dense(5, activation="tanh", name="bounded")(inputs)
    rectifier = keras.layers.Dense(5, activation="relu", name="rectifier")(bounded)
    pre_sign = keras.layers.Dense(5, name="pre_sign")(rectifier)  # no activation: no site
    binary = keras_linbp.layers.LinearBackprop("sign", name="binary")(pre_sign)
    layer_site = keras.layers.Activation("sigmoid", name="layer_site")(binary)
    unknown = keras.layers.Dense(5, activation=cube_tanh, name="unknown")(layer_site)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(unknown)
    return keras.Model(inputs, outputs)


# Each site's saturation kind, as the activation table defines it.
KINDS = {
    "bounded": "bounded",
    "rectifier": "rectifier",
    "binary": "binary",
    "layer_site": "bounded",
    "unknown": "unknown",
    "out": "softmax",
}
FRACTIONS_OF_KIND = {
    "bounded": {tags.SATURATED_FRACTION},
    "rectifier": {tags.DEAD_FRACTION},
    "binary": {tags.CLIPPED_FRACTION},
    "unknown": {tags.SATURATED_FRACTION, tags.DEAD_FRACTION},
    "softmax": set(),
}
# Dense layers report d loss / d kernel; the kernel-less ones d loss / d a.
GRADIENT_TARGETS = {
    "bounded": tags.KERNEL,
    "rectifier": tags.KERNEL,
    "binary": tags.INPUT,
    "layer_site": tags.INPUT,
    "unknown": tags.KERNEL,
    "out": tags.KERNEL,
}


def expected_saturation_tags():
    expected = {tags.HISTOGRAM_GRID}
    for stem, kind in KINDS.items():
        for name in FRACTIONS_OF_KIND[kind] | {tags.MEAN_ABS_PRE_ACTIVATION, tags.NONFINITE}:
            expected.add(tags.saturation_scalar(stem, name))
        histograms = {tags.PRE_ACTIVATION, tags.ACTIVATION}
        if kind != "softmax":
            histograms.add(tags.DERIVATIVE)
        expected |= {tags.activation_histogram(stem, name) for name in histograms}
    return expected


def expected_gradient_flow_tags(trained=tags.LINEAR):
    # Exact, and the rule the model trains with (linear for a plain model).
    return {
        make(stem, rule)
        for stem in GRADIENT_TARGETS
        for rule in (tags.EXACT, trained)
        for make in (tags.gradient_norm, tags.gradient_histogram)
    }


def test_complete_tag_sets(tmp_path):
    pytest.importorskip("matplotlib")
    x = RNG.standard_normal((16, 6)).astype("float32")
    y = RNG.integers(0, 3, 16)
    frozen_fit(every_kind_model(), x, y, [
        SaturationHistograms(str(tmp_path / "saturation"), data=x, image=1),
        GradientFlow(str(tmp_path / "gradient_flow"), data=(x, y)),
    ])
    saturation = read_run(str(tmp_path / "saturation"))
    gradient_flow = read_run(str(tmp_path / "gradient_flow"))
    assert set(saturation) == expected_saturation_tags()
    assert set(gradient_flow) == expected_gradient_flow_tags()
    for tag in set(saturation) | set(gradient_flow):
        assert tags.is_known_tag(tag), tag
    # Each gradient summary says what its norm is taken with respect to.
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "gradient_flow" / "train"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    for stem, target in GRADIENT_TARGETS.items():
        for rule in (tags.EXACT, tags.LINEAR):
            for tag in (tags.gradient_norm(stem, rule), tags.gradient_histogram(stem, rule)):
                description = accumulator.SummaryMetadata(tag).summary_description
                assert tags.gradient_target(description) == target, tag


def test_tag_patterns_parse_the_tags_they_describe():
    stem = "block/inner"
    for name in tags.SATURATION_SCALARS:
        match = tags.SATURATION_SCALAR_PATTERN.match(tags.saturation_scalar(stem, name))
        assert match and match.group("stem") == stem and match.group("name") == name
    assert tags.SATURATION_FRACTION_PATTERN.match(tags.saturation_scalar(stem, tags.NONFINITE)) is None
    for rule in tags.RULES:
        match = tags.GRADIENT_NORM_PATTERN.match(tags.gradient_norm(stem, rule))
        assert match.group("stem") == stem and match.group("rule") == rule
        assert match.group("name") == tags.norm_name(rule)
        assert tags.GRADIENT_HISTOGRAM_PATTERN.match(tags.gradient_histogram(stem, rule))
    assert not tags.is_known_tag("saturation/x/unrelated")


def fake_site(layer, name, path, attribute="activation"):
    """What `site_stems` reads of an `ActivationSite`."""
    return types.SimpleNamespace(layer=layer, name=name, path=path, attribute=attribute)


def test_site_stems():
    dense, inner_a, inner_b, cell, block = (object() for _ in range(5))
    sites = [
        fake_site(dense, "dense", "dense"),
        # Two layers named "inner": their paths.
        fake_site(inner_a, "inner", "left/inner"),
        fake_site(inner_b, "inner", "right/inner"),
        # An RNN cell's two sites on one path: the attribute tells them apart.
        fake_site(cell, "lstm_cell", "lstm/lstm_cell", "activation"),
        fake_site(cell, "lstm_cell", "lstm/lstm_cell", "recurrent_activation"),
        # Activations inside a custom call(): ":" and "#" are not kept.
        fake_site(block, "block", "block:gelu", "gelu"),
        fake_site(block, "block", "block:gelu#2", "gelu"),
    ]
    assert tags.site_stems(sites) == [
        "dense",
        "left/inner",
        "right/inner",
        "lstm_cell/activation",
        "lstm_cell/recurrent_activation",
        "block/gelu",
        "block/gelu_2",
    ]
    assert tags.site_stems(sites, per_layer=True) == [
        "dense", "left/inner", "right/inner", "lstm_cell", "lstm_cell", "block", "block",
    ]
    # Paths that become one stem once sanitized stay apart.
    a, b = object(), object()
    clash = [fake_site(a, "x y", "x y"), fake_site(b, "x_y", "x_y")]
    assert tags.site_stems(clash) == ["x_y", "x_y_2"]
    # The rewrite's RNN paths carry the attribute after ":".
    rnn = [
        fake_site(cell, "lstm_cell", "lstm/lstm_cell:activation", "activation"),
        fake_site(cell, "lstm_cell", "lstm/lstm_cell:recurrent_activation", "recurrent_activation"),
    ]
    assert tags.site_stems(rnn) == ["lstm_cell/activation", "lstm_cell/recurrent_activation"]
    for stem in tags.site_stems(sites) + tags.site_stems(clash):
        assert tags.sanitize(stem) == stem
