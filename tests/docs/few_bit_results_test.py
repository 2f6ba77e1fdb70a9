"""docs/RESULTS.md's few-bit tables are the committed results, row for row,
each beside the command that wrote it."""

import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS_PAGE = (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
ACCURACY_RUNS = sorted((REPO / "results" / "few_bit").glob("*/results.json"))
MEMORY_RUNS = sorted((REPO / "results" / "few_bit_memory").glob("*/results.json"))


def _median_cell(run):
    cell = f"{run['test_accuracy_median']:.3f}"
    if run["diverged_seeds"]:
        cell += f" ({len(run['diverged_seeds'])} NaN)"
    return cell


@pytest.mark.parametrize("path", ACCURACY_RUNS, ids=lambda p: p.parent.name)
def test_accuracy_row_and_command_are_on_the_results_page(path):
    results = json.loads(path.read_text())
    assert f"`{results['command']}`" in RESULTS_PAGE or results["command"] + "\n" in RESULTS_PAGE
    (case,) = results["cases"]
    cells = [_median_cell(r) for r in results["runs"]]
    assert f"| {case} | " + " | ".join(cells) + " |" in RESULTS_PAGE


@pytest.mark.parametrize("path", MEMORY_RUNS, ids=lambda p: p.parent.name)
def test_memory_table_and_command_are_on_the_results_page(path):
    results = json.loads(path.read_text())
    assert results["config"]["command"] in RESULTS_PAGE
    table = (path.parent / "table.md").read_text(encoding="utf-8")
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| model"):
            assert line in RESULTS_PAGE, line


def test_there_are_committed_results():
    assert len(ACCURACY_RUNS) >= 3


def test_calibration_study_table_and_command_are_on_the_results_page():
    directory = REPO / "results" / "few_bit_calibration"
    results = json.loads((directory / "results.json").read_text())
    assert f"{results['command']}\n" in RESULTS_PAGE
    for line in (directory / "table.md").read_text(encoding="utf-8").splitlines():
        assert line in RESULTS_PAGE, line
