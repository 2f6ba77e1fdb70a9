"""examples/lr_robustness.py: smoke runs, the ResNet-20 layout, and the model reuse it relies on."""

import json
import math

import keras
import numpy as np
import pytest

import keras_linbp

from _examples import load_example


@pytest.fixture(scope="module")
def lr_robustness():
    return load_example("lr_robustness")


@pytest.mark.parametrize("arch", ["binary_vgg", "resnet20"])
def test_smoke_writes_results(tmp_path, lr_robustness, arch):
    rules = ["baseline", "linear"] + (["auto"] if lr_robustness.auto_slope_supported() else [])
    code = lr_robustness.main(
        ["--smoke", "--arch", arch, "--rules", *rules, "--out", str(tmp_path)]
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"].startswith("python examples/lr_robustness.py --smoke")
    runs = results["runs"]
    baseline = {"binary_vgg": "ste", "resnet20": "exact"}[arch]
    expected_rules = {baseline, "linear"}
    if "auto" in rules and arch == "resnet20":
        expected_rules.add("auto")
    if "auto" in rules and arch == "binary_vgg":
        # The binary signs fix their own rule: slope="auto" has no site to calibrate.
        assert [(s["arch"], s["rule"]) for s in results["skipped"]] == [("binary_vgg", "auto")]
    else:
        assert results["skipped"] == []
    assert {r["rule"] for r in runs} == expected_rules
    assert {r["optimizer"] for r in runs} == {"adam", "sgd"}
    assert {r["lr"] for r in runs} == {1e-5, 1e-2}
    assert len(runs) == len(expected_rules) * 2 * 2
    for r in runs:
        assert r["arch"] == arch
        assert set(r) >= {"arch", "rule", "optimizer", "lr", "test_accuracy_mean",
                          "test_accuracy_std", "seeds"}
        assert 0.0 <= r["test_accuracy_mean"] <= 1.0 and math.isfinite(r["test_accuracy_mean"])
        assert r["test_accuracy_std"] >= 0.0
        assert r["seeds"] == [0] and len(r["test_accuracy"]) == 1
        assert r["slope"] == {"ste": None, "exact": None, "linear": 1.0, "auto": "auto"}[r["rule"]]
        assert all(l is None or math.isfinite(l) for l in r["final_train_loss"])
        if r["rule"] == "auto":
            low, high = r["calibrated_slope_range"]
            assert 0.0 < low <= high <= 1.0  # ReLU: sqrt(fraction of active units)
    table = results["tables"][arch]
    assert table.count("\n") == 1 + 2 * len(expected_rules)  # header, rule, one row per rule
    assert (tmp_path / f"heatmap_{arch}.png").stat().st_size > 10_000


def test_append_keeps_other_runs(tmp_path, lr_robustness):
    argv = ["--smoke", "--arch", "resnet20", "--optimizers", "sgd", "--out", str(tmp_path)]
    assert lr_robustness.main(argv + ["--rules", "baseline"]) == 0
    assert lr_robustness.main(argv + ["--rules", "linear", "--append"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted({r["rule"] for r in results["runs"]}) == ["exact", "linear"]
    assert len(results["runs"]) == 4
    assert results["command"].count("python examples/lr_robustness.py") == 2
    # --replot redraws from results.json alone and keeps its data.
    (tmp_path / "heatmap_resnet20.png").unlink()
    assert lr_robustness.main(["--replot", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "heatmap_resnet20.png").stat().st_size > 10_000


def test_auto_without_library_support_says_so(tmp_path, lr_robustness, capsys):
    if lr_robustness.auto_slope_supported():
        pytest.skip('keras_linbp accepts slope="auto"')
    assert lr_robustness.main(["--smoke", "--rules", "auto", "--out", str(tmp_path)]) == 2
    assert "--rules baseline linear" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_resnet20_layout(lr_robustness):
    model = lr_robustness.build_resnet20(0.25, 10)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    three_by_three = [l for l in convs if l.kernel_size == (3, 3)]
    assert len(three_by_three) == 19  # stem + 9 blocks x 2; + the classifier = 20 layers
    assert [l.filters for l in three_by_three[1::6]] == [4, 8, 16]
    assert len(convs) - len(three_by_three) == 2  # 1x1 shortcuts where the shape changes
    linear = keras_linbp.LinearBackpropModel.from_model(model, slope=1.0)
    sites = linear.linear_sites()
    assert len(sites) == 19 and {s.activation_name for s in sites} == {"relu"}


def test_binary_vgg_rules_share_initial_weights(lr_robustness):
    """Every rule starts from the same weights: the comparison is paired by seed."""
    weights = lr_robustness.initial_weights("binary_vgg", 1 / 16, 10, (32, 32, 3), seed=3)
    for rule in ("baseline", "linear"):
        model = lr_robustness.build_training_model("binary_vgg", rule, 1 / 16, 10, (32, 32, 3))
        assert [w.shape for w in model.get_weights()] == [w.shape for w in weights]
    again = lr_robustness.initial_weights("binary_vgg", 1 / 16, 10, (32, 32, 3), seed=3)
    for a, b in zip(weights, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_reset_equals_fresh_model(lr_robustness, optimizer):
    """A compiled model reset to new weights and learning rate trains as a fresh one."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16).astype("int32")
    weights = lr_robustness.initial_weights("resnet20", 0.125, 10, (32, 32, 3), seed=0)

    def compiled(lr):
        model = lr_robustness.build_training_model("resnet20", "linear", 0.125, 10, (32, 32, 3))
        model.compile(lr_robustness.make_optimizer(optimizer, lr),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      run_eagerly=True)
        return model

    def fit(model):
        keras.utils.set_random_seed(0)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        return model.get_weights()

    reused = compiled(1e-2)
    lr_robustness.reset(reused, weights, 1e-2)
    fit(reused)  # moves weights and optimizer state away
    lr_robustness.reset(reused, weights, 3e-3)
    after_reset = fit(reused)

    fresh = compiled(3e-3)
    fresh.set_weights(weights)
    expected = fit(fresh)
    for a, b in zip(after_reset, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
