"""Smoke test of examples/recurrent_nets.py, and its task against numpy."""

import json

import numpy as np

from _examples import load_example


def test_labels_are_the_argmax_of_first_half_sums():
    recurrent = load_example("recurrent_nets")
    x_train, y_train, x_val, y_val = recurrent.make_data(20, 5)
    x = np.concatenate([x_train, x_val])
    y = np.concatenate([y_train, y_val])
    for sequence, label in zip(x, y):
        sums = [sum(step[f] for step in sequence[:15]) for f in range(3)]
        assert label == int(np.argmax(sums))


def test_smoke_run_writes_results_and_table(tmp_path):
    recurrent = load_example("recurrent_nets")
    returned = recurrent.main(["--out", str(tmp_path), "--smoke"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert [r["rule"] for r in results["runs"]] == [label for label, _, _ in recurrent.RULES]
    for run in results["runs"]:
        assert len(run["seeds"]) == 1 and len(run["seeds"][0]["loss_per_epoch"]) == 2
        assert 0.0 <= run["val_accuracy_mean"] <= 1.0
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n") == 2 + len(results["runs"])
