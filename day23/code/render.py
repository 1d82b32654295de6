"""A toy 3-D scene for score distillation: a voxel grid of density and intensity, seen through differentiable
emission–absorption volume rendering (Max 1995; the NeRF quadrature of Mildenhall et al. 2020, Eq. 3).

Along a ray with samples i = 1..N spaced δ apart, density σ_i ≥ 0 and intensity c_i ∈ [−1, 1]:

    τ_i = σ_i δ,   α_i = 1 − exp(−τ_i),   T_i = exp(−Σ_{j<i} τ_j),   C = Σ_i T_i α_i c_i + T_{N+1} · background.

Σ_i T_i α_i = 1 − T_{N+1} (the sum telescopes), so C is a convex mix of the intensities and the background: an
image in [−1, 1] again. The camera is orthographic and turns about the vertical (row) axis by an azimuth φ: the
pixel (u, v) at depth s looks up the grid at x = u cos φ + s sin φ, y = v, z = −u sin φ + s cos φ, trilinearly
(F.grid_sample); outside the grid the density is 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def ray_points(azimuth: Tensor, size: int, samples: int, extent: float = 1.0) -> Tensor:
    """(V, S, H, W, 3) grid coordinates (x, y, z) in [−1, 1]³ of the S depth samples of each pixel of V views.

    Pixels and depths sit at cell midpoints: u, v ∈ extent · (−1, 1), s ∈ (−1, 1) with spacing δ = 2 / S."""
    u = extent * (torch.arange(size) + 0.5) / size * 2 - extent                 # (W,) = (H,)
    s = (torch.arange(samples) + 0.5) / samples * 2 - 1                          # (S,), the nearest first
    S, V, U = torch.meshgrid(s, u, u, indexing="ij")                              # (S, H, W): depth, row, column
    cos, sin = (f(azimuth.double())[:, None, None, None] for f in (torch.cos, torch.sin))   # (V, 1, 1, 1)
    x = U * cos + S * sin
    z = -U * sin + S * cos
    return torch.stack([x, V.expand_as(x), z], dim=-1)                           # (V, S, H, W, 3)


def composite(sigma: Tensor, colour: Tensor, delta: float, background: float) -> Tensor:
    """Emission–absorption along dim 1 of (V, S, H, W) samples: the rendered (V, 1, H, W) image."""
    tau = sigma * delta
    alpha = 1 - torch.exp(-tau)
    transmittance = torch.exp(-(torch.cumsum(tau, dim=1) - tau))                 # T_i = exp(−Σ_{j<i} τ_j)
    through = torch.exp(-tau.sum(dim=1))                                         # T_{N+1}: what reaches the back
    return ((transmittance * alpha * colour).sum(dim=1) + through * background)[:, None]


def render(sigma: Tensor, colour: Tensor, azimuth: Tensor, *, size: int = 28, samples: int = 32,
           extent: float = 1.0, background: float = -1.0) -> Tensor:
    """The (V, 1, size, size) views at azimuths (V,) of the grids sigma, colour (D, D, D), indexed [z, y, x]."""
    grid = ray_points(azimuth, size, samples, extent).to(sigma)                  # (V, S, H, W, 3)
    fields = torch.stack([sigma, colour])[None].expand(len(azimuth), -1, -1, -1, -1)    # (V, 2, D, D, D)
    looked_up = F.grid_sample(fields, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return composite(looked_up[:, 0], looked_up[:, 1], 2 / samples, background)  # (V, S, H, W) each


class VoxelScene(nn.Module):
    """θ = a D³ grid of density logits and intensity logits: σ = scale · softplus(ρ), c = tanh(κ), kept inside the
    cylinder x² + z² ≤ 1 that every azimuth sees whole (the corners of the cube would leave the view as it turns)."""

    def __init__(self, size: int, density_scale: float, generator: torch.Generator):
        super().__init__()
        self.density_scale = density_scale
        self.density = nn.Parameter(-4 + 0.1 * torch.randn(size, size, size, generator=generator))  # nearly empty
        self.intensity = nn.Parameter(0.1 * torch.randn(size, size, size, generator=generator))
        r = torch.linspace(-1, 1, size)
        self.register_buffer("inside", (r[None, :] ** 2 + r[:, None] ** 2 <= 1).float()[:, None, :])  # (z, 1, x)

    def fields(self) -> tuple[Tensor, Tensor]:
        """(σ, c), each (D, D, D) indexed [z, y, x]."""
        return self.density_scale * F.softplus(self.density) * self.inside, torch.tanh(self.intensity)

    def forward(self, azimuth: Tensor, samples: int) -> Tensor:
        """(V, 1, 28, 28) views at azimuths (V,), background black (−1) as MNIST's."""
        return render(*self.fields(), azimuth, samples=samples)
