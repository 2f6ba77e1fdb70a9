"""The command line a results.json records is the one a reader types at the
repository root: repository-relative, no path of the machine that ran it."""

import json
import os
import pathlib
import re

import pytest

from _examples import load_example

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = sorted((ROOT / "results").glob("*/results.json"))
SCRIPTS = sorted([*(ROOT / "examples").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])
MACHINE_PATH = re.compile(r"(^|[\s=])/|/work\b|/tmp\b|/home\b")


def _commands(value):
    """Every "command" string anywhere in a results.json."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "command" and isinstance(item, str):
                yield item
            else:
                yield from _commands(item)
    elif isinstance(value, list):
        for item in value:
            yield from _commands(item)


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.parent.name)
def test_committed_results_record_a_repository_relative_command(path):
    # (quickstart, binary_cifar10 and the single-run paper figure record none.)
    for command in _commands(json.loads(path.read_text(encoding="utf-8"))):
        assert not MACHINE_PATH.search(command), f"{path}: {command!r} names a machine path"
        for part in command.split(" && "):
            assert re.match(r"python (examples|benchmarks)/\w+\.py( |$)", part), f"{path}: {part!r}"


def test_repo_command_writes_paths_inside_the_repository_relative_to_it(tmp_path, monkeypatch):
    command = load_example("_command")
    root = str(tmp_path / "repo")
    script = os.path.join(root, "examples", "deep_nets.py")
    monkeypatch.chdir(tmp_path)  # not the root: the result must not depend on it
    assert command.repo_command(script, ["--out", os.path.join(root, "results", "deep_nets"), "--seeds", 3],
                                root=root) == "python examples/deep_nets.py --out results/deep_nets --seeds 3"
    assert command.repo_command(script, [f"--out={root}/results/x"], root=root) == (
        "python examples/deep_nets.py --out=results/x"
    )
    # Relative paths, plain values and paths outside the repository stay as given.
    outside = str(tmp_path / "elsewhere")
    assert command.repo_command(script, ["--out", "results/x", "--lr=0.1", outside], root=root) == (
        f"python examples/deep_nets.py --out results/x --lr=0.1 {outside}"
    )
    # A sibling directory whose name starts like the root's is outside it.
    assert command.repo_command(script, [root + "2/x"], root=root).endswith(f" {root}2/x")


def test_repo_command_defaults_to_this_repository_and_sys_argv(monkeypatch):
    command = load_example("_command")
    monkeypatch.setattr("sys.argv", ["ignored", "--out", str(ROOT / "results" / "quickstart")])
    assert command.repo_command(str(ROOT / "benchmarks" / "step_time.py")) == (
        "python benchmarks/step_time.py --out results/quickstart"
    )


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_that_records_a_command_uses_repo_command(path):
    text = path.read_text(encoding="utf-8")
    if not re.search(r"""["']command["']\]?\s*[:=]""", text):
        pytest.skip("records no command")
    assert "repo_command(__file__" in text, f"{path.name} builds its results.json command itself"
