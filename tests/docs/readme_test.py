"""The README and docs/: no unfilled placeholders, the set-up commands first,
links that resolve, and numbers that match the committed results.json files.

setup.py ships README.md as the package's long description, so a
placeholder left in it ends up on the package index page too.
"""

import json
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").rglob("*.md"))  # the site: RESULTS.md, index.md, guide/, api/

QUICKSTART_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[examples]" '
    "&& .venv/bin/python examples/quickstart.py"
)
TEST_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" '
    "&& .venv/bin/python tests/all_backends.py"
)

# A template token left unfilled: `QUICKSTART_TABLE` alone on a line (bare,
# or in backticks / brackets / braces), `{{ name }}`, `${NAME}`, `<<NAME>>`.
PLACEHOLDER_PATTERNS = [
    re.compile(r"^\s*[`\[{(<]*[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+[`\]})>]*\s*$"),
    re.compile(r"\{\{.*?\}\}"),
    re.compile(r"\$\{[A-Z_]+\}"),
    re.compile(r"<<[A-Z_]+>>"),
    re.compile(r"\b(?:TODO|TBD|FIXME|XXX)\b"),
]


def _documents():
    return [README, *DOCS]


def _placeholders(text):
    return [
        (number, line)
        for number, line in enumerate(text.splitlines(), 1)
        if any(pattern.search(line) for pattern in PLACEHOLDER_PATTERNS)
    ]


def test_placeholder_detector_catches_the_old_readme_token():
    assert _placeholders("intro\n\nQUICKSTART_TABLE\n\nmore") == [(3, "QUICKSTART_TABLE")]
    assert _placeholders("`RESULTS_TABLE`\n{{ step_time }}\n")
    # Ordinary prose, code and tables are not placeholders.
    assert not _placeholders("Set KERAS_BACKEND=tensorflow.\n| `SATURATION_KINDS` | x |\nTF_CPP_MIN_LOG_LEVEL=2 python x.py")


@pytest.mark.parametrize("path", _documents(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_unfilled_placeholder(path):
    found = _placeholders(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name} holds unfilled placeholders: {found}"


def _code_blocks(text):
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_starts_with_the_two_set_up_commands():
    text = README.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].startswith("# "), "the README starts with its title"
    assert lines[1].startswith("```"), "the set-up commands come right after the title"
    commands = [line for line in _code_blocks(text)[0].splitlines() if line.strip()]
    assert commands == [QUICKSTART_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command():
    # CI quiets pip (`pip install -q`); otherwise the command is the README's.
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").replace("pip install -q ", "pip install ")
    assert TEST_COMMAND in ci


def test_readme_links_to_the_results_page_and_every_relative_link_resolves():
    # The README names the results page by its path (its links must also
    # work on the package index: tests/integration/packaging_test.py).
    assert "`docs/RESULTS.md`" in README.read_text(encoding="utf-8")
    for path in _documents():
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target) or target.startswith("#"):
                continue
            file_part = target.split("#")[0]
            assert (path.parent / file_part).exists(), f"{path.name}: broken link {target}"


def _results(name):
    return json.loads((REPO / "results" / name / "results.json").read_text(encoding="utf-8"))


# The quickstart table is in the README and on the docs site's home page.
@pytest.mark.parametrize("path", [README, REPO / "docs" / "index.md"], ids=lambda p: p.relative_to(REPO).as_posix())
def test_readme_quickstart_table_matches_results_json(path):
    text = path.read_text(encoding="utf-8")
    assert "python examples/quickstart.py --epochs 30 --out results/quickstart" in text
    results = _results("quickstart")
    assert results["epochs"] == 30 and results["model"]["hidden_units"] == [64, 64]
    for rule, numbers in results["rules"].items():
        row = (
            f"| {rule} backprop | {numbers['final_train_loss']:.4f} | "
            f"{100 * numbers['test_accuracy']:.1f} % | {numbers['seconds_per_epoch']:.3f} |"
        )
        assert row in text, row


def _percent(mean_and_std):
    mean, std = mean_and_std
    return f"{100 * mean:.1f} ± {100 * std:.1f} %"


def test_results_page_tables_match_results_json():
    text = (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")

    fig1 = _results("fig1")["rules"]
    for rule, label in (("exact", "exact backprop"), ("linear", "linear backprop")):
        numbers = fig1[rule]
        row = (
            f"| {label} | {numbers['final_mse_q25']:.1e} | {numbers['final_mse_median']:.1e} | "
            f"{numbers['final_mse_q75']:.1e} | {100 * numbers['fitted_fraction']:.0f} % | "
            f"{100 * numbers['saturated_fraction']:.1f} % |"
        )
        assert row.replace("e-0", "e-") in text, row

    for directory in ("digits_vgg_lr1e-4", "digits_vgg", "digits_resnet_lr1e-4", "digits_resnet"):
        assert f"--out results/{directory}`" in text
        rules = _results(directory)["rules"]
        for rule in ("linear", "ste"):
            cell = _percent((rules[rule]["test_accuracy_mean"], rules[rule]["test_accuracy_std"]))
            assert cell in text, (directory, rule, cell)

    for directory, backend in (
        ("step_time", "tensorflow"), ("step_time_jax", "jax"), ("step_time_torch", "torch")
    ):
        assert f"python benchmarks/step_time.py --backend {backend} --out results/{directory}" in text
        for case in _results(directory)["cases"]:
            ratios = f"| {case['linear_over_exact']:.3f} | {case['model_over_layers']:.3f} | {case['linear_over_identity']:.3f} |"
            assert ratios in text, (directory, case["model"], case["jit_compile"], ratios)

    assert "python benchmarks/callback_overhead.py --out results/callback_overhead" in text
    overhead = _results("callback_overhead")["configurations"]
    for key in ("baseline_repeat", "saturation", "saturation_no_image", "gradient_flow"):
        cells = f"| {overhead[key]['paired_ratio_to_baseline']:.3f} | {overhead[key]['cpu_ratio_to_baseline']:.3f} |"
        assert cells in text, (key, cells)
