"""Smoke test of examples/few_bit.py, and its generated pointer task."""

import json

from _examples import load_example


def test_pointer_labels_are_the_token_at_the_last_tokens_position():
    few_bit = load_example("few_bit")
    tokens, labels = few_bit.pointer_task(50, length=8, vocabulary=8, seed=3)
    for sequence, label in zip(tokens, labels):
        position = sequence[-1]
        assert 0 <= position < 7 and label == sequence[position]


def test_quick_run_writes_results_and_a_table_row_per_case(tmp_path):
    few_bit = load_example("few_bit")
    cases = ["mlp_gelu_sgd"]
    returned = few_bit.main(["--out", str(tmp_path), "--quick", "--cases", *cases])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert results["command"].startswith("python examples/few_bit.py ")
    labels = [label for label, _ in few_bit.RULES]
    assert [(r["case"], r["rule"]) for r in results["runs"]] == [(c, l) for c in cases for l in labels]
    for run in results["runs"]:
        assert len(run["seeds"]) == 1
        assert 0.0 <= run["test_accuracy_median"] <= 1.0
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(cases) and table[0].count("|") == len(labels) + 2
