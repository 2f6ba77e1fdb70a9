"""`keras_linbp.LinearizeOptions`: checked once, replaced, saved; and the
functions and the model that take it agree with the keyword form.

Gradients are compared with an independent pass-through reference: the
same network with the linear site written by hand as
`a * s + stop_gradient(f(a) - a * s)` (forward `f(a)`, backward `s * g`).
"""

import dataclasses
import json

import keras
import numpy as np
import pytest

import keras_linbp
from keras_linbp import sites as linbp_sites
from keras_linbp.models import LinearBackpropModel
from keras_linbp.options import LinearizeOptions

pytestmark = pytest.mark.all_backends

BACKEND = keras.backend.backend()


@keras.saving.register_keras_serializable(package="keras_linbp_options_test")
def from_second_site(site):
    return site.depth >= 2


def _input_gradient(fn, x):
    """`d/dx sum(fn(x))` as numpy, with the backend's own autodiff."""
    x = np.asarray(x, "float32")
    if BACKEND == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            total = tf.reduce_sum(fn(t))
        return tape.gradient(total, t).numpy()
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        return np.asarray(jax.grad(lambda t: jnp.sum(fn(t)))(jnp.asarray(x)))
    t = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    fn(t).sum().backward()
    return t.grad.cpu().numpy()


def _mlp(second_activation="sigmoid"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, activation="tanh", name="d1")(inputs)
    h = keras.layers.Dense(6, activation=second_activation, name="d2")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def _pass_through(f, slope):
    def g(a):
        return a * slope + keras.ops.stop_gradient(f(a) - a * slope)

    return g


def _x():
    return np.random.default_rng(0).normal(size=(8, 5)).astype("float32")


# --- the object ----------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        ("backprop", "fast", ValueError, "Unknown `backprop` value 'fast'"),
        ("backprop", None, ValueError, "Unknown `backprop` value"),
        ("slope", "abc", ValueError, "`slope`"),
        ("slope", float("nan"), ValueError, "`slope`"),
        ("slope", {"d1": "x"}, TypeError, r"`slope\['d1'\]`"),
        ("sites", 123, TypeError, "`sites`"),
        ("sites", "dense_(", ValueError, "regex"),
        ("from_depth", 0, ValueError, "`from_depth`"),
        ("from_depth", 1.5, TypeError, "`from_depth`"),
        ("include_output", "yes", TypeError, "`include_output` must be True or False"),
        ("include_softmax", 1, TypeError, "`include_softmax` must be True or False"),
        ("include_gates", None, TypeError, "`include_gates` must be True or False"),
        ("include_recurrent", "no", TypeError, "`include_recurrent` must be True or False"),
    ],
)
def test_a_bad_field_fails_at_construction_naming_it(field, value, error, message):
    with pytest.raises(error, match=message):
        LinearizeOptions(**{field: value})
    with pytest.raises(error, match=message):
        LinearizeOptions().replace(**{field: value})


def test_defaults_and_canonical_values():
    options = LinearizeOptions(slope=1, sites=["d1"], from_depth=np.int64(2))
    assert options.backprop == "linear" and options.slope == 1.0 and type(options.slope) is float
    assert options.sites == ("d1",) and type(options.from_depth) is int
    assert (options.include_output, options.include_softmax, options.include_gates) == (False,) * 3
    assert options.include_recurrent is False
    assert LinearizeOptions.field_names() == (
        "backprop", "slope", "bits", "sites", "from_depth", "include_output", "include_softmax", "include_gates",
        "include_recurrent",
    )


def test_frozen():
    options = LinearizeOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.slope = 0.5


def test_replace_returns_a_checked_copy():
    options = LinearizeOptions(slope=0.5)
    changed = options.replace(from_depth=3, include_gates=True)
    assert (changed.slope, changed.from_depth, changed.include_gates) == (0.5, 3, True)
    assert (options.from_depth, options.include_gates) == (None, False)
    assert options.replace() == options
    with pytest.raises(TypeError, match=r"'clip'.*backprop, slope, bits, sites, from_depth"):
        options.replace(clip=2)


def test_split_kwargs_and_selection_kwargs():
    options, rest = LinearizeOptions.split_kwargs({"slope": 0.5, "name": "m", "sites": ["a"]})
    assert options == {"slope": 0.5, "sites": ["a"]} and rest == {"name": "m"}
    assert LinearizeOptions(from_depth=2).selection_kwargs() == {
        "sites": None, "from_depth": 2, "include_output": False,
        "include_softmax": False, "include_gates": False, "include_recurrent": False,
    }


@pytest.mark.parametrize(
    "options",
    [
        LinearizeOptions(),
        LinearizeOptions(backprop="exact", slope={"d1": 0.5}, sites=["d1", "d2"], from_depth=2),
        LinearizeOptions(slope="auto", sites="^d", include_output=True, include_softmax=True),
        LinearizeOptions(sites=from_second_site, include_gates=True),
    ],
    ids=["defaults", "names", "regex", "callable"],
)
def test_config_round_trip_through_json(options):
    config = json.loads(json.dumps(options.get_config()))
    assert LinearizeOptions.from_config(config) == options


def test_from_config_fills_missing_fields_and_rejects_unknown_ones():
    assert LinearizeOptions.from_config({"slope": 0.25}) == LinearizeOptions(slope=0.25)
    with pytest.raises(TypeError, match="'clip'"):
        LinearizeOptions.from_config({"clip": 2})


def test_slope_at():
    assert LinearizeOptions(slope=0.5).slope_at("d1") == 0.5
    assert LinearizeOptions(slope={"d1": 0.25}).slope_at("d2") == 1.0
    assert LinearizeOptions(slope="auto").slope_at("d1", {"d1": 0.7}) == 0.7
    assert LinearizeOptions(slope="auto").slope_at("d2", {"d1": 0.7}) == 1.0


# --- the functions that take it --------------------------------------------------


def test_linearize_with_options_equals_keywords_and_the_pass_through_reference():
    model = _mlp()
    x = _x()
    reference = _mlp(_pass_through(keras.activations.sigmoid, 0.5))
    reference.set_weights(model.get_weights())
    options = LinearizeOptions(slope=0.5, from_depth=2)

    def with_options(t):
        with keras_linbp.linearize(model, options) as selected:
            assert [site.path for site in selected] == ["d2"]
            return model(t)

    def with_keywords(t):
        with keras_linbp.linearize(model, slope=0.5, from_depth=2):
            return model(t)

    expected = _input_gradient(reference, x)
    np.testing.assert_allclose(_input_gradient(with_options, x), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_input_gradient(with_keywords, x), expected, rtol=1e-5, atol=1e-7)
    assert np.abs(_input_gradient(model, x) - expected).max() > 1e-4  # the rule is not exact


def test_keywords_replace_fields_of_the_options_given():
    model = _mlp()
    with keras_linbp.linearize(model, LinearizeOptions(from_depth=2), from_depth=1) as selected:
        assert [site.path for site in selected] == ["d1", "d2"]
    with keras_linbp.linearize(model, LinearizeOptions(), backprop="exact") as selected:
        assert selected == []
    with pytest.raises(TypeError, match="`options`"):
        with keras_linbp.linearize(model, {"slope": 0.5}):
            pass


def test_select_sites_takes_options():
    all_sites = linbp_sites.find_activation_sites(_mlp())
    options = LinearizeOptions(sites=["d2"])
    assert linbp_sites.select_sites(all_sites, options) == linbp_sites.select_sites(all_sites, sites=["d2"])
    assert [s.path for s in linbp_sites.select_sites(all_sites, options)] == ["d2"]
    rows = linbp_sites.explain_selection(all_sites, options, from_depth=3)
    assert [reasons for _, _, reasons in rows] == [
        ["not selected by `sites`", "before from_depth=3"], ["before from_depth=3"],
    ]
    with pytest.raises(TypeError, match="`options`"):
        linbp_sites.select_sites(all_sites, ["d2"])
    with pytest.raises(TypeError, match="`from_depth`"):
        linbp_sites.select_sites(all_sites, options, from_depth="2")


def test_calibrate_slopes_takes_options():
    model = _mlp()
    x = _x()
    got = keras_linbp.calibrate_slopes(model, x, options=LinearizeOptions(sites=["d1"]))
    assert got == keras_linbp.calibrate_slopes(model, x, sites=["d1"])
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in model.get_layer("d1").weights)
    derivative = 1.0 - np.tanh(x @ kernel + bias) ** 2
    assert list(got) == ["d1"]
    np.testing.assert_allclose(got["d1"], np.sqrt(np.mean(derivative**2)), rtol=1e-5)


# --- the model that holds it -----------------------------------------------------


def test_model_options_property_and_keyword_overrides():
    options = LinearizeOptions(slope=0.5, sites=["d1", "d2"])
    model = LinearBackpropModel.from_model(_mlp(), options=options, from_depth=2)
    assert model.options == options.replace(from_depth=2) == model.linearize_options()
    assert (model.slope, model.sites_option, model.from_depth) == (0.5, ("d1", "d2"), 2)
    assert [site.path for site in model.linear_sites()] == ["d2"]
    model.slope = 0.25
    model.backprop = "exact"
    assert model.options == options.replace(from_depth=2, slope=0.25, backprop="exact")
    with pytest.raises(AttributeError, match="from_depth"):
        model.from_depth = 1
    with pytest.raises(ValueError, match="Unknown `backprop`"):
        model.backprop = "fast"
    with pytest.raises(TypeError, match="`include_gates`"):
        LinearBackpropModel.from_model(_mlp(), options=options, include_gates="no")


def test_model_keeps_flat_config_keys_and_the_keras_file_keeps_the_options(tmp_path):
    options = LinearizeOptions(slope={"d2": 0.5}, sites=from_second_site, include_output=True)
    model = LinearBackpropModel.from_model(_mlp(), options=options)
    config = model.get_config()
    assert "options" not in config
    assert {key: config[key] for key in ("backprop", "slope", "from_depth", "include_gates")} == {
        "backprop": "linear", "slope": {"d2": 0.5}, "from_depth": None, "include_gates": False,
    }
    assert isinstance(config["sites"], dict)  # the registered function, serialized
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.options == model.options
    assert [site.path for site in loaded.linear_sites()] == ["d2"]
    x = _x()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6
    )
