"""Runs the test suite once per Keras backend: TensorFlow (every test), then
JAX and PyTorch (the tests marked `all_backends`).

    python tests/all_backends.py [pytest arguments]

Each backend runs in its own process (Keras picks its backend at import).
A backend whose framework is not installed is skipped with a message. The
last line is the total over backends, `N passed, N failed`; the exit status
is non-zero if any run failed.
"""

import importlib.util
import os
import re
import subprocess
import sys

BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
HERE = os.path.dirname(os.path.abspath(__file__))
# TensorFlow's native log lines, which no Python log level reaches: absl's
# (`I0000 ...`, TF 2.21) and the timestamped ones of TF 2.16
# (`2026-12-04 00:34:07.320913: E ... Unable to register cuFFT factory`),
# which it prints after pytest's summary.
NATIVE_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} |WARNING: All log messages before absl|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )"
)


def summary_line(lines):
    """pytest's final `N passed, ...` line among `lines` (the last one that
    counts tests), or "" when there is none (a crash)."""
    for line in reversed(lines):
        if re.search(r"\d+ (passed|failed|errors?|skipped)\b", line) and " in " in line:
            return line
    return ""


def main(argv):
    pytest_args = argv or ["-n", "2", "-q"]
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    status = 0
    for backend, module in BACKENDS.items():
        if importlib.util.find_spec(module) is None:
            print(f"== {backend}: not installed, skipped", flush=True)
            continue
        print(f"== KERAS_BACKEND={backend}", flush=True)
        env = dict(os.environ, KERAS_BACKEND=backend)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        run = subprocess.run(
            [sys.executable, "-m", "pytest", *pytest_args, HERE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = [line for line in run.stdout.splitlines() if not NATIVE_LOG_LINE.match(line)]
        print("\n".join(lines), flush=True)
        summary = summary_line(lines)
        for key in totals:
            found = re.search(rf"(\d+) {key[:-1] if key == 'errors' else key}", summary)
            if found:
                totals[key] += int(found.group(1))
        if run.returncode not in (0,):
            status = 1
            if not re.search(r"\d+ failed", summary):
                totals["failed"] += 1  # a crash or collection error
    print(f"{totals['passed']} passed, {totals['failed'] + totals['errors']} failed, {totals['skipped']} skipped")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
