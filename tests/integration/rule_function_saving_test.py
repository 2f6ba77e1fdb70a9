"""A `.keras` file holding rule functions (`few_bit(...)`, `linear_backprop(...)`,
`straight_through(...)`) and rule layers, saved on each Keras backend,
loads on every backend with the same outputs and the same rules.

One process saves per backend, one loads all the files per backend (Keras
picks its backend at import). Backends whose framework is missing are left
out.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BACKENDS = [b for b, module in (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch"))
            if importlib.util.find_spec(module) is not None]

SAVE = r"""
import json, sys, numpy as np, keras, keras_linbp
keras.utils.set_random_seed(0)
inputs = keras.Input((4,))
h = keras.layers.Dense(5, activation=keras_linbp.few_bit("gelu", bits=2), name="few")(inputs)
h = keras.layers.Dense(5, activation=keras_linbp.linear_backprop("tanh", slope=0.25), name="lin")(h)
h = keras.layers.Activation(keras_linbp.straight_through("sign", clip=2.0), name="ste")(h)
h = keras_linbp.layers.FewBit("silu", bits=3, name="layer")(h)
model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
model.save(sys.argv[1])
x = np.linspace(-2, 2, 12, dtype="float32").reshape(3, 4)
print("OUT" + json.dumps(keras.ops.convert_to_numpy(model(x)).tolist()))
"""

LOAD = r"""
import json, sys, numpy as np, keras, keras_linbp
from keras_linbp import rules
x = np.linspace(-2, 2, 12, dtype="float32").reshape(3, 4)
report = {}
for path in sys.argv[1:]:
    model = keras.saving.load_model(path)
    found = {name: rules.serialize(rules.rule_of(model.get_layer(name).activation))
             for name in ("few", "lin", "ste")}
    found["layer"] = rules.serialize(rules.rule_of(model.get_layer("layer")))
    report[path] = {"out": keras.ops.convert_to_numpy(model(x)).tolist(), "rules": found}
print("OUT" + json.dumps(report))
"""

EXPECTED_RULES = {
    "few": {"rule": "few_bit", "config": {"bits": 2, "table": "gelu", "params": None}},
    "lin": {"rule": "linear", "config": {"slope": 0.25}},
    "ste": {"rule": "straight_through", "config": {"clip": 2.0}},
    "layer": {"rule": "few_bit", "config": {"bits": 3, "table": "silu", "params": None}},
}


def _run(backend, script, *args):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (backend, result.stderr[-3000:])
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("OUT")]
    return json.loads(line[3:])


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two Keras backends installed")
def test_rule_functions_load_on_every_backend_pair(tmp_path):
    import numpy as np

    saved = {}
    for backend in BACKENDS:
        path = str(tmp_path / f"{backend}.keras")
        saved[path] = _run(backend, SAVE, path)
    for backend in BACKENDS:
        report = _run(backend, LOAD, *saved)
        for path, outputs in saved.items():
            assert report[path]["rules"] == EXPECTED_RULES, (backend, path)
            np.testing.assert_allclose(report[path]["out"], outputs, rtol=1e-5, atol=1e-6,
                                       err_msg=f"saved {path}, loaded on {backend}")
