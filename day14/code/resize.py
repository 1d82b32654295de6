"""The two resolutions of super-resolution and the linear maps between them (images (N, C, H, W) in [-1, 1]).

    hr = pad(x)            # (N, C, 32, 32): a 28 × 28 digit framed by 2 background pixels a side
    lr = down(hr)          # (N, C, 16, 16): each pixel the mean of a 2 × 2 block  (the operator A)
    up = bicubic(lr)       # (N, C, 32, 32): Keys' cubic convolution, the upsampling SR3 conditions on
    consistency(sr, lr)    # RMS of A sr − lr per image: 0 for every image that A maps to lr

The low-resolution image is *defined* as A x, so a super-resolved image agrees with its input exactly when
A sr = lr. A has orthogonal rows (each averages its own four pixels), so A Aᵀ = I / 4: its adjoint Aᵀ spreads
each pixel over its block with weight 1/4 (`down_adjoint`), and its pseudo-inverse A⁺ = Aᵀ (A Aᵀ)⁻¹ = 4 Aᵀ is
nearest-neighbour upsampling. Bicubic upsampling is not A's inverse: A bicubic(lr) ≠ lr in general.

References
    Keys 1981, "Cubic convolution interpolation for digital image processing", IEEE Trans. ASSP 29(6)
        (the kernel; torch and OpenCV use its a = −0.75).
    Saharia et al. 2022, "Image Super-Resolution via Iterative Refinement" (SR3, arXiv:2104.07636, §2.1:
        the low-resolution image is bicubic-upsampled and concatenated to x_t).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
FACTOR = 2          # 16 → 32
HR_SIDE = 32


def pad(x: Tensor, side: int = HR_SIDE) -> Tensor:
    """Frame (N, C, h, w) images with background (−1) up to (N, C, side, side), equally on both sides."""
    dh, dw = side - x.shape[-2], side - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=-1.0)


def crop(x: Tensor, side: int) -> Tensor:
    """The central (side, side) window: `pad`'s inverse, e.g. 32 → 28 for the 28 × 28 evaluator."""
    top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
    return x[..., top:top + side, left:left + side].contiguous()


def down(x: Tensor) -> Tensor:
    """A: the mean of each FACTOR × FACTOR block ("area" resampling).  (N, C, H, W) → (N, C, H/2, W/2)"""
    return F.avg_pool2d(x, FACTOR)


def down_adjoint(y: Tensor) -> Tensor:
    """Aᵀ: each low-resolution pixel spread over its block with weight 1 / FACTOR².  (N, C, h, w) → (N, C, 2h, 2w)"""
    return y.repeat_interleave(FACTOR, -2).repeat_interleave(FACTOR, -1) / FACTOR ** 2


def consistency(sr: Tensor, lr: Tensor) -> Tensor:
    """‖A sr − lr‖ as an RMS per image, in [-1, 1] units: how far an output is from explaining its input.  (N,)"""
    return (down(sr) - lr).pow(2).flatten(1).mean(1).sqrt()


def keys_kernel(s: Tensor, a: float = -0.75) -> Tensor:
    """Keys' cubic convolution kernel (Keys 1981, Eq. 15 with free parameter a): 1 at 0, 0 at the other
    integers, continuous slope, support (−2, 2)."""
    s = s.abs()
    near = (a + 2) * s ** 3 - (a + 3) * s ** 2 + 1                   # |s| ≤ 1
    far = a * s ** 3 - 5 * a * s ** 2 + 8 * a * s - 4 * a            # 1 < |s| < 2
    return torch.where(s <= 1, near, torch.where(s < 2, far, torch.zeros_like(s)))


def bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> Tensor:
    """W (n_out, n_in), float64: bicubic resampling of one axis, up = W x. Output pixel i samples the input at
    (i + ½) n_in / n_out − ½ (pixel centres aligned, torch's align_corners=False) from its 4 nearest input
    pixels; taps that fall outside the image take the edge pixel's value."""
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5
    first = src.floor()
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for k in (-1, 0, 1, 2):
        tap = first + k
        w.index_put_((torch.arange(n_out), tap.clamp(0, n_in - 1).long()), keys_kernel(src - tap), accumulate=True)
    return w


def bicubic(lr: Tensor, factor: int = FACTOR) -> Tensor:
    """Bicubic upsampling, separable: W lr Wᵀ on every image and channel.  (N, C, h, w) → (N, C, fh, fw)"""
    rows = bicubic_matrix(lr.shape[-2], factor * lr.shape[-2]).to(lr)
    cols = bicubic_matrix(lr.shape[-1], factor * lr.shape[-1]).to(lr)
    return torch.einsum("ih,nchw,jw->ncij", rows, lr, cols).contiguous()
