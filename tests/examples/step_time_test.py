"""benchmarks/step_time.py --smoke writes a whole results.json, on each
backend installed. (Its results were once lost to an undefined name in the
last step, `save_results`, after every case had run.)

The benchmark pins its framework's threads before any op runs: it runs in a
subprocess (`run_script`)."""

import importlib.util
import json

import pytest

from _examples import assert_finite, run_script

VARIANTS = {"exact", "linear_model", "linear_layers", "identity"}
# jit_compile values timed (PyTorch: eager only without --torch-compile)
# and measured for memory (JAX's compiled temp size: once, under True).
JIT = {"tensorflow": ([False, True], [False, True]), "jax": ([False, True], [True]),
       "torch": ([False], [False])}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_smoke_run_writes_results_json_and_table(tmp_path, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    argv = ["--backend", backend, "--smoke", "--models", "mlp_gelu", "--out", tmp_path]
    completed = run_script("benchmarks/step_time.py", *argv, backend=backend)

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"backend", "cases", "memory", "device_memory", "errors",
                            "complete", "targets", "config"}
    assert results["backend"] == backend and results["complete"] and results["errors"] == []
    config = results["config"]
    assert config["command"] == " ".join(["python benchmarks/step_time.py", *map(str, argv)])
    assert config["smoke"] and config["models"] == ["mlp_gelu"]
    assert config["memory_processes"] == "this one (--smoke)"
    assert config["tensorflow_imported"] == (backend == "tensorflow")
    timed, measured = JIT[backend]
    assert [(c["model"], c["jit_compile"]) for c in results["cases"]] == [("mlp_gelu", j) for j in timed]
    for case in results["cases"]:
        assert set(case["ms_per_step"]) == VARIANTS
        assert all(ms > 0 for ms in case["ms_per_step"].values())
        for key in ("linear_over_exact", "model_over_layers", "linear_over_identity"):
            assert case[key] > 0
        assert set(case["step_size"]) == VARIANTS
    assert [(m["model"], m["jit_compile"]) for m in results["memory"]] == [("mlp_gelu", j) for j in measured]
    for row in results["memory"]:
        assert set(row["mib"]) == VARIANTS and all(mib >= 0 for mib in row["mib"].values())
    assert results["device_memory"] == []  # no GPU here
    assert len(results["targets"]) == len(measured) + 2 * len(timed)
    assert all(isinstance(row["met"], bool) for row in results["targets"])
    assert_finite(results)
    assert "| MLP GELU |" in (tmp_path / "table.md").read_text()
    assert "wrote " in completed.stdout
