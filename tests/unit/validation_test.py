"""Arguments are checked up front, with errors that name the argument.

The bad values are those of issue 9 (`slope="abc"`, `slope=nan`,
`clip="abc"`, `from_depth="abc"`, `from_depth=1.7`, `sites=123`, a
subclassed model whose `call(a, b)` takes two arguments, other Keras
backends) plus their neighbours. Each check is exercised through the
public entry points, not only through `keras_linbp._validation`.
"""

import ast
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_linbp
from keras_linbp import _validation
from keras_linbp import binary
from keras_linbp import layers
from keras_linbp.models import LinearBackpropModel

PACKAGE = pathlib.Path(keras_linbp.__file__).resolve().parent
REPO = PACKAGE.parent

BAD_SLOPES = [
    ("abc", TypeError),
    (None, TypeError),
    (True, TypeError),
    ([1.0], TypeError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    (-math.inf, ValueError),
]
BAD_CLIPS = [
    ("abc", TypeError),
    (True, TypeError),
    (0.0, ValueError),
    (-1.0, ValueError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
]
BAD_DEPTHS = [("abc", TypeError), (1.7, TypeError), (2.0, TypeError), (True, TypeError), (0, ValueError), (-2, ValueError)]
BAD_SITES = [(123, TypeError), ({"dense"}, TypeError), (["dense", 3], TypeError), ("dense_(", ValueError)]


def _assert_names(info, name):
    message = str(info.value)
    assert f"`{name}" in message, message
    assert "could not convert" not in message and "invalid literal" not in message, message


# --- the validators ----------------------------------------------------------


def test_check_slope_accepts_finite_reals_and_returns_a_float():
    for value, expected in [(1, 1.0), (0.5, 0.5), (-2.0, -2.0), (0, 0.0), (np.float32(0.25), 0.25), (np.int64(3), 3.0)]:
        result = _validation.check_slope(value)
        assert type(result) is float and result == expected


@pytest.mark.parametrize("value,error", BAD_SLOPES, ids=repr)
def test_check_slope_rejects(value, error):
    with pytest.raises(error) as info:
        _validation.check_slope(value)
    _assert_names(info, "slope")
    assert "finite real number" in str(info.value)


def test_check_slope_modes_switched_on_by_flags():
    with pytest.raises(TypeError, match="`slope`"):
        _validation.check_slope("auto")
    with pytest.raises(TypeError, match="`slope`"):
        _validation.check_slope({"dense": 0.5})
    assert _validation.check_slope("auto", allow_auto=True) == "auto"
    with pytest.raises(ValueError, match="'auto'.*got 'abc'"):
        _validation.check_slope("abc", allow_auto=True)
    checked = _validation.check_slope({"block/dense": 1, "out": np.float64(0.5)}, allow_dict=True)
    assert checked == {"block/dense": 1.0, "out": 0.5}
    assert all(type(v) is float for v in checked.values())
    with pytest.raises(ValueError, match=r"slope\['out'\]"):
        _validation.check_slope({"out": float("nan")}, allow_dict=True)
    with pytest.raises(TypeError, match=r"slope\['out'\]"):
        _validation.check_slope({"out": "abc"}, allow_dict=True)
    with pytest.raises(TypeError, match="site paths"):
        _validation.check_slope({3: 1.0}, allow_dict=True)
    with pytest.raises(ValueError, match="empty"):
        _validation.check_slope({}, allow_dict=True)


@pytest.mark.parametrize("value,error", BAD_CLIPS, ids=repr)
def test_check_clip_rejects(value, error):
    with pytest.raises(error) as info:
        _validation.check_clip(value)
    _assert_names(info, "clip")


def test_check_clip_accepts_positive_numbers_and_none():
    assert _validation.check_clip(None) is None
    assert _validation.check_clip(2) == 2.0 and type(_validation.check_clip(2)) is float
    with pytest.raises(TypeError, match="`clip_value`"):
        _validation.check_clip(None, name="clip_value", allow_none=False)


@pytest.mark.parametrize("value,error", BAD_DEPTHS, ids=repr)
def test_check_from_depth_rejects(value, error):
    with pytest.raises(error) as info:
        _validation.check_from_depth(value)
    _assert_names(info, "from_depth")
    assert "int >= 1" in str(info.value)


def test_check_from_depth_accepts_none_and_positive_ints():
    assert _validation.check_from_depth(None) is None
    assert _validation.check_from_depth(1) == 1
    result = _validation.check_from_depth(np.int32(3))
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value,error", BAD_SITES, ids=repr)
def test_check_sites_rejects(value, error):
    with pytest.raises(error) as info:
        _validation.check_sites(value)
    _assert_names(info, "sites")


def test_check_sites_accepts_none_regex_names_and_callables():
    def select(site):
        return True

    assert _validation.check_sites(None) is None
    assert _validation.check_sites("dense_[12]$") == "dense_[12]$"
    assert _validation.check_sites(["a", "block/b"]) == ("a", "block/b")
    assert _validation.check_sites(("a",)) == ("a",)
    assert _validation.check_sites(select) is select


def test_check_sites_bad_regex_message_says_it_is_a_regex():
    with pytest.raises(ValueError) as info:
        _validation.check_sites("dense_(")
    assert "regex" in str(info.value) and "sites=['dense_(']" in str(info.value)


def test_check_bool_and_check_int():
    assert _validation.check_bool("flag", np.bool_(True)) is True
    for value in ("yes", 1, None):
        with pytest.raises(TypeError, match="`flag` must be True or False"):
            _validation.check_bool("flag", value)
    assert _validation.check_int("buckets", 30, minimum=1) == 30
    for value, error in [(-3, ValueError), (0, ValueError), (2.5, TypeError), ("30", TypeError), (True, TypeError)]:
        with pytest.raises(error, match="`buckets` must be an int >= 1"):
            _validation.check_int("buckets", value, minimum=1)


# --- the public entry points -------------------------------------------------


@pytest.mark.parametrize("value,error", BAD_SLOPES, ids=repr)
def test_every_slope_argument_is_checked(value, error):
    makers = [
        lambda: keras_linbp.linear_backprop("tanh", slope=value),
        lambda: keras_linbp.ops.linear_backprop(keras.activations.tanh, slope=value),
        lambda: keras_linbp.LinearBackprop("tanh", slope=value),
        lambda: layers.LinBPTanh(slope=value),
    ]
    for make in makers:
        with pytest.raises(error) as info:
            make()
        _assert_names(info, "slope")
    # The model also takes the string "auto", so another string is a bad
    # value (ValueError) rather than a bad type.
    with pytest.raises(ValueError if isinstance(value, str) else error) as info:
        LinearBackpropModel(slope=value)
    _assert_names(info, "slope")
    if isinstance(value, str):
        assert "'auto'" in str(info.value)


def test_model_slope_setter_is_checked():
    inputs = keras.Input((3,))
    model = LinearBackpropModel(inputs, keras.layers.Dense(2, activation="tanh")(inputs))
    with pytest.raises(ValueError, match="`slope`"):
        model.slope = "abc"
    with pytest.raises(ValueError, match="`slope`"):
        model.slope = float("nan")
    assert model.slope == 1.0


@pytest.mark.parametrize("value,error", BAD_CLIPS, ids=repr)
def test_straight_through_clip_is_checked(value, error):
    for make in (keras_linbp.straight_through, keras_linbp.ops.straight_through):
        activation = "sign" if make is keras_linbp.straight_through else keras_linbp.activations.sign
        with pytest.raises(error) as info:
            make(activation, clip=value)
        _assert_names(info, "clip")


def test_weight_clip_value_is_checked():
    for value, error in [("abc", TypeError), (None, TypeError), (0.0, ValueError), (float("nan"), ValueError)]:
        with pytest.raises(error) as info:
            binary.WeightClip(value)
        _assert_names(info, "clip_value")


def _functional_parts():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="tanh", name="dense")(inputs)
    return inputs, keras.layers.Dense(2, name="out")(hidden)


@pytest.mark.parametrize("value,error", BAD_DEPTHS, ids=repr)
def test_model_from_depth_is_checked(value, error):
    with pytest.raises(error) as info:
        LinearBackpropModel(*_functional_parts(), from_depth=value)
    _assert_names(info, "from_depth")


def test_from_depth_is_kept_as_an_int():
    model = LinearBackpropModel(*_functional_parts(), from_depth=np.int64(2))
    assert model.from_depth == 2 and type(model.from_depth) is int


@pytest.mark.parametrize("value,error", BAD_SITES, ids=repr)
def test_model_sites_is_checked(value, error):
    with pytest.raises(error) as info:
        LinearBackpropModel(*_functional_parts(), sites=value)
    _assert_names(info, "sites")


@pytest.mark.parametrize("name", ["include_output", "include_softmax", "include_gates"])
def test_model_flags_are_checked(name):
    with pytest.raises(TypeError, match=f"`{name}` must be True or False"):
        LinearBackpropModel(*_functional_parts(), **{name: "yes"})


def test_model_backprop_is_checked_whatever_its_type():
    for value in (["linear"], 1, None):
        with pytest.raises(ValueError, match="Unknown `backprop` value"):
            LinearBackpropModel(*_functional_parts(), backprop=value)


def test_binary_layer_arguments_are_checked():
    for make in (
        lambda **kw: binary.BinaryDense(3, **kw),
        lambda **kw: binary.BinaryConv2D(3, 3, **kw),
    ):
        with pytest.raises(TypeError, match="`binarize_inputs` must be True or False"):
            make(binarize_inputs="no")
        for rule in (123, ["ste"], None, "exact"):
            with pytest.raises(ValueError, match="rule="):
                make(rule=rule)
    with pytest.raises(ValueError, match="rule="):
        binary.BinarySign(rule=None)


def test_activation_argument_is_checked():
    with pytest.raises(TypeError, match="name or a callable"):
        keras_linbp.linear_backprop(123)
    with pytest.raises(TypeError, match="callable"):
        keras_linbp.ops.linear_backprop(123)


class TwoArgumentModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(3, activation="tanh")
        self.head = keras.layers.Dense(2)

    def call(self, a, b):
        return self.head(self.hidden(a) + b)


class OptionalSecondArgumentModel(TwoArgumentModel):
    def call(self, a, b=None, training=None):
        hidden = self.hidden(a)
        return self.head(hidden if b is None else hidden + b)


def test_from_model_refuses_a_call_with_two_required_inputs():
    model = TwoArgumentModel(name="two_inputs")
    x = np.zeros((2, 3), "float32")
    model(x, x)
    with pytest.raises(ValueError) as info:
        LinearBackpropModel.from_model(model)
    message = str(info.value)
    assert "'two_inputs'" in message and "call(a, b)" in message and "a, b = inputs" in message
    assert "missing a required argument" not in message


def test_from_model_accepts_a_call_whose_other_arguments_are_optional():
    model = OptionalSecondArgumentModel()
    x = np.ones((2, 3), "float32")
    model(x)
    wrapped = LinearBackpropModel.from_model(model)
    np.testing.assert_allclose(wrapped(x).numpy(), model(x).numpy(), rtol=1e-6)


# --- the `forward` property is gone from the class -----------------------------


def test_layers_define_no_attribute_named_forward():
    # On Keras's PyTorch backend a class attribute `forward` would replace
    # torch.nn.Module.forward and bypass call().
    for cls in [layers.LinearBackprop, *layers.NAMED_LAYERS, binary.BinarySign]:
        for klass in cls.__mro__:
            if klass.__module__.startswith("keras_linbp"):
                assert "forward" not in vars(klass), klass


def test_activation_fn_and_deprecated_forward_alias():
    layer = layers.LinBPGELU()
    assert layer.activation_fn is keras.activations.gelu
    with pytest.warns(DeprecationWarning, match="activation_fn"):
        assert layer.forward is keras.activations.gelu
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not hasattr(layer, "no_such_attribute")


# --- the rule module depends on nothing else in the package --------------------


def _package_imports(module_file):
    """Names of keras_linbp modules that `module_file` imports, anywhere in it."""
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "keras_linbp":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("keras_linbp."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_linbp."):
                    found.add(alias.name.split(".")[1])
    return found


def test_module_layering_has_no_cycles():
    # leaf -> table -> rules -> rule functions -> linbp_* -> layers -> binary
    # layers: each may import only modules to its left.
    allowed = {
        "_validation": set(),
        "_few_bit": set(),
        "_table": set(),
        "_backend": {"_few_bit"},
        "_derivatives": set(),
        "tables": {"_validation", "_derivatives", "_table"},
        "ops": {"_validation", "_table", "rules", "tables"},
        "activations": {"_validation", "_table", "ops", "rules"},
        "layers": {"_validation", "ops", "activations", "rules"},
        "binary": {"_validation", "ops", "activations", "layers"},
    }
    for module, may_import in allowed.items():
        imported = _package_imports(PACKAGE / f"{module}.py")
        assert imported <= may_import, (module, imported - may_import)


# --- other Keras backends ------------------------------------------------------

BACKEND_SCRIPT = r"""
import json, numpy as np
import keras, keras_linbp
x = np.zeros((2, 3), "float32")
inputs = keras.Input((3,))
entry_points = {
    "linear_backprop": lambda: keras_linbp.linear_backprop("tanh"),
    "ops.linear_backprop": lambda: keras_linbp.ops.linear_backprop(keras.activations.tanh),
    "straight_through": lambda: keras_linbp.straight_through("sign"),
    "linbp_tanh": lambda: keras_linbp.activations.linbp_tanh(x),
    "Dense(activation=linbp_relu)": lambda: keras.layers.Dense(2, activation=keras_linbp.activations.linbp_relu)(x),
    "LinearBackprop": lambda: keras_linbp.LinearBackprop("tanh"),
    "LinBPTanh": lambda: keras_linbp.layers.LinBPTanh(),
    "BinaryDense": lambda: keras_linbp.binary.BinaryDense(2),
    "BinaryConv2D": lambda: keras_linbp.binary.BinaryConv2D(2, 3),
    "BinarySign": lambda: keras_linbp.binary.BinarySign(),
    "LinearBackpropModel": lambda: keras_linbp.LinearBackpropModel(),
    "LinearBackpropModel(inputs, outputs)": lambda: keras_linbp.LinearBackpropModel(
        inputs, keras.layers.Dense(2)(inputs)),
}
report = {"backend": keras.backend.backend()}
for name, make in entry_points.items():
    try:
        make()
        report[name] = None
    except Exception as error:
        report[name] = [type(error).__name__, str(error)]
print("REPORT" + json.dumps(report))
"""


@pytest.mark.parametrize("backend", ["torch", "jax", "numpy"])
def test_every_entry_point_works_on_jax_and_torch_and_names_other_backends(backend):
    # Keras's numpy backend imports jax itself (its nn ops are jax.lax's).
    framework = "jax" if backend == "numpy" else backend
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"Keras's {backend} backend needs {framework}, which is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", BACKEND_SCRIPT], env=env, cwd=REPO,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]  # `import keras_linbp` works
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("REPORT")]
    report = json.loads(line[len("REPORT"):])
    assert report.pop("backend") == backend
    for name, error in report.items():
        if backend in ("torch", "jax"):
            assert error is None, (backend, name, error)
            continue
        assert error is not None, f"{name} raised nothing on {backend}"
        error_type, message = error
        assert error_type == "NotImplementedError", (name, error)
        assert f"'{backend}'" in message and "TensorFlow, JAX and PyTorch" in message, (name, message)
