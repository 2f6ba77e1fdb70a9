"""benchmarks/auto_slope_candidates.py --quick writes a whole results.json."""

import json

from _examples import assert_finite, run_script


def test_quick_run_writes_results_json(tmp_path):
    run_script("benchmarks/auto_slope_candidates.py", "--quick", "--out", tmp_path)

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"] == f"python benchmarks/auto_slope_candidates.py --quick --out {tmp_path}"
    assert results["quick"] and results["batch"] == 8
    (row,) = results["rows"]
    assert row["model"] == "MobileNetV2" and row["seed"] == 0
    assert row["linear_sites"] > 30  # MobileNetV2's ReLU6 sites
    assert row["exact"] > 0
    for key in ("linear_slope_1", "linear_auto_rms", "linear_auto_mean"):
        assert row[key] > 0
        assert row[f"{key}_over_exact"] == row[key] / row["exact"]
    # Calibrated slopes of ReLU6: sqrt(fraction in (0, 6)) and that fraction, in (0, 1].
    assert 0.0 < row["median_slope_mean"] <= row["median_slope_rms"] <= 1.0
    assert_finite(results)
