"""Classifier guidance (Dhariwal & Nichol 2021, §4): a classifier of noisy images steers an unconditional model.

Bayes at every noise level, ∇ log p_t(x | c) = ∇ log p_t(x) + ∇ log p_t(c | x), and Tweedie's ε = −sigma ∇ log p_t
turn a classifier p_φ(c | x_t, t) of *noisy* images into a conditional noise prediction (their Eq. 14):

    ε̃(x_t, c) = ε̂(x_t) − s sigma_t ∇_{x_t} log p_φ(c | x_t, t)

s = 1 is Bayes' conditional model, s > 1 sharpens it like classifier-free guidance's w (which is this formula
with the implicit classifier ε_∅ − ε_c in place of −sigma ∇ log p_φ). The classifier must see noisy inputs:
an ordinary one has never seen x_t and its gradient there is noise.

References
    Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", arXiv:2105.05233 (§4, Alg. 1, Eq. 14).
    Song et al. 2021, "Score-Based Generative Modeling through SDEs", arXiv:2011.13456 (§5, conditional sampling).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.config import require
from common.nets import Downsample, ResBlock, TimeEmbedding, norm, register
from common.paths import AffinePath
from common.predictions import Pair

Tensor = torch.Tensor


@dataclass
class NoisyClassifierConfig:
    in_channels: int = 1
    channels: int = 16               # width at full resolution, doubled at each of the two downsamplings
    num_classes: int = 10

    def check(self) -> None:
        require(self.channels >= 8 and self.channels % 8 == 0, "channels", "choose a multiple of 8, e.g. 16")
        require(self.num_classes >= 2, "num_classes", "choose 2 or more classes")


@register
class NoisyClassifier(nn.Module):
    """p_φ(c | x_t, t): the U-Net's encoder half (time-modulated ResBlocks, 28 -> 14 -> 7), pooled, linear.
    Called as `classifier(x_t, t)` -> logits (B, num_classes), like ADM's classifier (Dhariwal & Nichol, §4)."""

    def __init__(self, cfg: NoisyClassifierConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb = cfg.channels, 4 * cfg.channels
        self.embed = TimeEmbedding(ch)
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.blocks = nn.ModuleList([ResBlock(ch, ch, emb), Downsample(ch), ResBlock(ch, 2 * ch, emb),
                                     Downsample(2 * ch), ResBlock(2 * ch, 2 * ch, emb)])
        self.head = nn.Sequential(norm(2 * ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(2 * ch, cfg.num_classes))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb, h = self.embed(t), self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h)                                               # (B, num_classes)


def classifier_loss(path: AffinePath):
    """The training loss: cross-entropy of the class from x_t = alpha x0 + sigma ε at t ~ the path's levels."""
    def loss_fn(net, x0, y, generator):
        t = path.sample_t(len(x0), generator)
        eps = torch.randn(x0.shape, generator=generator).to(x0)
        alpha, sigma = path.alpha_sigma(t, x0)
        return F.cross_entropy(net(alpha * x0 + sigma * eps, t.to(x0)).float(), y)
    return loss_fn


def classifier_guided(denoise, classifier: nn.Module, scale: float, path: AffinePath):
    """A denoiser (x_t, t, *, y) -> Pair: the unconditional `denoise` (called without y), its ε̂ moved by
    −scale · sigma_t ∇ log p_φ(y | x_t, t) (Eq. 14 of Dhariwal & Nichol), x̂0 refitted to the same x_t."""
    def denoise_cg(xt, t, *, y, **cond):
        pair = denoise(xt, t, **cond)
        with torch.enable_grad():                                          # samplers run under no_grad
            x = xt.detach().requires_grad_(True)
            log_p = classifier(x, torch.as_tensor(t).to(xt.device)).to(xt.dtype).log_softmax(1)
            (grad,) = torch.autograd.grad(log_p.gather(1, y[:, None]).sum(), x)
        alpha, sigma = path.alpha_sigma(t, xt)
        eps = pair.eps - scale * sigma * grad.to(xt.dtype)
        return Pair((xt - sigma * eps) / alpha, eps)
    return denoise_cg
