"""Day 02's nouns: a convolutional DAE, the corruption, a radial power spectrum.

The one fact behind the day: the minimiser of E ||D(x0 + σ·eps) − x0||² over all functions D is the
posterior mean D*(xt) = E[x0 | xt] (MSE regression onto x0), and by Tweedie's formula
    E[x0 | xt] = xt + σ² ∇ log p_σ(xt),      p_σ = p_data * N(0, σ² I)          (Efron 2011, Eq. 2.8)
so a trained denoiser is a score estimate in disguise (Vincent 2011, Sec. 4.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Iterator

import torch
from torch import nn

Tensor = torch.Tensor


@dataclass
class ConvDAEConfig:
    in_channels: int = 1
    channels: int = 32


class ConvDAE(nn.Module):
    """Plain encoder-decoder: strided convs 28 -> 14 -> 7, transposed convs 7 -> 14 -> 28, no skips.

    Every detail the output keeps has to pass through the (2c, 7, 7) code. Called as model(x, t)
    like the networks in common/nets.py; t is ignored (a blind denoiser).
    """

    def __init__(self, cfg: ConvDAEConfig):
        super().__init__()
        self.cfg = cfg
        c, c_in = cfg.channels, cfg.in_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(c_in, c, 3, padding=1), nn.SiLU(),             # (B, c, 28, 28)
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),  # (B, 2c, 14, 14)
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.SiLU())  # (B, 2c, 7, 7)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),  # (B, 2c, 14, 14)
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU(),      # (B, c, 28, 28)
            nn.Conv2d(c, c_in, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        return self.decoder(self.encoder(x))


def sample_sigma(n: int, lo: float, hi: float, generator: torch.Generator) -> Tensor:
    """(n,) noise levels σ ~ U[lo, hi]; lo == hi trains at one level."""
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def corrupt(x0: Tensor, sigma: Tensor, generator: torch.Generator) -> Tensor:
    """xt = x0 + σ·eps with eps ~ N(0, I), one σ per image (σ: (B,)). Noise drawn on the CPU."""
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    return x0 + sigma.to(x0).view(-1, *[1] * (x0.dim() - 1)) * eps


def radial_power_spectrum(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean power |FFT(x)|² / (H·W) of images (N, C, H, W), averaged over rings of integer radius.

    Returns (radius (R,), power (R,)) for radii 0 .. H // 2 in cycles per image; radius 0 is the
    mean brightness. With this normalisation white noise of variance s² is flat at s², and
    (Parseval) the power averaged over all H·W frequencies is the mean squared pixel.
    """
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x.double()).abs().pow(2).mean(dim=(0, 1)) / (h * w)    # (H, W)
    fy = torch.fft.fftfreq(h, device=x.device) * h                          # integer frequencies
    fx = torch.fft.fftfreq(w, device=x.device) * w
    ring = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).round().long()    # (H, W) ring index
    keep = ring <= h // 2                                                   # drop the corners
    radii = torch.arange(h // 2 + 1, device=x.device)
    total = torch.zeros(len(radii), dtype=torch.float64, device=x.device).index_add_(0, ring[keep], power[keep])
    count = torch.bincount(ring[keep], minlength=len(radii))
    return radii, total / count


def iterate(denoise: Callable[[Tensor], Tensor], x: Tensor, k: int) -> Iterator[Tensor]:
    """Apply a denoiser k times, x -> D(x) -> D(D(x)) ..., yielding every state (k + 1 in all)."""
    yield x
    for _ in range(k):
        x = denoise(x)
        yield x
