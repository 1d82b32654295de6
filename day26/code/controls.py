"""The controls, computed from the data, and the fidelity of a sample to its control.

    edges(x)     Sobel gradients → magnitude → non-maximum suppression → threshold: a {0, 1} map of thin edges
                 (the steps of Canny 1986 without its hysteresis; ControlNet's "Canny edge" condition)
    masks(x)     the digit's silhouette (ink: x > 0) pooled to 7 × 7, thresholded, upsampled: a coarse layout
    edge_f1      edge maps compared with a 1-pixel tolerance (precision and recall of each map's pixels lying
                 within one pixel of the other's, as in boundary benchmarks: Martin et al. 2004)
    mask_iou     intersection over union of two masks

Images are (B, 1, H, W) in [-1, 1]; every control and map is (B, 1, H, W) in {0., 1.}; scores are (B,).

References: Sobel & Feldman 1968 (the 3 × 3 operator); Canny 1986, "A Computational Approach to Edge Detection"
(non-maximum suppression along the gradient); Zhang, Rao & Agrawala 2023 (arXiv:2302.05543, the controls).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# Sobel's x-derivative: smoothing [1, 2, 1] across, central difference [-1, 0, 1] along. Divided by 8, a ramp
# rising by m per pixel gives exactly m; the y-derivative is its transpose (rows grow downwards).
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
# Non-maximum suppression compares each pixel with its two neighbours along the gradient, the direction rounded
# to a multiple of 45°: (row, column) offsets of the neighbour "ahead" for 0°, 45°, 90°, 135°.
AHEAD = ((0, 1), (1, 1), (1, 0), (1, -1))


def sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    """(gx, gy), each (B, 1, H, W): the image's gradient by Sobel's operator, borders replicated."""
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].to(x)                     # (2, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)                 # (B, 2, H, W)
    return g[:, :1], g[:, 1:]


def shifted(m: Tensor, dr: int, dc: int) -> Tensor:
    """m[..., r + dr, c + dc] at every (r, c), zero outside the image."""
    h, w = m.shape[-2:]
    return F.pad(m, (1, 1, 1, 1))[..., 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]


def thin(magnitude: Tensor, gx: Tensor, gy: Tensor) -> Tensor:
    """Non-maximum suppression (Canny 1986): keep a pixel that is larger than its neighbour behind it along the
    gradient and at least as large as the one ahead. On a plateau of two equal pixels one survives, not both."""
    angle = torch.atan2(gy, gx) % math.pi                                           # direction, mod 180°
    sector = torch.round(angle / (math.pi / 4)).long() % 4                          # 0°, 45°, 90°, 135°
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for k, (dr, dc) in enumerate(AHEAD):
        peak = (magnitude > shifted(magnitude, -dr, -dc)) & (magnitude >= shifted(magnitude, dr, dc))
        keep |= (sector == k) & peak
    return keep


def edges(x: Tensor, threshold: float = 0.3, nms: bool = True) -> Tensor:
    """The edge map of x: Sobel magnitude |∇x| > threshold, thinned by non-maximum suppression when `nms`."""
    gx, gy = sobel(x.float())
    magnitude = torch.sqrt(gx ** 2 + gy ** 2)
    strong = magnitude > threshold
    return (strong & thin(magnitude, gx, gy) if nms else strong).float()


def masks(x: Tensor, side: int = 7, threshold: float = 0.25) -> Tensor:
    """The coarse silhouette of x: the share of ink (x > 0) in each cell of a side × side grid, > threshold,
    upsampled back to the image's size (nearest)."""
    cell = x.shape[-1] // side
    share = F.avg_pool2d((x.float() > 0).float(), cell)                             # (B, 1, side, side)
    return F.interpolate((share > threshold).float(), scale_factor=cell, mode="nearest")


def dilate(m: Tensor) -> Tensor:
    """Every pixel within one pixel (8-neighbourhood) of the map's pixels."""
    return F.max_pool2d(m, 3, stride=1, padding=1)


def edge_f1(generated: Tensor, control: Tensor) -> Tensor:
    """Per image, F1 = 2PR / (P + R) of two edge maps with a 1-pixel tolerance: precision P is the share of
    generated edge pixels within one pixel of a control edge, recall R the share of control edge pixels within one
    pixel of a generated edge. An empty map scores 0."""
    def share(a: Tensor, b: Tensor) -> Tensor:
        return (a * dilate(b)).sum((1, 2, 3)) / a.sum((1, 2, 3)).clamp(min=1)
    p, r = share(generated, control), share(control, generated)
    return torch.where(p + r > 0, 2 * p * r / (p + r).clamp(min=1e-12), torch.zeros_like(p))


def mask_iou(generated: Tensor, control: Tensor) -> Tensor:
    """Per image, |A ∩ B| / |A ∪ B| of two masks (0 when both are empty)."""
    inter = (generated * control).sum((1, 2, 3))
    union = torch.maximum(generated, control).sum((1, 2, 3))
    return inter / union.clamp(min=1)


FIDELITY = {"edges": edge_f1, "masks": mask_iou}      # control name -> how close a sample keeps to it
