"""Day 11's autoencoder: the KL-regularised convolutional autoencoder of latent diffusion (Rombach et al. 2022, §3).

    z ~ q(z | x) = N(mu(x), diag exp(logvar(x)))       shape (c, H / f, W / f): c channels, downsampling factor f
    loss = ‖x − D(z)‖₁ + β KL(q(z | x) ‖ N(0, I))      (LDM's "KL-reg", without the perceptual and GAN terms,
                                                          which need pretrained networks this repository does not ship)
    KL = ½ Σ_i (mu_i² + exp(logvar_i) − logvar_i − 1)   per image, summed over the latent's c · H/f · W/f numbers

A small β keeps the latent space smooth (close to N(0, I) in shape) without making the model a blurry VAE.
The diffusion model then runs on mu(x) / s, with s the latents' standard deviation measured on training data
(`latent_scale`): Stable Diffusion's constant 0.18215 is this 1 / s for its f = 8 autoencoder.

References
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", arXiv:2112.10752
        (§3 and Appendix G: the KL-regularised autoencoder, the scale factor).
    Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114 (Appendix B: the Gaussian KL).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.config import require
from common.nets import norm, register

Tensor = torch.Tensor


@dataclass
class AutoencoderConfig:
    in_channels: int = 1
    channels: int = 32                # width at full resolution, doubled at each downsampling
    factor: int = 4                   # f: the latent is (latent_channels, H / f, W / f); a power of 2
    latent_channels: int = 4          # c

    def check(self) -> None:
        require(self.factor >= 1 and self.factor & (self.factor - 1) == 0, "factor", "choose a power of 2: 1, 2, 4")
        require(self.latent_channels >= 1, "latent_channels", "choose 1 or more latent channels, e.g. 4")
        require(self.channels >= 8 and self.channels % 8 == 0, "channels", "choose a multiple of 8, e.g. 32")

    @property
    def levels(self) -> int:
        return int(math.log2(self.factor))


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))


@register
class Autoencoder(nn.Module):
    """Encoder: conv, then per level a block and a stride-2 conv (28 -> 14 -> 7 for f = 4), then (mu, logvar).
    Decoder: the mirror image, nearest-neighbour upsampling and convs back to the input size."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.channels * 2 ** level for level in range(cfg.levels + 1)]
        enc = [nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            enc += [conv_block(c_in, c_in), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
        enc += [conv_block(widths[-1], widths[-1]), conv_block(widths[-1], 2 * cfg.latent_channels)]
        self.encoder = nn.Sequential(*enc)
        self.decoder_in = nn.Conv2d(cfg.latent_channels, widths[-1], 3, padding=1)
        self.up = nn.ModuleList(conv_block(c_in, c_out) for c_in, c_out in zip(widths[::-1][:-1], widths[::-1][1:]))
        self.head = nn.Sequential(conv_block(widths[0], widths[0]), conv_block(widths[0], cfg.in_channels))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> (mu, logvar), each (B, c, ceil(H / f), ceil(W / f)), float32."""
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def decode(self, z: Tensor, size: tuple[int, int]) -> Tensor:
        """Latents (B, c, h, w) -> images (B, C, *size), float32 (unbounded: clip to [-1, 1] to view them)."""
        h = self.decoder_in(z)
        for level, block in enumerate(self.up):
            side = [-(-s // 2 ** (len(self.up) - level - 1)) for s in size]   # 7 -> 14 -> 28 for f = 4
            h = block(F.interpolate(h, size=side, mode="nearest"))
        return self.head(h).float()

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction of a sampled z, and (mu, logvar): z = mu + exp(logvar / 2) n, n ~ N(0, I)."""
        mu, logvar = self.encode(x)
        n = torch.randn(mu.shape, generator=generator).to(mu)
        return self.decode(mu + (0.5 * logvar).exp() * n, x.shape[-2:]), mu, logvar


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) ‖ N(0, I)) per image, summed over its latent numbers (Kingma & Welling,
    Appendix B).  (B,)"""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).flatten(1).sum(1)


def autoencoder_loss(kl_weight: float):
    """The training loss: mean per-pixel L1 reconstruction error + kl_weight · KL per latent number."""
    def loss_fn(net, x0, y, generator):
        recon, mu, logvar = net(x0, generator)
        return (recon - x0).abs().mean() + kl_weight * gaussian_kl(mu, logvar).mean() / mu[0].numel()
    return loss_fn


@torch.no_grad()
def latent_scale(ae: Autoencoder, x: Tensor, batch: int = 500) -> float:
    """s: the standard deviation of the encoder's means over the images x (all of them, all positions)."""
    mu = torch.cat([ae.encode(chunk)[0] for chunk in x.split(batch)])
    return mu.std().item()
