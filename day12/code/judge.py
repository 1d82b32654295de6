"""The evaluator: an attribute classifier trained on the scene generator's own images, and how it scores.

The classifier reads an image and predicts the canonical labels of scenes.labels: how many things, the axis they
lie along, and each thing's colour, shape and size in reading order (left/top first). It never sees a caption.
A generated image is then scored against the caption it was made from, attribute by attribute:

    count      one thing or two, as captioned
    colour     each captioned thing's colour, in its captioned place (so swapping two things' colours is an error)
    shape, size   likewise
    relation   two-thing captions: the things lie along the captioned axis, in the captioned order (the first-named
               thing matches the left/top one at least as well as the other)
    all        every attribute of the caption right at once

Real images of the same captions set the bar: the classifier's accuracy on them is recorded next to the
generated images' (expected ≥ 98 %), and its penultimate features give an FID against real renders, with the
FID between two independent real renders of the same captions as the floor.

Reference: the attribute-classifier protocol of compositional generation benchmarks, e.g. Park et al. 2021
(NeurIPS Datasets & Benchmarks) and Huang et al. 2023, "T2I-CompBench" (arXiv:2307.06350).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scenes import ATTRIBUTES, LABEL_CLASSES, Scene, labels
from torch import nn

from common.metrics import fid
from common.nets import register


@dataclass
class AttributeClassifierConfig:
    channels: int = 32
    features: int = 64                # width of the penultimate layer (the FID's features)


@register
class AttributeClassifier(nn.Module):
    """Four 3×3 conv stages (32 -> 16 -> 8 -> 4 px), kept spatial to the end (left and right must stay apart),
    then one linear layer per label of scenes.labels."""

    def __init__(self, cfg: AttributeClassifierConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels

        def stage(c_in, c_out, stride):
            return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.SiLU()]
        self.body = nn.Sequential(*stage(3, c, 1), *stage(c, c, 2), *stage(c, 2 * c, 2), *stage(2 * c, 2 * c, 2),
                                  nn.Flatten(), nn.Linear(2 * c * 16, cfg.features), nn.SiLU())
        self.heads = nn.Linear(cfg.features, sum(LABEL_CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)                                                   # (B, features)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits per label: a list of 8 tensors (B, classes)."""
        return list(self.heads(self.features(x)).split(LABEL_CLASSES, dim=1))


def classifier_loss(net, x, y, generator) -> torch.Tensor:
    """Cross-entropy summed over the labels that apply (-1: does not) and averaged over the images: a batch of
    one-thing scenes has no axis or second thing to learn, and contributes nothing there (not a 0/0)."""
    return sum(F.cross_entropy(logits.float(), y[:, i], ignore_index=-1, reduction="sum")
               for i, logits in enumerate(net(x))) / len(x)


@torch.no_grad()
def predict(classifier: nn.Module, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels (N, 8), penultimate features (N, features)) of images x in [-1, 1]."""
    classifier.eval()
    device = next(classifier.parameters()).device
    preds, feats = [], []
    for chunk in x.split(batch):
        f = classifier.features(chunk.to(device))
        logits = classifier.heads(f).split(LABEL_CLASSES, dim=1)
        preds.append(torch.stack([lg.argmax(1) for lg in logits], 1).cpu())
        feats.append(f.float().cpu())
    return torch.cat(preds), torch.cat(feats)


def _matches(pred: list[int], truth: list[int], slots: int) -> int:
    """How many (colour, shape, size) labels of the first `slots` things agree."""
    return sum(p == t for p, t in zip(pred[2:2 + 3 * slots], truth[2:2 + 3 * slots]))


def judge(pred: list[int], scene: Scene) -> dict[str, list[bool]]:
    """Right or wrong, per attribute, for one image predicted as `pred` (scenes.labels layout) and its caption's
    scene; colour, shape and size are judged once per captioned thing, relation once per two-thing caption."""
    truth, n = labels(scene), len(scene.things)
    verdict = {"count": [pred[0] == truth[0]]}
    for k, name in enumerate(("colour", "shape", "size")):
        verdict[name] = [pred[2 + 3 * slot + k] == truth[2 + 3 * slot + k] for slot in range(n)]
    if n == 2:
        swapped = truth[:2] + truth[5:8] + truth[2:5]
        in_order = _matches(pred, truth, 2) >= _matches(pred, swapped, 2)
        verdict["relation"] = [pred[0] == 1 and pred[1] == truth[1] and in_order]
    verdict["all"] = [all(v for name in verdict for v in verdict[name])]
    return verdict


def accuracy(preds: torch.Tensor, scenes: list[Scene]) -> dict[str, float]:
    """The share right of each attribute (and of whole captions) over a set of images."""
    tally: dict[str, list[bool]] = {name: [] for name in (*ATTRIBUTES, "all")}
    for pred, scene in zip(preds.tolist(), scenes):
        for name, verdicts in judge(pred, scene).items():
            tally[name] += verdicts
    return {name: round(sum(v) / len(v), 4) for name, v in tally.items() if v}


def score(classifier, x: torch.Tensor, scenes: list[Scene], real: torch.Tensor, real_again: torch.Tensor) -> dict:
    """Per-attribute accuracy of images x against their scenes, FID of the classifier's features against real
    renders of the same scenes, and the floor: the FID between two independent real renders."""
    preds, feats = predict(classifier, x)
    _, real_feats = predict(classifier, real)
    _, again_feats = predict(classifier, real_again)
    acc = accuracy(preds, scenes)
    floor = fid(again_feats.double(), real_feats.double())
    value = fid(feats.double(), real_feats.double())
    return {"n": len(x), **{f"{k}_accuracy": v for k, v in acc.items()},
            "min_attribute_accuracy": min(acc[k] for k in ATTRIBUTES if k in acc),
            "fid": round(value, 3), "fid_floor": round(floor, 3),
            "fid_ratio": round(value / floor, 3) if floor > 0 else None}     # None: too few images for a floor
