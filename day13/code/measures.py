"""What day 13 measures about an edit, beyond the shared evaluation protocol (common.evaluator.score_images):
how far it moved from its input, whether the evaluator still reads the intended digit, how well an inpainted
region joins the known pixels, and how different several completions of one input are. Images in [-1, 1].
"""
from __future__ import annotations

import torch

from common.evaluator import load_evaluator
from common.metrics import rmse, spread, ssim
from common.samples import quantize

Tensor = torch.Tensor


def faithfulness(x: Tensor, guide: Tensor) -> dict:
    """Distance of edits x to their inputs: mean RMSE (0 = unchanged) and mean SSIM (1 = unchanged)."""
    return {"rmse": round(rmse(x, guide).mean().item(), 4), "ssim": round(ssim(x, guide).mean().item(), 4)}


def labels(x: Tensor, dataset: str) -> Tensor:
    """The evaluator's class of each image, read from exactly what a saved PNG or NPZ would hold.  (N,)"""
    return load_evaluator(dataset).probs(quantize(x)).argmax(1)


def share(hits: Tensor) -> float:
    return round(hits.float().mean().item(), 4)


def seam(x: Tensor, mask: Tensor) -> Tensor:
    """Mean |x_p − x_q| over the 4-neighbour pixel pairs that cross the mask's border (one known, one not),
    per image: how abruptly an inpainted region meets the known pixels.  (N,)"""
    mask, jump, count = mask.expand_as(x), 0, 0
    for dim in (-1, -2):  # horizontal and vertical neighbours
        a, b = x.narrow(dim, 0, x.shape[dim] - 1), x.narrow(dim, 1, x.shape[dim] - 1)
        crossing = (mask.narrow(dim, 0, x.shape[dim] - 1) != mask.narrow(dim, 1, x.shape[dim] - 1)).float()
        jump = jump + ((a - b).abs() * crossing).flatten(1).sum(1)
        count = count + crossing.flatten(1).sum(1)
    return jump / count.clamp(min=1)


def seam_ratio(x: Tensor, original: Tensor, mask: Tensor) -> float:
    """seam of the completions over the seam of the originals on the same border: 1 = as smooth as real digits."""
    return round((seam(x, mask).mean() / seam(original, mask).mean()).item(), 4)


def diversity(completions: Tensor, mask: Tensor, dataset: str) -> dict:
    """Completions (M, K, C, H, W): K completions of each of M inputs with their masks (M, 1, H, W).
    Mean RMS distance between two completions of one input over its unknown pixels, and the mean number of
    different evaluator labels among the K."""
    m, k = completions.shape[:2]
    names = labels(completions.flatten(0, 1), dataset).view(m, k)
    distinct = torch.tensor([len(set(row.tolist())) for row in names], dtype=torch.float).mean()
    return {"pairwise_rmse_in_hole": round(spread(completions, ~mask), 4),
            "distinct_labels": round(distinct.item(), 3)}
