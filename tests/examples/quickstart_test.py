"""Smoke test of examples/quickstart.py: a short run writes a sane results.json."""

import json

import pytest

from _examples import load_example


def test_quickstart_writes_results_json(tmp_path, capsys):
    pytest.importorskip("sklearn")
    quickstart = load_example("quickstart")
    returned = quickstart.main(["--epochs", "2", "--seed", "3", "--out", str(tmp_path)])

    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert results["dataset"] == "digits"
    assert results["epochs"] == 2 and results["seed"] == 3
    assert results["train_size"] + results["test_size"] == 1797
    assert set(results["rules"]) == {"exact", "linear"}
    for rule in results["rules"].values():
        assert set(rule) >= {"final_train_loss", "test_accuracy", "seconds_per_epoch"}
        # Two epochs already beat chance (10 classes) by far.
        assert 0.0 < rule["final_train_loss"] < 2.3
        assert 0.5 < rule["test_accuracy"] <= 1.0
        assert rule["seconds_per_epoch"] > 0.0
    # The two rules train differently from the same start.
    assert results["rules"]["exact"]["final_train_loss"] != results["rules"]["linear"]["final_train_loss"]

    table = capsys.readouterr().out
    assert "exact" in table and "linear" in table and "test accuracy" in table
