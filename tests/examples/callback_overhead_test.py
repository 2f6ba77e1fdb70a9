"""benchmarks/callback_overhead.py --quick writes a whole results.json (in a
subprocess: the benchmark pins its framework's threads before any op)."""

import json

import pytest

from _examples import assert_finite, run_script

CONFIGURATIONS = {"baseline", "baseline_repeat", "saturation", "saturation_no_image", "gradient_flow"}


@pytest.mark.slow
def test_quick_run_writes_results_json(tmp_path):
    completed = run_script("benchmarks/callback_overhead.py", "--quick", "--out", tmp_path)

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"benchmark", "model", "method", "backend", "command", "configurations",
                            "baseline_epoch_seconds", "image_render_seconds", "ratio", "noise_floor_ratio"}
    assert results["command"] == f"python benchmarks/callback_overhead.py --quick --out {tmp_path}"
    assert results["quick"] and results["backend"] == "tensorflow"
    assert (results["train_size"], results["validation_size"], results["steps_per_epoch"]) == (256, 64, 8)
    assert results["model"] == "digits MLP 64-128-128-10 tanh, Adam, batch 32"
    assert set(results["configurations"]) == CONFIGURATIONS
    for name, row in results["configurations"].items():
        assert row["median_epoch_seconds"] > 0 and row["ratio_to_baseline"] > 0
        assert row["epoch_samples"] == 1  # the second round's one epoch
        assert ("probe_seconds" in row) == (name in {"saturation_no_image", "gradient_flow"})
    assert results["configurations"]["baseline"]["ratio_to_baseline"] == 1.0
    assert results["image_render_seconds"] > 0
    assert_finite(results)
    assert "gradient_flow" in completed.stdout
