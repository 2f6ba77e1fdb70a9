"""Site discovery on a model whose sequence length is unknown (`Input((None,))`):
on JAX the symbolic trace gives unknown sizes symbolic dimensions, which
keras-hub's PositionEmbedding cannot slice by; discovery then traces with
concrete sizes instead."""

import importlib.util

import keras
import numpy as np
import pytest

import keras_linbp

pytestmark = [
    pytest.mark.all_backends,
    pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None, reason="needs keras-hub"),
]


def _gpt2_classifier(num_layers=2):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=16, num_layers=num_layers, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=16,
    )
    inputs = {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((None,), dtype="int32", name="padding_mask"),
    }
    pooled = keras.layers.GlobalAveragePooling1D()(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(pooled))


def test_sites_of_a_dynamic_length_gpt2_are_its_blocks_activations():
    model = _gpt2_classifier(num_layers=2)
    sites = keras_linbp.sites.find_activation_sites(model)
    # Each transformer block: one GELU feed-forward, one attention softmax.
    assert sorted(s.activation_name for s in sites) == ["gelu_approximate"] * 2 + ["softmax"] * 2
    linear = keras_linbp.LinearBackpropModel.from_model(model)
    assert [s.activation_name for s in linear.linear_sites()] == ["gelu_approximate"] * 2
    linear.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = {"token_ids": np.ones((2, 8), "int32"), "padding_mask": np.ones((2, 8), "int32")}
    assert np.isfinite(linear.train_on_batch(x, np.zeros(2, "int32")))
