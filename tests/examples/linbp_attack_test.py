"""Smoke test of examples/linbp_attack.py: gradients, I-FGSM and `--smoke`."""

import json
import math

import numpy as np
import pytest

from _examples import load_example

pytest.importorskip("sklearn")


def test_exact_input_gradient_and_i_fgsm_stay_in_budget():
    attack = load_example("linbp_attack")
    x_train, x_test, y_train, y_test = attack.load_data()
    assert x_train.shape[1:] == (8, 8, 1) and 0.0 <= x_train.min() and x_train.max() <= 1.0
    source = attack.build_source()
    x, y = x_test[:16], y_test[:16]
    gradient = attack.input_gradient(source, x, y).numpy()
    assert gradient.shape == x.shape and np.all(np.isfinite(gradient))
    assert np.any(gradient != 0)

    eps = 0.1
    x_adv = attack.i_fgsm(source, x, y, eps, iterations=3)
    assert x_adv.shape == x.shape
    assert np.max(np.abs(x_adv - x)) <= eps + 1e-6
    assert 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    assert attack.number_of_sites(source) == 4


def test_smoke_run_writes_results_json_and_png(tmp_path, capsys):
    attack = load_example("linbp_attack")
    returned = attack.main(["--out", str(tmp_path), "--smoke"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert set(results) >= {"eps", "exact", "linbp", "command"}
    assert "--smoke" in results["command"]
    assert [row["from_depth"] for row in results["linbp"]] == [1, 2, 3, 4]
    for row in [results["exact"], *results["linbp"]]:
        for key in ("white_box_success", "transfer_success"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0
    assert (tmp_path / "transfer_vs_depth.png").stat().st_size > 0
    assert "exact backprop" in capsys.readouterr().out
