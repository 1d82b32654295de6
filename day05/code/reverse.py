"""Day 05 helpers: denoisers that need no training, and how well any denoiser does at each t.

    responsibilities  p(component n | x_t) for data drawn from a Gaussian mixture (n points when std = 0)
    mixture_denoiser  the exact E[x_0 | x_t] of that mixture, called like a network: (x_t, t) -> x0_hat
    effective_count   1 / Σ_n w_n²: how many training points that posterior mean is still averaging
    predict_x0        the x_0 a network implies, whatever it predicts (eps, x0 or v)
    implied_errors    per-image MSE of the implied x_0 and the implied eps at given (t, eps)
    band_times        t drawn uniformly on the lattice inside one of `bins` equal bands of (0, 1]
    nearest           distance to, and index of, the nearest of a set of points

Every denoiser here is a function (x_t, t) -> x0_hat, so `common.diffusion.eps_model(d, "x0", schedule)`
turns it into the eps function the DDPM sampler consumes: no special sampler for oracles.

Reference: Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
"""
from __future__ import annotations

from typing import Callable

import torch

from common.diffusion import EPS_FROM, Schedule, x0_from_eps, x0_from_v

Tensor = torch.Tensor

# The x_0 each parameterisation implies; the companion of common.diffusion.EPS_FROM.
X0_FROM = {"eps": x0_from_eps, "x0": lambda xt, out, a, s: out, "v": x0_from_v}


def responsibilities(xt: Tensor, means: Tensor, std: float, alpha: Tensor, sigma: Tensor) -> Tensor:
    """w_n = p(n | x_t) when x_0 ~ (1/N) Σ_n N(μ_n, std² I) and x_t = alpha x_0 + sigma eps.  (B, N)

    Given n, x_t ~ N(alpha μ_n, (alpha² std² + sigma²) I), so Bayes with a uniform prior gives
    w_n ∝ exp(−‖x_t − alpha μ_n‖² / (2 (alpha² std² + sigma²))). The ‖x_t‖² inside the square is the
    same for every n and cancels in the softmax. Float64: at small t the logits reach ~1e7.
    """
    x, mu = xt.flatten(1).double(), means.flatten(1).double().to(xt.device)   # (B, D), (N, D)
    a, s = alpha.double().reshape(-1, 1), sigma.double().reshape(-1, 1)       # (B, 1)
    var = a**2 * std**2 + s**2
    logits = (2 * a * (x @ mu.T) - a**2 * mu.pow(2).sum(1)) / (2 * var)       # (B, N)
    return torch.softmax(logits, dim=1)


def mixture_denoiser(means: Tensor, std: float, schedule: Schedule) -> Callable[[Tensor, Tensor], Tensor]:
    """E[x_0 | x_t] for x_0 ~ (1/N) Σ_n N(μ_n, std² I); with std = 0 the data are the N points themselves.

    Per component, x_0 and x_t are jointly Gaussian, so E[x_0 | x_t, n] = μ_n + g (x_t − alpha μ_n) with
    gain g = alpha std² / (alpha² std² + sigma²); averaging over n with the responsibilities w gives
        E[x_0 | x_t] = m + g (x_t − alpha m),   m = Σ_n w_n μ_n.
    For std = 0 (the empirical distribution of a training set) g = 0: a softmax-weighted average of
    training points, which is why a sampler driven by it can only return training points.
    """
    mu = means.flatten(1).double()                                            # (N, D)

    def denoise(xt: Tensor, t: Tensor) -> Tensor:
        # (B, 1) each, float64; the sampler hands t over on x_t's device, the schedule's table lives on the CPU
        alpha, sigma = schedule.alpha_sigma(t.cpu(), xt.double().flatten(1))
        m = responsibilities(xt, means, std, alpha, sigma) @ mu.to(xt.device)  # (B, D)
        gain = alpha * std**2 / (alpha**2 * std**2 + sigma**2)
        return (m + gain * (xt.flatten(1).double() - alpha * m)).to(xt.dtype).view_as(xt)
    return denoise


def effective_count(xt: Tensor, points: Tensor, schedule: Schedule, t: Tensor) -> Tensor:
    """1 / Σ_n w_n² for the empirical distribution of `points`: N when all weigh alike, 1 once one wins.  (B,)"""
    alpha, sigma = schedule.alpha_sigma(t, xt.double().flatten(1))
    return 1 / responsibilities(xt, points, 0.0, alpha, sigma).pow(2).sum(1)


def predict_x0(model: Callable, prediction: str, schedule: Schedule, xt: Tensor, t: Tensor) -> Tensor:
    """The x_0 that `model` (predicting eps, x0 or v) implies at (x_t, t)."""
    alpha, sigma = schedule.alpha_sigma(t, xt)
    return X0_FROM[prediction](xt, model(xt, t.to(xt)).float(), alpha, sigma)


@torch.no_grad()
def implied_errors(model: Callable, prediction: str, schedule: Schedule, x0: Tensor, t: Tensor,
                   eps: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image MSE of the x_0 and of the eps that `model` implies at x_t = alpha x_0 + sigma eps.  (B,), (B,)

    Both come from the one output: eps_hat = EPS_FROM[prediction], x0_hat = (x_t − sigma eps_hat) / alpha,
    so the x_0 error is exactly (sigma / alpha)² times the eps error, image by image.
    """
    alpha, sigma = schedule.alpha_sigma(t, x0)
    xt = alpha * x0 + sigma * eps                                             # Eq. 4 of Ho et al.
    out = model(xt, t.to(xt)).float()
    eps_hat = EPS_FROM[prediction](xt, out, alpha, sigma)
    x0_hat = X0_FROM[prediction](xt, out, alpha, sigma)
    return (x0_hat - x0).pow(2).flatten(1).mean(1), (eps_hat - eps).pow(2).flatten(1).mean(1)


def band_times(schedule: Schedule, band: int, bins: int, n: int, generator: torch.Generator) -> Tensor:
    """n times uniform in the band (band / bins, (band + 1) / bins], snapped to the lattice i / T, i ≥ 1."""
    t = (band + torch.rand(n, generator=generator, dtype=torch.float64)) / bins
    return schedule.index(t).clamp(min=1).double() / schedule.n_steps


def nearest(queries: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """L2 distance from each query to its nearest point, and that point's index (float64).  (Q,), (Q,)"""
    d = torch.cdist(queries.flatten(1).double(), points.flatten(1).double().to(queries.device))  # (Q, N)
    dist, idx = d.min(1)
    return dist, idx
