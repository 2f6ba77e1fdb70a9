"""The release artefacts: the sdist holds the source tree a user is pointed
to, and the wheel built from it installs into a fresh venv and trains.

Offline: the sdist comes from `setup.py sdist`, the wheel from that sdist
with `pip wheel --no-build-isolation --no-index` (this venv's setuptools),
and the fresh venv sees this venv's TensorFlow / Keras through a path file
but none of its keras_linbp (an editable install is a `.pth` hook, which a
path file does not run).
"""

import json
import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import textwrap

import numpy as np
import pytest

import keras_linbp

REPO = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 600


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """`(sdist path, wheel path)`, built once for the module."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "setup.py", "-q", "sdist", "-d", str(out)], cwd=REPO)
    # `keras_linbp-*` (setuptools >= 69) or `keras-linbp-*` (older).
    (sdist,) = out.glob("keras[-_]linbp-*.tar.gz")
    with tarfile.open(sdist) as archive:
        # The "data" filter where this Python has it (3.11.4+).
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(out / "unpacked", **extra)
    (source,) = (out / "unpacked").iterdir()
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(source)],
        cwd=out,
    )
    (wheel,) = out.glob("keras_linbp-*.whl")
    return sdist, wheel


def test_sdist_holds_the_examples_docs_tests_and_licence(artefacts):
    sdist, _ = artefacts
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    # What the README points a reader of the sdist to, besides the package.
    for expected in (
        "LICENSE", "README.md", "CHANGELOG.md", "MANIFEST.in", "setup.py", "mkdocs.yml",
        "examples/quickstart.py", "benchmarks/step_time.py", "docs/RESULTS.md",
        "docs/guide/rule.md", "tests/conftest.py", "tests/all_backends.py",
        "results/quickstart/results.json", "keras_linbp/layers.py",
    ):
        assert expected in names, expected
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert sdist.name.replace("keras-linbp", "keras_linbp") == f"keras_linbp-{keras_linbp.__version__}.tar.gz"


def test_wheel_installs_into_a_fresh_venv_and_trains_one_step(artefacts, tmp_path):
    _, wheel = artefacts
    assert wheel.name.startswith(f"keras_linbp-{keras_linbp.__version__}-py3-none-any")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = pathlib.Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    )
    # This venv's packages (TensorFlow, Keras, numpy), after the wheel's.
    (site / "parent_venv.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)])

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype("float32")
    y = rng.standard_normal((4, 2)).astype("float32")
    w0 = rng.standard_normal((3, 2)).astype("float32")
    script = textwrap.dedent(
        f"""
        import json, sys
        import keras, numpy as np
        import keras_linbp
        x = np.array({x.tolist()}, "float32"); y = np.array({y.tolist()}, "float32")
        model = keras.Sequential([
            keras.Input((3,)),
            keras.layers.Dense(2, use_bias=False),
            keras_linbp.layers.LinBPTanh(),
        ])
        model.layers[0].kernel.assign(np.array({w0.tolist()}, "float32"))
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        print(json.dumps({{"file": keras_linbp.__file__, "version": keras_linbp.__version__,
                          "kernel": keras.ops.convert_to_numpy(model.layers[0].kernel).tolist()}}))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow",
           "HOME": str(tmp_path)}
    result = _run([str(python), "-c", script], cwd=tmp_path, env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The wheel's copy ran, not the source tree's.
    assert pathlib.Path(report["file"]).is_relative_to(site), report["file"]
    assert report["version"] == keras_linbp.__version__
    # numpy reference: mse = mean((h - y)^2), linear rule skips tanh'.
    h = np.tanh(x @ w0)
    grad_a = 2.0 * (h - y) / h.size
    expected = w0 - 0.1 * (x.T @ grad_a)
    np.testing.assert_allclose(np.array(report["kernel"]), expected, rtol=1e-5, atol=1e-6)
    # ... and differs from the exact-backprop step.
    exact = w0 - 0.1 * (x.T @ (grad_a * (1.0 - h**2)))
    assert not np.allclose(np.array(report["kernel"]), exact, atol=1e-4)
