"""The package's rooms import downward only, and no unit grows past a size
one can read in a sitting (DESIGN.md: "Lower rooms never import higher
ones").

The order, lowest first; a module may import modules of its own level or
below. Package `__init__` files only re-export and are left out.
"""

import ast
import pathlib

import pytest

pytestmark = pytest.mark.all_backends

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "keras_linbp"

LEVELS = [
    {"_compat", "_versions", "_validation", "_backend", "_few_bit", "_probe_data", "_derivatives",
     "_table", "_from_output"},
    {"tables"},
    {"rules"},
    {"options", "ops"},
    {"activations"},
    {"layers", "binary"},
    {"sites"},
    {"linearize", "calibration", "summary"},
    {"models"},
    {"tags", "render", "plotting", "report"},
    {"callbacks"},
]
LEVEL_OF = {room: level for level, rooms in enumerate(LEVELS) for room in rooms}

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def _room(path):
    """The room of a module: its top-level name inside the package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_rooms(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = node.module.split(".")
            if names[0] != "keras_linbp":
                continue
            if len(names) > 1:
                yield names[1], node.lineno
            else:  # from keras_linbp import ops, sites as linbp_sites
                for alias in node.names:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "keras_linbp" and len(names) > 1:
                    yield names[1], node.lineno


def test_every_room_has_a_level():
    rooms = {_room(path) for path in _modules()}
    assert rooms <= set(LEVEL_OF), f"rooms without a level: {rooms - set(LEVEL_OF)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_upward_import(path):
    own = LEVEL_OF[_room(path)]
    upward = [
        f"line {line}: {room} (level {LEVEL_OF[room]})"
        for room, line in _imported_rooms(path)
        if room in LEVEL_OF and LEVEL_OF[room] > own
    ]
    assert not upward, f"{path.name} (level {own}) imports upward: {upward}"


def test_the_checker_sees_an_upward_import(tmp_path):
    # The test above must be able to fail: an ops module importing models.
    module = tmp_path / "ops.py"
    module.write_text("from keras_linbp import models\nfrom keras_linbp.sites import swap\n")
    assert list(_imported_rooms(module)) == [("models", 1), ("sites", 2)]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_class_sizes(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_CLASS_LINES, f"{path.name}: class {node.name} has {lines} lines"
