"""The paper's examples run end to end in --smoke mode and write results.json."""

import json

import keras
import numpy as np
import pytest

from keras_linbp.binary import BinaryConv2D
from keras_linbp.binary import BinaryDense

from _examples import load_example


def test_fig1_smoke(tmp_path):
    fig1 = load_example("paper_fig1_synthetic")
    fig1.main(["--smoke", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["inits"] == 4
    assert set(results["rules"]) == {"exact", "linear"}
    for rule in ("exact", "linear"):
        r = results["rules"][rule]
        for key in ("final_mse_median", "final_mse_q25", "final_mse_q75", "saturated_fraction"):
            assert np.isfinite(r[key]), (rule, key)
        assert r["final_mse_q25"] <= r["final_mse_median"] <= r["final_mse_q75"]
        assert 0.0 <= r["saturated_fraction"] <= 1.0
        assert len(r["final_mse"]) == 4
    # Same inits, different backward rules: the trained networks differ.
    assert results["rules"]["exact"]["final_mse"] != results["rules"]["linear"]["final_mse"]
    assert (tmp_path / "fig1.png").stat().st_size > 10_000


def test_fig1_vectorized_training_equals_one_network_at_a_time():
    """Training N inits at once gives each network its own Adam trajectory."""
    fig1 = load_example("paper_fig1_synthetic")
    x, y = fig1.make_data(0)
    params = fig1.make_inits(0, 3, [1, 4, 4, 1], 1.0)
    together, _ = fig1.train(params, x, y, "linear", 20, 1e-2)
    alone, _ = fig1.train([p[1:2] for p in params], x, y, "linear", 20, 1e-2)
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a[1:2], b, rtol=1e-4, atol=1e-6)


def test_fig1_saturated_fraction_matches_definition():
    fig1 = load_example("paper_fig1_synthetic")
    x = np.array([[0.0], [1.0]], "float32")
    y = np.zeros((2, 1), "float32")
    # One init, one hidden unit: pre-activations w * x = 0 and 10.
    params = [np.full((1, 1, 1), 10.0, "float32"), np.zeros((1, 1), "float32"),
              np.ones((1, 1, 1), "float32"), np.zeros((1, 1), "float32")]
    _, activations, saturated_fraction = fig1.evaluate(params, x, y)
    np.testing.assert_allclose(activations, [0.5, 1 / (1 + np.exp(-10.0))], rtol=1e-6)
    assert saturated_fraction == 0.5  # sigmoid'(10) = 4.5e-5 < 0.025 <= sigmoid'(0)


def test_fig1_sweep_smoke(tmp_path):
    fig1 = load_example("paper_fig1_synthetic")
    fig1.main(["--sweep", "--smoke", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"] == (
        f"python examples/paper_fig1_synthetic.py --sweep --smoke --out {tmp_path}"
    )
    assert results["inits"] == 4 and results["fitted_mse"] == fig1.FITTED_MSE
    cells = results["cells"]
    assert len(cells) == 2 * 2 * 2  # smoke grid: 2 init stds x 2 depths x (1 SGD + 1 Adam lr)
    assert {(c["optimizer"], c["lr"]) for c in cells} == {("sgd", 0.01), ("adam", 1e-3)}
    for cell in cells:
        for rule in ("exact", "linear"):
            r = cell[rule]
            assert 0.0 <= r["fitted_fraction"] <= 1.0
            assert 0 <= r["diverged"] <= 4
            for key in ("final_mse_q25", "final_mse_median", "final_mse_q75"):
                # None only when that quantile reaches a diverged init.
                assert (r[key] is None and r["diverged"] > 0) or np.isfinite(r[key]), (rule, key)
        ratio = cell["log10_median_ratio"]
        assert (ratio is None) == (cell["ratio_note"] is not None)
        if ratio is not None:
            expected = np.log10(cell["linear"]["final_mse_median"] / cell["exact"]["final_mse_median"])
            np.testing.assert_allclose(ratio, expected, rtol=1e-6)
    assert results["table"].count("\n") == 1 + len(cells)
    assert set(results["linear_wins"]) == {"lower_median_mse", "more_inits_fitted"}
    assert (tmp_path / "sweep_heatmap.png").stat().st_size > 10_000


def test_fig1_sweep_quantile_counts_diverged_inits_as_infinite():
    fig1 = load_example("paper_fig1_synthetic")
    finite = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.6])
    for q in (0.25, 0.5, 0.75):
        np.testing.assert_allclose(fig1.quantile_with_divergence(finite, q),
                                   np.percentile(finite, 100 * q))
    some = np.array([1.0, 2.0, np.nan, 3.0, np.inf])  # sorted: 1, 2, 3, inf, inf
    assert fig1.quantile_with_divergence(some, 0.5) == 3.0
    assert fig1.quantile_with_divergence(some, 0.75) == np.inf
    assert fig1.quantile_with_divergence(np.array([1.0, np.nan]), 0.5) == np.inf
    cell = {"exact": {"final_mse_median": 1e-4}, "linear": {"final_mse_median": 1e-2}}
    np.testing.assert_allclose(fig1.log10_median_ratio(cell), 2.0)
    cell["linear"]["final_mse_median"] = None
    assert fig1.log10_median_ratio(cell) == np.inf


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_binary_cifar10_smoke_on_digits(tmp_path, arch):
    binary = load_example("binary_cifar10")
    code = binary.main(
        ["--dataset", "digits", "--arch", arch, "--smoke", "--out", str(tmp_path)]
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["dataset"] == "digits" and results["arch"] == arch
    assert set(results["rules"]) == {"linear", "ste"}
    for rule in ("linear", "ste"):
        r = results["rules"][rule]
        assert 0.0 <= r["test_accuracy_mean"] <= 1.0
        assert r["test_accuracy_std"] >= 0.0
        assert r["seeds"] == [0]
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000


def test_binary_cifar10_models_follow_the_layouts():
    binary = load_example("binary_cifar10")
    vgg = binary.build_vgg("linear", 1 / 16, 10)
    convs = [l for l in vgg.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 16  # VGG-19: 16 conv + 3 dense (here: 1 binary hidden + classifier)
    assert sum(isinstance(l, BinaryConv2D) for l in convs) == 15
    assert all(l.rule == "linear" for l in vgg.layers if isinstance(l, (BinaryConv2D, BinaryDense)))
    assert vgg.output_shape == (None, 10)

    resnet = binary.build_resnet("ste", 1.0, 10)
    binary_convs = [l for l in resnet.layers if isinstance(l, BinaryConv2D)]
    assert len(binary_convs) == 18  # ResNet-20: 1 stem conv + 18 block convs + classifier
    assert [l.filters for l in binary_convs[::6]] == [16, 32, 64]
    assert all(l.rule == "ste" for l in binary_convs)


def test_binary_cifar10_without_network_says_what_to_do(tmp_path, capsys, monkeypatch):
    binary = load_example("binary_cifar10")

    def offline():
        raise OSError("Name or service not known")

    monkeypatch.setattr(binary.keras.datasets.cifar10, "load_data", offline)
    assert binary.main(["--smoke", "--out", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert "--data" in message and "--dataset digits" in message
    assert not (tmp_path / "results.json").exists()


def test_binary_cifar10_reads_npz(tmp_path):
    binary = load_example("binary_cifar10")
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar10.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, (8, 1)),
        x_test=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, (4, 1)),
    )
    x_train, y_train, x_test, y_test = binary.prepare(*binary.load_cifar10(str(path)))
    assert x_train.shape == (8, 32, 32, 3) and y_train.shape == (8,)
    np.testing.assert_allclose(x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.savez(tmp_path / "bad.npz", x_train=x_train)
    with pytest.raises(binary.DataUnavailable, match="y_train"):
        binary.load_cifar10(str(tmp_path / "bad.npz"))
