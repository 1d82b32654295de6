"""Evaluation samples on disk, in the layout of the ADM evaluation suite.

Every image-generating run saves the samples it is scored on as `results/samples.npz`:

    arr_0  (N, H, W, C) uint8, pixel = round((x + 1) * 127.5) for x in [-1, 1]
    arr_1  (N,) int64 class labels, only for class-conditional samples

so `python -m common.evaluate results/samples.npz` can re-score it later, and the same file can be
fed to OpenAI's evaluator script unchanged.

Reference:
    Dhariwal & Nichol (2021), "Diffusion models beat GANs on image synthesis", NeurIPS;
        evaluation suite at github.com/openai/guided-diffusion/tree/main/evaluations.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from common.config import UserError

# The fewest samples the evaluator can score: precision/recall measure each sample's distance to its k-th
# nearest other sample (k = common.evaluator.PR_K = 3), so k + 1. The protocol itself scores 1,000 or more.
MIN_SCORED = 4


def _pixel_levels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> float pixel levels 0..255: round((x + 1) * 127.5), clamped.

    Rounding before clamping equals clamping x to [-1, 1] first for every finite or infinite x (both steps
    are monotone and map -1, 1 to exactly 0, 255); NaN stays NaN either way.
    """
    return ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 pixels on the CPU, same shape: the one mapping every image file uses.
    (A NaN comes out as 0 here, x86's float-to-uint8 conversion of NaN.)"""
    return _pixel_levels(x).to(torch.uint8)


def to_uint8_nhwc(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float in [-1, 1] -> (N, H, W, C) uint8 in 0..255."""
    return to_uint8(x).permute(0, 2, 3, 1).contiguous().numpy()


def quantize(x: torch.Tensor) -> torch.Tensor:
    """What a samples.npz stores, back in [-1, 1] (on the CPU): the 256 uint8 levels."""
    return _pixel_levels(x) / 127.5 - 1


def save_samples_npz(path, x: torch.Tensor, labels: torch.Tensor | None = None) -> Path:
    """Write samples x (N, C, H, W) in [-1, 1] (and optional labels (N,)) as an ADM-style .npz."""
    if x.ndim != 4:
        raise UserError(f"samples must be (N, C, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():  # uint8 has no NaN: it would be stored as a plausible pixel value
        bad = int((~torch.isfinite(x)).sum())
        raise UserError(f"{path}: not written, {bad} of the samples' {x.numel()} values are NaN or infinite "
                        "(the sampler or the model diverged)")
    arrays = {"arr_0": to_uint8_nhwc(x)}
    if labels is not None:
        if len(labels) != len(x):
            raise UserError(f"{len(labels)} labels for {len(x)} samples; pass one label per sample")
        arrays["arr_1"] = torch.as_tensor(labels).cpu().numpy().astype(np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def load_samples_npz(path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read an ADM-style .npz: (x (N, C, H, W) float32 in [-1, 1], labels (N,) int64 or None)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass the samples.npz a run wrote to its results/")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy array under another name
            raise UserError(f"{path}: holds one .npy array, not an .npz; name it .npy to score it")
        with data:
            images = data["arr_0"]
            labels = data["arr_1"] if "arr_1" in data.files else None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:  # missing, empty, truncated
        raise UserError(f"{path}: not an ADM-style .npz with arr_0 ({err or type(err).__name__})") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise UserError(f"{path}: arr_0 must be (N, H, W, C) uint8, got {images.dtype} {images.shape}")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, C, H, W)
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    return x.contiguous(), y
