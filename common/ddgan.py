"""Denoising diffusion GANs: a few large denoising steps, each one a conditional GAN (Xiao, Kreis & Vahdat 2022).

Here t = 0 is data and t = 1 noise, as on every day; Xiao et al. count their steps upwards from the data with a
4-level β schedule of their own. We keep day 6's path (the cosine schedule of 1,000 levels) and take it at the
T + 1 times of uniform_grid(PATH, T): 1, 0.75, 0.5, 0.25, 0 for T = 4, the grid DDIM takes on day 6's model.

DDPM's reverse step is a Gaussian N(μ(x_t), σ² I), right only when the step t → s is small. Over a large step the
true q(x_s | x_t) ∝ q(x_t | x_s) q(x_s) keeps the modes of q(x_s) (which digit, which stroke). DDGAN keeps the form of
DDPM's step but makes its x0 random (their §3):

    p_θ(x_s | x_t) = ∫ q(x_s | x_t, x0 = G(x_t, z, t)) p(z) dz,      z ~ N(0, I)

with q(x_s | x_t, x0) = N(mean, var I) the Gaussian posterior of the forward process (common.samplers.posterior):
a mixture of Gaussians, one for each x̂0 that G can propose. A discriminator D(x_s, x_t, t) that sees the pair
tells real pairs from generated ones (ibid.):

    real:  x0 ~ data,  x_t ~ q(x_t | x0),  x_s ~ q(x_s | x_t, x0)          (together: (x_s, x_t) ~ q)
    fake:  the same x_t,  x_s' ~ q(x_s | x_t, G(x_t, z, t))

    L_D = E sp(−D(x_s, x_t, t)) + E sp(D(x_s', x_t, t)) + γ/2 E ‖∇_{x_s} D(x_s, x_t, t)‖²      sp(u) = log(1 + e^u)
    L_G = E sp(−D(x_s', x_t, t))                                  (the non-saturating loss of Goodfellow et al.)

The last term of L_D is R1 (Mescheder et al. 2018, Eq. 9): a penalty on D's gradient at real data, which keeps D
smooth where the data is and makes the game converge. At the optimum p_θ(x_s | x_t) = q(x_s | x_t) on every step of
the grid, so the T steps chained from x_1 ~ N(0, I) sample the data. Sampling is DDPM's ancestral sampler unchanged
(common.samplers.ddpm), only its x̂0 is a draw of G instead of a mean.

References
    Xiao, Kreis & Vahdat 2022, "Tackling the Generative Learning Trilemma with Denoising Diffusion GANs", ICLR,
        arXiv:2112.07804.
    Goodfellow et al. 2014, "Generative Adversarial Networks", arXiv:1406.2661.
    Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do actually Converge?", arXiv:1801.04406.
    Ho, Jain & Abbeel 2020 (the posterior, Eqs. 6–7), arXiv:2006.11239.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.config import require
from common.nets import TimeEmbedding, register
from common.paths import AffinePath, DiscreteVP
from common.predictions import denoiser
from common.samplers import posterior

Tensor = torch.Tensor
PATH = DiscreteVP.named("cosine", 1000)   # day 6's path: the same grid serves DDIM on day 6's model


# --- the generator's step: x̂0 from G, then the posterior ------------------------------------------------------

def draw_z(G: nn.Module, x_t: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I): G.cfg.cond_channels noise images the size of x_t, drawn on the CPU (the same on every device)."""
    return torch.randn((len(x_t), G.cfg.cond_channels, *x_t.shape[2:]), generator=generator).to(x_t)


def generate(G: nn.Module, x_t: Tensor, t: Tensor, z: Tensor) -> Tensor:
    """x̂0 = G(x_t, z, t): the U-Net sees z as extra input channels (its `cond`); tanh keeps x̂0 in (−1, 1), as in
    Xiao et al.'s generator."""
    return torch.tanh(G(x_t, t.to(x_t.device), cond=z))


def sample_posterior(path: AffinePath, x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor, noise: Tensor) -> Tensor:
    """x_s = mean + sqrt(var) · noise, a draw from q(x_s | x_t, x0) (common.samplers.posterior; Eqs. 6–7 of Ho et
    al.), for per-sample levels t > s (B,) of a grid. The posterior's coefficients are numbers per pair of levels, so
    the batch goes level by level. At s = 0 the variance is 0 and the mean is x0: the last step returns x̂0."""
    x_s = torch.empty_like(x_t)
    for level in t.unique():
        here = t == level                                            # (B,) on the CPU, as t
        i = here.to(x_t.device)
        mean, var = posterior(path, x0[i], x_t[i], level, s[here][0])
        x_s[i] = mean + var.sqrt().to(x_t) * noise[i]
    return x_s


def gan_denoiser(G: nn.Module, generator: torch.Generator | None):
    """G as a denoiser (x_t, t) -> (x̂0, ε̂) that draws a fresh z at every call. DDPM's ancestral step
    (common.samplers.ddpm_step, posterior variance) with this x̂0 is exactly the step p_θ(x_s | x_t) above, so
    DDPM's sampler on the grid is DDGAN's sampler."""
    return denoiser(lambda x_t, t: generate(G, x_t, t, draw_z(G, x_t, generator)), "x0", PATH)


# --- training pairs -------------------------------------------------------------------------------------------

def levels(n: int, grid: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n pairs of neighbouring grid times t > s (float64), each of the grid's steps equally likely."""
    k = torch.randint(len(grid) - 1, (n,), generator=generator)
    return grid[k], grid[k + 1]


def real_pairs(x0: Tensor, grid: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(t, s, x_t, x_s): x_t ~ q(x_t | x0) and x_s ~ q(x_s | x_t, x0), a draw of the pair (x_s, x_t) from q."""
    t, s = levels(len(x0), grid, generator)
    x_t = PATH.sample(x0, t, torch.randn(x0.shape, generator=generator).to(x0))
    return t, s, x_t, sample_posterior(PATH, x0, x_t, t, s, torch.randn(x0.shape, generator=generator).to(x0))


def fake_x_s(G: nn.Module, x_t: Tensor, t: Tensor, s: Tensor, generator: torch.Generator) -> Tensor:
    """x_s' ~ p_θ(x_s | x_t) = q(x_s | x_t, G(x_t, z, t)): the same posterior as the real pair's, at G's x̂0."""
    x0 = generate(G, x_t, t, draw_z(G, x_t, generator))
    return sample_posterior(PATH, x0, x_t, t, s, torch.randn(x_t.shape, generator=generator).to(x_t))


# --- the objective --------------------------------------------------------------------------------------------

def d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """E sp(−D(real)) + E sp(D(fake)): the logistic loss of D, real pairs labelled 1 and fakes 0."""
    return F.softplus(-d_real.float()).mean() + F.softplus(d_fake.float()).mean()


def g_loss(d_fake: Tensor) -> Tensor:
    """E sp(−D(fake)): G's non-saturating loss, which keeps its gradient when D rejects the fakes confidently."""
    return F.softplus(-d_fake.float()).mean()


def r1_penalty(d_real: Tensor, x_s: Tensor, gamma: float) -> Tensor:
    """γ/2 E ‖∇_{x_s} D(x_s, x_t, t)‖² on real pairs (Mescheder et al. 2018, Eq. 9). `d_real` (B,) is D at the
    real x_s, which must require grad; each sample's score depends on its own x_s only, so the gradient of the sum
    is every sample's own gradient. The graph is kept: the penalty is trained through."""
    (grad,) = torch.autograd.grad(d_real.sum(), x_s, create_graph=True)          # (B, ...), x_s's dtype
    return gamma / 2 * grad.pow(2).flatten(1).sum(1).mean()


# --- the discriminator ----------------------------------------------------------------------------------------

@dataclass
class DiscriminatorConfig:
    in_channels: int = 1                     # channels of one image; D sees x_s and x_t stacked
    channels: int = 32                       # width of the first block
    mults: tuple[int, ...] = (1, 2, 4)       # width multiplier per block; every block after the first halves the side

    def check(self) -> None:
        require(self.in_channels >= 1, "in_channels", "choose the data's channels (1 for MNIST)")
        require(self.channels >= 1, "channels", "choose a width of 1 or more, e.g. 32")
        require(len(self.mults) >= 1 and min(self.mults, default=0) >= 1, "mults", "choose positive multipliers")


class DBlock(nn.Module):
    """3×3 convolution (stride 1 or 2), plus a per-channel shift from the time embedding, then LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return F.leaky_relu(self.conv(h) + self.emb(emb)[:, :, None, None], 0.2)


@register
class Discriminator(nn.Module):
    """D(x_s, x_t, t) -> (B,) logits: the pair stacked as channels, blocks that halve the side, t's embedding added
    in every block (as in Xiao et al.'s small discriminator), a sum over positions, a linear read-out. No
    normalisation layers: R1 is the regulariser."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.channels * m for m in cfg.mults]
        emb_dim = 4 * cfg.channels
        self.embed = TimeEmbedding(cfg.channels)                                   # t -> (B, 4·channels)
        self.blocks = nn.ModuleList(DBlock(c_in, c_out, emb_dim, 1 if i == 0 else 2)
                                    for i, (c_in, c_out) in enumerate(zip([2 * cfg.in_channels, *widths], widths)))
        self.head = nn.Linear(widths[-1], 1)

    def forward(self, x_s: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        emb = self.embed(t.to(x_s.device))
        h = torch.cat([x_s, x_t], dim=1)                                           # (B, 2C, H, W)
        for block in self.blocks:
            h = block(h, emb)                                                      # (B, width, H / 2^i, W / 2^i)
        return self.head(h.sum((2, 3))).squeeze(1)                                 # (B,)
