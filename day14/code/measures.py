"""What day 14 measures about an upsampled image: fidelity to the true high-resolution image (PSNR, SSIM), agreement
with its own input (consistency), sharpness, and realism and identity through the shared evaluation protocol
(common.evaluator.score_images) on the image brought back to the evaluator's 28 × 28. Images in [-1, 1].
"""
from __future__ import annotations

import torch
from resize import consistency, crop

from common.evaluator import score_images
from common.metrics import psnr, ssim

Tensor = torch.Tensor
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio",
           "class_accuracy")


def sharpness(x: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels (horizontal and vertical), per image: edges count,
    flat regions do not, so a blurred image scores lower than the same image sharp.  (N,)"""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    return (dx + dy) / 2


def fidelity(sr: Tensor, hr: Tensor, lr: Tensor, side: int) -> dict:
    """Upsampled images sr against the true hr (N, C, 32, 32) and their input lr (N, C, 16, 16): PSNR and SSIM on
    the central side × side window (the data's own size, without the frame): mean squared error, PSNR (its mean
    over images), SSIM; consistency and sharpness."""
    sr = sr.clamp(-1, 1)                                   # what a saved image holds
    out, real = crop(sr, side), crop(hr, side)
    row = {"mse": (out - real).pow(2).mean().item(), "psnr": psnr(out, real).mean().item(),
           "ssim": ssim(out, real).mean().item(),
           "consistency": consistency(sr, lr).mean().item(),
           "sharpness_ratio": (sharpness(out).mean() / sharpness(real).mean()).item()}
    return {key: round(value, 5) for key, value in row.items()}


def realism(x: Tensor, labels: Tensor | None, side: int, dataset: str, data_dir: str | None) -> dict:
    """The evaluation protocol's realism scores on the central side × side window; with labels, the share the
    evaluator reads as the true class. Nothing for a dataset without an evaluator."""
    scores = score_images(crop(x.clamp(-1, 1), side), labels, dataset=dataset, data_dir=data_dir)
    return {key: scores[key] for key in REALISM if key in scores}
