"""Smoke test of examples/deep_nets.py: structure and finiteness of a short
run, plus its helpers against independent references."""

import json
import math

import keras
import numpy as np
import pytest

from _examples import load_example


def test_refresh_sets_moving_statistics_to_the_batch_statistics():
    deep_nets = load_example("deep_nets")
    inputs = keras.Input((3,))
    outputs = keras.layers.BatchNormalization(momentum=0.999)(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(40, 3)).astype("float32")
    assert deep_nets.refresh_batch_norm_statistics(model, x, samples=32) == 1
    dense, norm = model.layers[1], model.layers[2]
    kernel, bias = (w.numpy() for w in dense.weights)
    a = x[:32] @ kernel + bias
    np.testing.assert_allclose(norm.moving_mean.numpy(), a.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), a.var(axis=0), rtol=1e-4)
    assert norm.momentum == 0.999


def test_summarize_writes_null_for_a_diverged_seed():
    deep_nets = load_example("deep_nets")
    seeds = [
        {"seed": 0, "loss_per_epoch": [2.0, 1.0], "diverged": False,
         "test_accuracy": 0.8, "test_accuracy_raw": 0.1},
        {"seed": 1, "loss_per_epoch": [2.0, None], "diverged": True,
         "test_accuracy": 0.1, "test_accuracy_raw": 0.1},
    ]
    run = deep_nets.summarize("M", "exact", "exact", None, "SGD", seeds, epochs=2)
    assert run["loss_per_epoch"] == [2.0, None]
    assert run["final_loss"] is None and run["diverged"] and run["diverged_seeds"] == [1]
    assert run["test_accuracy_mean"] == pytest.approx(0.45)
    assert run["test_accuracy_std"] == pytest.approx(0.35)
    safe = deep_nets._json_safe({"slopes": [float("nan"), 0.5, {"max": float("inf")}]})
    assert json.dumps(safe, allow_nan=False) == '{"slopes": [null, 0.5, {"max": null}]}'


def test_smoke_run_writes_results_plot_and_table(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    deep_nets = load_example("deep_nets")
    returned = deep_nets.main(["--out", str(tmp_path), "--smoke"])

    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert results["command"].startswith("python examples/deep_nets.py")
    assert results["train_size"] == 128 and results["test_size"] == 64
    assert results["epochs"] == 1 and results["seeds"] == 1
    runs = results["runs"]
    assert [(r["model"], r["optimizer"], r["rule"], r["slope"]) for r in runs] == [
        ("MobileNetV2", "SGD", "exact", None),
        ("MobileNetV2", "SGD", "linear", 1.0),
        ("MobileNetV2", "SGD", "linear", "auto"),
    ]
    for run in runs:
        assert set(run) >= {
            "model", "rule", "optimizer", "slope", "final_loss", "loss_per_epoch",
            "test_accuracy_mean", "test_accuracy_std", "seeds", "diverged",
        }
        assert len(run["loss_per_epoch"]) == 1 and len(run["seeds"]) == 1
        if run["diverged"]:
            assert run["final_loss"] is None
        else:
            assert math.isfinite(run["final_loss"]) and run["final_loss"] > 0.0
        assert 0.0 <= run["test_accuracy_mean"] <= 1.0
        assert 0.0 <= run["test_accuracy_raw_mean"] <= 1.0
    # The exact rule and "auto" (gradient scale of exact) stay finite.
    assert not runs[0]["diverged"] and not runs[2]["diverged"]
    auto_slopes = runs[2]["seeds"][0]["auto_slopes"]
    # MobileNetV2's ReLU6 sites: sqrt(mean f'(a)^2) = sqrt(fraction in (0, 6)).
    assert auto_slopes["sites"] > 30
    assert 0.0 < auto_slopes["min"] <= auto_slopes["median"] <= auto_slopes["max"] <= 1.0
    assert "sgd_auto_finite_and_falling" in results["target"]["MobileNetV2"]
    assert isinstance(results["target"]["met"], bool)

    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0].startswith("| model | optimizer | rule |") and len(table) == 2 + len(runs)
