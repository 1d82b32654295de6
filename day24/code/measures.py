"""What makes a clip good besides its frames: the measures of day 24, none of which needs a video network.

Every frame is located by the centre of mass of its bright pixels, c_f = Σ w p / Σ w with w = max(x, 0), and cut
out around it: a crop of the digit's size, resized to 28 x 28, is what the MNIST evaluator sees (MNIST digits are
themselves centred by their centre of mass). Then, per frame and per clip:

    frame quality         FID of the crops against crops of real training clips; the floor: real test clips
    confident share       evaluator top-class probability > CONFIDENT, relative to real test clips
    identity              share of clips whose evaluator class is the same in every frame
    motion residual       median |c_{f+1} − 2 c_f + c_{f−1}| (per axis, px) over frames away from the walls: zero
                          for constant velocity, and a digit far from the walls has no bounce to explain a turn

References
    Unterthiner et al. 2018, "Towards Accurate Generative Models of Video: A New Metric & Challenges" (FVD, the
        video metric these replace: it needs I3D weights), arXiv:1812.01717.
    Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium" (FID),
        arXiv:1706.08500.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common import metrics
from common.evaluator import CONFIDENT

Tensor = torch.Tensor


def centres(frames: Tensor) -> Tensor:
    """(..., H, W) frames in [-1, 1] -> (..., 2) centres of mass (row, column) of the bright pixels w = max(x, 0);
    a frame without any is given the canvas centre."""
    h, w = frames.shape[-2:]
    weight = frames.float().clamp(min=0)
    mass = weight.sum((-2, -1))
    rows = (weight.sum(-1) * torch.arange(h)).sum(-1)
    cols = (weight.sum(-2) * torch.arange(w)).sum(-1)
    empty = mass <= 0
    centre = torch.stack([rows, cols], -1) / mass.clamp(min=1e-12)[..., None]
    return torch.where(empty[..., None], torch.tensor([(h - 1) / 2, (w - 1) / 2]), centre)


def crops(frames: Tensor, size: int, out: int = 28) -> Tensor:
    """(N, 1, H, W) frames -> (N, 1, out, out): the size x size window around each frame's centre of mass,
    bilinearly resampled (outside the canvas is background, −1)."""
    n, _, h, w = frames.shape
    c = centres(frames[:, 0])                                                     # (N, 2) as (row, col)
    span = size * (out - 1) / out                                                 # px between the outer samples
    scale = torch.tensor([span / (w - 1), span / (h - 1)])                        # affine_grid's (x, y) order
    shift = torch.stack([2 * c[:, 1] / (w - 1) - 1, 2 * c[:, 0] / (h - 1) - 1], -1)   # centre in [-1, 1]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale[0], scale[1]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [n, 1, out, out], align_corners=True)
    return F.grid_sample(frames.float() + 1, grid, align_corners=True) - 1          # zero padding = background


def wall_free(c: Tensor, low: float, high: float, margin: float) -> Tensor:
    """(N, F, 2) centres -> (N, F − 2, 2) bool: the triples (f − 1, f, f + 1) whose centres all stay `margin` away
    from [low, high]'s ends, per axis: no bounce can fall between them."""
    inside = (c > low + margin) & (c < high - margin)
    return inside[:, :-2] & inside[:, 1:-1] & inside[:, 2:]


def motion_residual(clips: Tensor, low: float, high: float, margin: float) -> tuple[float | None, int]:
    """Median |c_{f+1} − 2 c_f + c_{f−1}| over the wall-free triples and axes of clips (N, F, 1, H, W), in px
    (None when there is none), and how many there were."""
    c = centres(clips[:, :, 0])                                                    # (N, F, 2)
    accel = (c[:, 2:] - 2 * c[:, 1:-1] + c[:, :-2]).abs()                          # (N, F − 2, 2)
    kept = accel[wall_free(c, low, high, margin)]
    return (float(kept.median()) if len(kept) else None), len(kept)


def identity(labels: Tensor) -> float:
    """Share of clips whose label (N, F) is the same in every frame."""
    return float((labels == labels[:, :1]).all(1).float().mean())


def ratio(a: float, b: float) -> float | None:
    """a / b, None when the floor b is zero (a tiny smoke set): no meaningful ratio."""
    return a / b if b else None


def frame_scores(evaluator, clips: Tensor, size: int, ref: Tensor, floor: dict) -> tuple[dict, Tensor]:
    """Per-frame FID and confident share of clips (N, F, 1, H, W) against the features `ref` of real crops, with the
    floor's numbers (real test clips through this same function); the identity share; the labels (N, F)."""
    n, f = clips.shape[:2]
    x = crops(clips.flatten(0, 1), size)                                           # (N·F, 1, 28, 28)
    feat, probs = evaluator.features(x), evaluator.probs(x)
    confident, labels = probs.max(1)
    out = {"fid_frames": metrics.fid(feat, ref), "fid_frames_ci95": list(metrics.fid_bootstrap(feat, ref)),
           "confident_frac": float((confident > CONFIDENT).float().mean()),
           "identity": identity(labels.reshape(n, f))}
    if floor:
        out |= {"fid_frames_floor": floor["fid_frames"], "fid_ratio": ratio(out["fid_frames"], floor["fid_frames"]),
                "confident_floor": floor["confident_frac"],
                "confident_ratio": ratio(out["confident_frac"], floor["confident_frac"]),
                "identity_floor": floor["identity"]}
    return out, labels.reshape(n, f)
