"""benchmarks/few_bit_memory.py --smoke writes a whole results.json (in a
subprocess: the benchmark pins its framework's threads before any op)."""

import json

import pytest

from _examples import assert_finite, run_script

VARIANTS = {"exact", "linear", "few_bit_1", "few_bit_2", "few_bit_3", "few_bit_4", "from_output", "remat_activations"}
TIMED = {"exact", "linear", "few_bit_2", "from_output", "remat_activations"}


@pytest.mark.slow
def test_smoke_run_writes_results_json_and_table(tmp_path):
    run_script("benchmarks/few_bit_memory.py", "--smoke", "--out", tmp_path)

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"backend", "memory", "time", "errors", "targets", "config"}
    assert results["backend"] == "tensorflow" and results["errors"] == []
    config = results["config"]
    assert config["command"] == f"python benchmarks/few_bit_memory.py --smoke --out {tmp_path}"
    assert config["smoke"] and not config["quick"] and config["models"] == ["GeluMLP"]
    assert config["memory_processes"] == "this one (--smoke)"
    # TensorFlow: graph mode and XLA, for memory and for time.
    assert [(m["model"], m["jit_compile"]) for m in results["memory"]] == [("GeluMLP", False), ("GeluMLP", True)]
    for row in results["memory"]:
        assert set(row["mib"]) == VARIANTS and all(mib >= 0 for mib in row["mib"].values())
    assert [(t["model"], t["jit_compile"]) for t in results["time"]] == [("GeluMLP", False), ("GeluMLP", True)]
    for row in results["time"]:
        assert set(row["ms_per_step"]) == TIMED and all(ms > 0 for ms in row["ms_per_step"].values())
        assert all(row[f"{v}_over_exact"] > 0 for v in TIMED - {"exact"})
    assert all(set(target) == {"misses", "cases"} for target in results["targets"].values())
    assert_finite(results)
    assert "| GeluMLP | True |" in (tmp_path / "table.md").read_text()
