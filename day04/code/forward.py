"""Day 04 helpers: the forward chain step by step, and what the closed form q(x_t | x_0) predicts.

    forward_chain        iterate q(x_i | x_{i−1}) = N(√(1−β_i) x_{i−1}, β_i I), yielding every x_i
    chain_vs_closed_form Monte Carlo moments of the chain against √ᾱ_t x_0 and 1 − ᾱ_t
    milestones           the first step at which a given share of the signal is gone
    marginal_density     the exact density of one pixel of x_t, a mixture over the data's pixel values
    mse_to_x0            E‖x_t − x_0‖² per pixel in closed form
    kl_to_prior_bounds   two closed forms that bracket KL(q(x_t) ‖ N(0, I)) at every t

Reference: Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239
(Eq. 2: the chain; Eq. 4: its closed form; Eq. 5: the prior term L_T).
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from common.paths import DiscreteVP

Tensor = torch.Tensor


def forward_chain(schedule: DiscreteVP, x0: Tensor, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """x_i = √(1−β_i) x_{i−1} + √β_i ε_i for i = 1..T (Eq. 2 of Ho et al.); yields x_1, ..., x_T."""
    x = x0.clone()
    for beta in schedule.betas.tolist():
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * noise
        yield x


@torch.no_grad()
def chain_vs_closed_form(schedule: DiscreteVP, x0: Tensor, copies: int, every: int,
                         generator: torch.Generator | None = None) -> dict:
    """Run `copies` chains from each image of x0 (B, D) and compare, every `every` steps, the per-pixel
    mean and variance over the copies with Eq. 4 of Ho et al.: mean √ᾱ_t x_0, variance 1 − ᾱ_t.

    Deviations are also reported in Monte Carlo standard errors (z = deviation / s.e., with
    s.e. √((1−ᾱ)/N) for the mean and (1−ᾱ)√(2/(N−1)) for the variance): if the closed form is right,
    z is standard normal, so its RMS is ≈ 1 and its maximum over M comparisons ≈ √(2 ln M).
    """
    start = x0.repeat_interleave(copies, 0)                           # (B·N, D): N copies of each image
    steps, means, variances = [], [], []
    for i, x in enumerate(forward_chain(schedule, start, generator), start=1):
        if i % every == 0 or i == schedule.n_steps:
            x = x.double().unflatten(0, (len(x0), copies))            # (B, N, D)
            steps.append(i)
            means.append(x.mean(1))                                   # (B, D)
            variances.append(x.var(1))
    ab = schedule.alpha_bar[steps].to(x0.device)[:, None, None]       # (K, 1, 1)
    mean_dev = torch.stack(means) - ab.sqrt() * x0.double()           # (K, B, D)
    var_dev = torch.stack(variances) - (1 - ab)
    z_mean = mean_dev / ((1 - ab) / copies).sqrt()
    z_var = var_dev / ((1 - ab) * math.sqrt(2 / (copies - 1)))
    return {"steps": steps, "mean": torch.stack(means).cpu(), "var": torch.stack(variances).cpu(),
            "max_abs_mean_dev": mean_dev.abs().max().item(), "max_abs_var_dev": var_dev.abs().max().item(),
            "rms_z_mean": z_mean.pow(2).mean().sqrt().item(), "rms_z_var": z_var.pow(2).mean().sqrt().item(),
            "max_abs_z_mean": z_mean.abs().max().item(), "max_abs_z_var": z_var.abs().max().item(),
            "n_comparisons": z_mean.numel()}


def first_step(condition: Tensor) -> int:
    """The first index i = 1..T at which a boolean (T,) tensor holds (T + 1 if it never does)."""
    hits = condition.nonzero()
    return int(hits[0]) + 1 if len(hits) else len(condition) + 1


def milestones(schedule: DiscreteVP, data_var: float) -> dict:
    """Three precise meanings of "half the signal is gone", as steps i (t = i / T):

    half_power      ᾱ_t ≤ 1/2: the signal's share of E‖x_t‖² has halved. For unit-variance data this
                    is the same step as SNR(t) = ᾱ_t / (1 − ᾱ_t) ≤ 1, i.e. 0 dB.
    half_amplitude  √ᾱ_t ≤ 1/2, i.e. ᾱ_t ≤ 1/4: the image's contrast has halved (SNR ≈ −4.8 dB).
    data_snr_0db    ᾱ_t v / (1 − ᾱ_t) ≤ 1 with v the data's mean per-pixel variance: the step at
                    which the *varying* part of real images drops below the noise.
    """
    ab = schedule.alpha_bar[1:]                                       # (T,) ᾱ_1 .. ᾱ_T
    return {"half_power_step": first_step(ab <= 0.5), "half_amplitude_step": first_step(ab <= 0.25),
            "data_snr_0db_step": first_step(ab * data_var / (1 - ab) <= 1)}


def marginal_density(grid: Tensor, levels: Tensor, weights: Tensor, alpha_bar: float) -> Tensor:
    """p(x_t) of one pixel: Σ_v w_v N(x; √ᾱ v, 1 − ᾱ) over pixel values v with frequencies w."""
    mean, var = math.sqrt(alpha_bar) * levels.double(), 1 - alpha_bar   # (L,)
    dens = torch.exp(-(grid.double()[:, None] - mean) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
    return dens @ weights.double()                                       # (G,)


def mse_to_x0(alpha_bar: Tensor, power: float) -> Tensor:
    """E[(x_t − x_0)²] per pixel with x_t = √ᾱ x_0 + √(1−ᾱ) ε and P = E[x_0²]:
    ((√ᾱ − 1) x_0 + √(1−ᾱ) ε)² averages to (1 − √ᾱ)² P + (1 − ᾱ) (the cross term has mean 0).
    It rises from 0 to P + 1 at ᾱ = 0, where x_t is noise independent of x_0."""
    return (1 - alpha_bar.sqrt()) ** 2 * power + (1 - alpha_bar)


def kl_to_prior_bounds(alpha_bar: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """(lower, upper) bounds on KL(q(x_t) ‖ N(0, I)), nats per image, for q(x_t) the marginal of the images
    x0 (N, ...) noised to each ᾱ of `alpha_bar` (K,). Each is (K,).

    upper = E_x0 KL(q(x_t | x_0) ‖ N(0, I)), Eq. 5's L_T at every t. Per pixel, KL(N(√ᾱ x, 1−ᾱ) ‖ N(0, 1))
            = ½ (ᾱ x² − ᾱ − log(1 − ᾱ)), so the average over images is ½ Σ_d (ᾱ (E[x_d²] − 1) − log(1 − ᾱ)).
            It exceeds the marginal's KL by the mutual information I(x_0; x_t):
            E_x0 KL(q(x_t|x_0) ‖ p) = I(x_0; x_t) + KL(q(x_t) ‖ p).
    lower = KL(N(m, diag v) ‖ N(0, I)) for the Gaussian with q(x_t)'s per-pixel mean m = √ᾱ μ_d and variance
            v = ᾱ s_d² + 1 − ᾱ. N(0, I) belongs to the family of diagonal Gaussians and the fit matches
            q(x_t)'s moments, so KL(q ‖ N(0, I)) = KL(q ‖ fit) + KL(fit ‖ N(0, I)) ≥ KL(fit ‖ N(0, I))
            (the Pythagorean identity of exponential families).
    The upper bound is infinite at t = 0 (q(x_0|x_0) is a point); the lower one stays finite.
    """
    x = x0.flatten(1).double()                                   # (N, D)
    ab = alpha_bar.double()[:, None]                             # (K, 1)
    second = x.pow(2).mean(0)                                    # (D,)  E[x_d²]
    mean, var = x.mean(0), x.var(0, correction=0)                # (D,)  moments of the images as they are
    upper = 0.5 * (ab * (second - 1) - torch.log1p(-ab)).sum(1)
    m2, v = ab * mean**2, ab * var + 1 - ab                      # (K, D)
    lower = 0.5 * (v + m2 - 1 - torch.log(v)).sum(1)
    return lower, upper
