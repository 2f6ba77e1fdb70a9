"""One version number, the declared licence file, and `__all__` on public modules."""

import ast
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

import keras_linbp

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_setup_py_reports_the_package_version():
    result = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == keras_linbp.__version__
    assert keras_linbp.__version__ == "0.2.0"


def test_license_file_is_the_apache_2_licence_setup_py_declares():
    setup_text = (REPO / "setup.py").read_text(encoding="utf-8")
    assert 'license="Apache-2.0"' in setup_text and '"LICENSE"' in setup_text
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    # The full text, not a stub: all nine sections and the end marker.
    for section in range(1, 10):
        assert f"\n   {section}. " in text, section
    assert "END OF TERMS AND CONDITIONS" in text


PUBLIC_MODULES = [
    "keras_linbp",
    "keras_linbp.activations",
    "keras_linbp.binary",
    "keras_linbp.layers",
    "keras_linbp.ops",
    "keras_linbp.linearize",
    "keras_linbp.calibration",
    "keras_linbp.options",
    "keras_linbp.summary",
    "keras_linbp.models",
    "keras_linbp.sites",
    "keras_linbp.tags",
    "keras_linbp.render",
    "keras_linbp.callbacks",
    "keras_linbp.callbacks.saturation",
    "keras_linbp.callbacks.gradient_flow",
    "keras_linbp.report",
    "keras_linbp.plotting",
]


def _defined_public_names(module):
    """Public functions, classes and upper-case constants the module defines."""
    path = pathlib.Path(module.__file__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and (target.id.isupper() or target.id.startswith("linbp_")):
                    names.add(target.id)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_declare_all(name):
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    for public in exported:
        assert hasattr(module, public), public
    missing = _defined_public_names(module) - set(exported)
    assert not missing, f"{name} defines public names missing from __all__: {sorted(missing)}"


def test_star_import_gives_the_documented_entry_points():
    namespace = {}
    exec("from keras_linbp import *", namespace)
    for public in ("linear_backprop", "straight_through", "LinearBackprop", "LinearBackpropModel"):
        assert public in namespace
    assert namespace["linear_backprop"] is keras_linbp.activations.linear_backprop


def test_readme_links_work_on_the_package_index_too():
    # setup.py ships README.md as the long description; the package index
    # renders it with no source tree beside it and no heading anchors, so
    # a relative link (`docs/RESULTS.md`) or an in-page one (`#quickstart`)
    # is dead there. Files of the tree are named as text paths instead.
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"""(?:src|href)=["']([^"']+)""", text)
    assert targets, "the README links to the paper and references"
    relative = [target for target in targets if not re.match(r"https?://", target)]
    assert not relative, f"links that break off the repository: {relative}"
    # The paths it names instead exist.
    for path in set(re.findall(r"`((?:docs|examples|benchmarks|tests|results)/[^`\s*]+)`", text)):
        if "<" not in path:
            assert (REPO / path).exists(), path


def test_test_file_basenames_are_unique():
    # pytest imports test files by basename (no packages under tests/): two
    # files of one name fail at collection ("import file mismatch").
    names = [path.name for path in (REPO / "tests").rglob("*_test.py")]
    names += [path.name for path in (REPO / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
