"""examples/few_bit_calibration.py: its fitted tables against the N(0, 1)
ones on the observed pre-activations, its layer against the few-bit rule,
and a quick run."""

import json

import keras
import numpy as np

import keras_linbp
from _examples import load_example


def test_fitted_tables_fit_each_layers_pre_activations_better():
    study = load_example("few_bit_calibration")
    x = study.few_bit.digits()[0][:256]
    keras.utils.set_random_seed(0)
    observed = study.pre_activations(study.build("gelu", [None] * study.DEPTH), x)
    assert len(observed) == study.DEPTH and observed[0].shape == (256, study.WIDTH)
    for bits in (1, 2):
        fitted = study.rule_tables("gelu", bits, True, observed)
        standard = study.rule_tables("gelu", bits, False, observed)
        for a, f, s in zip(observed, fitted, standard):
            assert study.table_mse("gelu", a, f) < study.table_mse("gelu", a, s)


def test_table_activation_is_the_few_bit_rule_of_its_table():
    study = load_example("few_bit_calibration")
    bounds, levels = keras_linbp.tables.few_bit_table("silu", 2)
    layer = study.TableActivation("silu", (bounds, levels))
    a = np.linspace(-3, 3, 13).astype("float32")
    x = keras.ops.convert_to_tensor(a)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               keras.ops.convert_to_numpy(keras.activations.silu(x)), rtol=1e-6)
    gradient = keras_linbp._backend.elementwise_derivative(layer, x)
    np.testing.assert_allclose(gradient, levels[np.searchsorted(bounds, a, side="right")], rtol=1e-6)


def test_quick_run_writes_results_and_one_row(tmp_path):
    study = load_example("few_bit_calibration")
    runs = study.main(["--out", str(tmp_path), "--quick"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"].startswith("python examples/few_bit_calibration.py ")
    assert [r["rule"] for r in results["runs"]] == [r["rule"] for r in runs] == [
        "exact", "few-bit 1", "few-bit 1, fitted", "few-bit 2", "few-bit 2, fitted"]
    assert len((tmp_path / "table.md").read_text().splitlines()) == 3
