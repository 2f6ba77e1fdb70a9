"""tests/all_backends.py, the README's test runner: the total it prints."""

import importlib.util
import pathlib

RUNNER = pathlib.Path(__file__).resolve().parents[1] / "all_backends.py"


def _runner():
    spec = importlib.util.spec_from_file_location("all_backends_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The end of the TensorFlow 2.16 run in the minimum-version CI stage: TF's
# timestamped native errors come after pytest's summary. The runner took the
# last line as the summary and counted 0 tests for that stage.
TF_216_TAIL = """\
........................................................................ [ 93%]
................s......ss....................................            [100%]
894 passed, 29 skipped, 2 xfailed, 2 warnings in 319.05s (0:05:19)
2026-12-04 00:34:07.320913: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered
2026-12-04 00:34:07.347936: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:10575] Unable to register cuDNN factory
I0000 00:00:1796345669.820821    5587 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used."""


def test_summary_is_pytests_line_even_with_native_logs_after_it():
    runner = _runner()
    lines = [line for line in TF_216_TAIL.splitlines() if not runner.NATIVE_LOG_LINE.match(line)]
    assert lines[-1].startswith("894 passed")
    assert runner.summary_line(TF_216_TAIL.splitlines()) == lines[-1]


def test_no_summary_is_empty():
    runner = _runner()
    assert runner.summary_line(["Traceback (most recent call last):", "ImportError: x"]) == ""
    assert runner.summary_line(["1 failed, 2 passed in 0.1s", "Fatal Python error"]) == "1 failed, 2 passed in 0.1s"
