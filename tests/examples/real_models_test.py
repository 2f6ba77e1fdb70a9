"""Smoke test of benchmarks/real_models.py: `--quick` writes a sane results.json.

The benchmark pins TensorFlow's thread pools before any op runs, which a
pytest process that already ran ops cannot do: it runs in a subprocess.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "real_models.py"


def test_quick_run_writes_results_json(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--quick"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"models", "command", "noise_floor", "config", "markdown_table"}
    assert "--quick" in results["command"]
    (row,) = results["models"]
    assert set(row) >= {
        "model", "linear_sites", "peak_mib", "linear_over_exact", "step_time_linear_over_exact",
    }
    # The tiny model's three hidden activations (relu, gelu, tanh) are linear.
    assert row["model"] == "TinyCNN" and row["linear_sites"] == 3
    for value in (*row["peak_mib"].values(), row["step_time_linear_over_exact"],
                  row["step_time_exact_over_exact"]):
        assert math.isfinite(value) and value > 0
    assert math.isfinite(results["noise_floor"]["time"]["max_abs_deviation"])
    assert set(row["peak_mib"]) == {"exact", "linear", "exact_again"}
    assert math.isfinite(row["memory_exact_over_exact"])
    assert (tmp_path / "table.md").read_text().count("| TinyCNN |") == 1
    assert "TinyCNN" in completed.stdout


def test_unknown_model_is_rejected(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--models", "NoSuchNet"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode != 0 and "invalid choice" in completed.stderr
