"""Smoke test of examples/quickstart.py: a short run writes a sane results.json."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from _examples import load_example

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


# TensorFlow's native start-up lines, printed before Python can set a log
# level that reaches them: TF 2.21, absl's pre-init notice, `I0000 ...
# cudart_stub ...`, `E0000 ... cuInit ... (303)` on a machine without a GPU,
# `I0000 ... port.cc ...] oneDNN custom operations are on` on a CPU where
# oneDNN runs (TF_CPP_MIN_LOG_LEVEL=2 does not reach it: `python -c "import
# tensorflow"` prints it too);
# TF 2.16, timestamped errors (`2026-12-03 18:09:01.890947: E ... Unable to
# register cuFFT factory ...`), which no log level below 3 hides.
NATIVE_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EF] )"
)

STARTUP_INFO = ("cudart_stub", "oneDNN custom operations are on")


def test_quickstart_prints_its_summary_first_and_no_python_warnings(tmp_path):
    pytest.importorskip("sklearn")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--epochs", "1", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[0].startswith('LinearBackpropModel "'), run.stdout[:500]
    # The example itself sets TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's INFO and
    # WARNING logs after start-up, and every Python warning, stay out.
    others = [line for line in run.stderr.splitlines() if line.strip() and not NATIVE_LOG_LINE.match(line)]
    assert not others, "\n".join(others[:20])
    assert not [line for line in run.stderr.splitlines() if re.match(r"^[IW]\d{4} ", line)
                and not any(start_up in line for start_up in STARTUP_INFO)], run.stderr[-2000:]
