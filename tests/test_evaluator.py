"""The shared MNIST evaluator: accurate on digits, near-uniform on non-digits; samples.npz; CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common import metrics
from common.config import UserError
from common.data import load_images
from common.evaluator import Evaluator, default_evaluator, reference_features, score_images
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
    from common.evaluate import main

    path = save_samples_npz(tmp_path / "samples.npz", test_set.x[:40], test_set.y[:40])
    main([str(path), "--out", str(tmp_path / "scores.json")])
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 40 and scores["class_accuracy"] > 0.9
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    in_run = score_images(test_set.x[:40], test_set.y[:40])  # what a run reports for itself
    assert {k: v for k, v in scores.items() if k != "samples"} == in_run


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "common.evaluate", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_rescoring_cli_entry_point(tmp_path):
    assert _run_cli("--help").returncode == 0
    bad = _run_cli(tmp_path / "nope.npz")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error:") and "nope.npz" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
