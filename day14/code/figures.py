"""Day 14's figures: each method's answer for the same inputs (whole and magnified), several SR3 samples of one
input, and the cascade at each augmentation level. Images (N, C, H, W) in [-1, 1]."""
from __future__ import annotations

from pathlib import Path

import torch
from resize import FACTOR, crop

from common.plotting import panel

LABELS = {"bicubic": "bicubic", "regression": "regression", "sr3": "SR3"}
ZOOM = 14   # side of the magnified central window


def blocky(lr: torch.Tensor) -> torch.Tensor:
    """The 16 × 16 input shown at 32 × 32 with its pixels as visible blocks (nearest-neighbour)."""
    return lr.repeat_interleave(FACTOR, -2).repeat_interleave(FACTOR, -1)


def save_comparison(lr: torch.Tensor, outputs: dict[str, torch.Tensor], hr: torch.Tensor, path: Path) -> None:
    """One row per input: the input, each method's output, the truth; then the same, magnified to the central
    ZOOM × ZOOM window (path with `_zoom`), where blur and invented strokes are easiest to see."""
    columns = [blocky(lr), *(x.clamp(-1, 1) for x in outputs.values()), hr]
    names = ["input", *(LABELS.get(name, name) for name in outputs), "truth"]
    rows = [[column[i] for column in columns] for i in range(len(lr))]
    panel(rows, path, col_labels=names, scale=3)
    panel([[crop(image, ZOOM) for image in row] for row in rows], path.with_name(f"{path.stem}_zoom.png"),
          col_labels=names, scale=3)


def save_spread(lr: torch.Tensor, draws: torch.Tensor, path: Path) -> None:
    """One row per input: the input and K SR3 samples of it (draws (N, K, C, 32, 32))."""
    rows = [[blocky(lr)[i], *draws[i].clamp(-1, 1)] for i in range(len(lr))]
    panel(rows, path, col_labels=["input", *(f"sample {k + 1}" for k in range(draws.shape[1]))], scale=3)


def save_cascade(base: torch.Tensor, lr: torch.Tensor, ups: dict[float, torch.Tensor], path: Path) -> None:
    """One row per base-stage sample: the sample, its 16 × 16 version, and SR3's answer at each level s."""
    rows = [[base[i], blocky(lr)[i], *(x[i].clamp(-1, 1) for x in ups.values())] for i in range(len(base))]
    panel(rows, path, col_labels=["base", "16×16", *(f"s = {s:g}" for s in ups)], scale=3)
