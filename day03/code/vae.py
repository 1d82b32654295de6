"""Day 03's nouns: a convolutional VAE with a Bernoulli decoder, its ELBO and importance-weighted bound.

Notation (Kingma & Welling 2014): encoder q(z|x) = N(mu(x), diag σ²(x)) with logvar = log σ², prior
p(z) = N(0, I), decoder p(x|z) = Π_pixels Bernoulli(x; sigmoid(logits(z))) on binary pixels x ∈ {0, 1}.
Every log-probability is in nats per image; bits/dim = nats / (784 ln 2).

    ELBO(x)   = E_q[log p(x|z)] − KL(q(z|x) || p(z))                       ≤ log p(x)
    L_K(x)    = E[log (1/K) Σ_k p(x, z_k) / q(z_k|x)],  z_k ~ q(z|x)       (Burda et al. 2016, Eq. 8)
    ELBO = L_1 ≤ L_K ≤ L_{K+1} → log p(x) as K → ∞                         (their Theorem 1)

Two training-time remedies for posterior collapse change only the KL term of the loss:
    KL annealing  recon + β_s · KL with β_s rising from 0 to 1 over the first steps  (Bowman et al. 2016)
    free bits     recon + Σ_d max(λ, E_batch KL_d): no pressure on a unit below λ nats (Kingma et al. 2016)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor
LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig:
    in_channels: int = 1
    channels: int = 32
    latent_dim: int = 16


class ConvVAE(nn.Module):
    """Encoder 28 -> 14 -> 7 -> (mu, logvar); decoder z -> 7 -> 14 -> 28 Bernoulli logits."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        c, flat = cfg.channels, 2 * cfg.channels * 7 * 7
        self.encoder = nn.Sequential(
            nn.Conv2d(cfg.in_channels, c, 4, stride=2, padding=1), nn.SiLU(),  # (B, c, 14, 14)
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),            # (B, 2c, 7, 7)
            nn.Flatten(), nn.Linear(flat, 2 * cfg.latent_dim))                 # (B, 2D)
        self.decoder = nn.Sequential(
            nn.Linear(cfg.latent_dim, flat), nn.SiLU(), nn.Unflatten(1, (2 * c, 7, 7)),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU(),   # (B, c, 14, 14)
            nn.ConvTranspose2d(c, cfg.in_channels, 4, stride=2, padding=1))    # (B, 1, 28, 28) logits

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Binary images x (B, 1, 28, 28) in {0, 1} -> (mu, logvar), each (B, D), in float32."""
        mu, logvar = self.encoder(2 * x - 1).float().chunk(2, dim=1)  # the network sees [-1, 1]
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Latents (B, D) -> Bernoulli logits (B, 1, 28, 28) in float32."""
        return self.decoder(z).float()


def binarise(x: Tensor, generator: torch.Generator) -> Tensor:
    """Images in [-1, 1] -> {0, 1} pixels drawn as Bernoulli((x + 1) / 2) (dynamic binarisation)."""
    u = torch.rand(x.shape, generator=generator).to(x.device)
    return (u < (x.float() + 1) / 2).float()


def reparameterise(mu: Tensor, logvar: Tensor, generator: torch.Generator, k: int | None = None) -> Tensor:
    """z = mu + σ ⊙ eps, eps ~ N(0, I) (Kingma & Welling 2014, Eq. 10); k draws -> (k, B, D)."""
    shape = mu.shape if k is None else (k, *mu.shape)
    eps = torch.randn(shape, generator=generator).to(mu)
    return mu + (0.5 * logvar).exp() * eps


def kl_per_unit(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu_d, σ_d²) || N(0, 1)) = ½ (mu_d² + σ_d² − 1 − log σ_d²) for each latent unit d. (B, D)"""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)


def kl_to_prior(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, σ²) || N(0, I)) = Σ_d kl_per_unit (Kingma & Welling 2014, App. B). (B,)"""
    return kl_per_unit(mu, logvar).sum(dim=-1)


def bernoulli_log_lik(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x|z) = Σ_pixels x log p + (1 − x) log(1 − p), p = sigmoid(logits). (..., C, H, W) -> (...)"""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)


def gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(dim=-1)


def elbo_terms(vae: ConvVAE, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One-sample (reconstruction −log p(x|z), KL) of binary images x, each (B,) in nats."""
    mu, logvar = vae.encode(x)
    recon = -bernoulli_log_lik(vae.decode(reparameterise(mu, logvar, generator)), x)
    return recon, kl_to_prior(mu, logvar)


def free_bits_kl(mu: Tensor, logvar: Tensor, lam: float) -> Tensor:
    """Σ_d max(λ, mean over the batch of KL_d): the KL term of the free-bits objective (Kingma et al. 2016,
    App. C, with one unit per group). A scalar; its gradient is zero for every unit whose KL is below λ."""
    return kl_per_unit(mu, logvar).mean(dim=0).clamp_min(lam).sum()


def log_weights(vae: ConvVAE, x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x) for k draws z_k ~ q(z|x). (K, B)"""
    mu, logvar = vae.encode(x)
    z = reparameterise(mu, logvar, generator, k)                             # (K, B, D)
    log_lik = bernoulli_log_lik(vae.decode(z.flatten(0, 1)).unflatten(0, (k, len(x))), x)
    zeros = torch.zeros_like(z)
    return log_lik + gaussian_log_prob(z, zeros, zeros) - gaussian_log_prob(z, mu, logvar)


def iwae_bound(log_w: Tensor) -> Tensor:
    """L_K = log (1/K) Σ_k w_k, computed stably as logsumexp − log K (Burda et al. 2016, Eq. 8). (B,)"""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def active_units(mu: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """A_u = Cov_x(E_q[z_u | x]) over a data set's posterior means mu (N, D); active if above
    the threshold (Burda et al. 2016, Sec. 5.2). Returns (count, A (D,))."""
    activity = mu.double().var(dim=0)
    return int((activity > threshold).sum()), activity


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016) of two vectors (D,) at times t (T,). (T, D)

    sin((1 − t)θ)/sin θ · z0 + sin(tθ)/sin θ · z1 with θ the angle between z0 and z1: the path
    follows the great circle, so the norm stays near ||z0|| ≈ ||z1|| where a prior sample lives,
    while the straight line's midpoint falls inside the shell of typical prior samples.
    """
    theta = torch.arccos((z0 @ z1 / (z0.norm() * z1.norm())).clamp(-1, 1))
    t = t[:, None]
    return (torch.sin((1 - t) * theta) * z0 + torch.sin(t * theta) * z1) / torch.sin(theta)
