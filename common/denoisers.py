"""Exact denoisers: the posterior mean E[x0 | x_t] of data whose law we know, called like a network.

    oracle = MixtureDenoiser(means, std, path)          # x0 ~ (1/N) Σ_n N(μ_n, std² I)
    oracle = ideal_denoiser(train_x, path)              # x0 uniform over a finite dataset (std = 0)
    oracle = LabelledMixtureDenoiser(means, labels, std, path, null)   # E[x0 | x_t, y]: classes of components
    denoise = predictions.denoiser(oracle, "x0", path)  # -> (x̂0, ε̂) for any sampler

Both are "networks that predict x0", so they plug into the samplers unchanged and serve as test oracles:
the exact score of the noised data is ∇ log p_t(x_t) = (alpha_t E[x0 | x_t] − x_t) / sigma_t² (Tweedie), and
the probability-flow ODE they drive transports N(0, I) exactly onto the data. A sampler driven by the
ideal denoiser of a training set can only return training points: the optimum of the denoising loss
memorises (Karras et al. 2022, §3; Kadkhodaie et al. 2024).

References
    Karras, Aittala, Aila & Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
        arXiv:2206.00364 (§3, the ideal denoiser of a finite dataset).
    Efron 2011, "Tweedie's formula and selection bias", JASA.
"""
from __future__ import annotations

import torch

from common.paths import AffinePath

Tensor = torch.Tensor


def responsibilities(xt: Tensor, means: Tensor, std: float, alpha: Tensor, sigma: Tensor,
                     allowed: Tensor | None = None) -> Tensor:
    """w_n = p(n | x_t) when x0 ~ (1/N) Σ_n N(μ_n, std² I) and x_t = alpha x0 + sigma eps.  (B, N)

    Given n, x_t ~ N(alpha μ_n, (alpha² std² + sigma²) I), so Bayes with a uniform prior gives
    w_n ∝ exp(−‖x_t − alpha μ_n‖² / (2 (alpha² std² + sigma²))). The ‖x_t‖² inside the square is the
    same for every n and cancels in the softmax. Float64: at small t the logits reach ~1e7.
    `allowed` (B, N) bool restricts each row's prior to some components (uniform over those): p(n | x_t, c).
    """
    x, mu = xt.flatten(1).double(), means.flatten(1).double().to(xt.device)   # (B, D), (N, D)
    a, s = alpha.double().reshape(-1, 1), sigma.double().reshape(-1, 1)       # (B, 1)
    var = a ** 2 * std ** 2 + s ** 2
    logits = (2 * a * (x @ mu.T) - a ** 2 * mu.pow(2).sum(1)) / (2 * var)     # (B, N)
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(xt.device), -torch.inf)
    return torch.softmax(logits, dim=1)


def mixture_posterior_mean(xt: Tensor, means: Tensor, std: float, alpha: Tensor, sigma: Tensor,
                           allowed: Tensor | None = None) -> Tensor:
    """E[x0 | x_t] for x0 ~ (1/N) Σ_n N(μ_n, std² I), in float64, shaped like x_t.

    Per component, x0 and x_t are jointly Gaussian, so E[x0 | x_t, n] = μ_n + g (x_t − alpha μ_n) with
    gain g = alpha std² / (alpha² std² + sigma²); averaging over n with the responsibilities w gives
        E[x0 | x_t] = m + g (x_t − alpha m),   m = Σ_n w_n μ_n.
    For std = 0 (the empirical distribution of a training set) g = 0: a softmax-weighted average of
    training points, which is why a sampler driven by it can only return training points.
    """
    a, s = alpha.double().reshape(-1, 1), sigma.double().reshape(-1, 1)       # (B, 1)
    m = responsibilities(xt, means, std, a, s, allowed) @ means.flatten(1).double().to(xt.device)  # (B, D)
    gain = a * std ** 2 / (a ** 2 * std ** 2 + s ** 2)
    return (m + gain * (xt.flatten(1).double() - a * m)).view(xt.shape)


class MixtureDenoiser:
    """(x_t, t) -> E[x0 | x_t] on `path` for x0 ~ (1/N) Σ_n N(μ_n, std² I): an exact x0-predicting network."""

    def __init__(self, means: Tensor, std: float, path: AffinePath):
        self.means, self.std, self.path = means, std, path

    def __call__(self, xt: Tensor, t: Tensor, **cond) -> Tensor:
        alpha, sigma = self.path.alpha_sigma(t, xt.double())
        return mixture_posterior_mean(xt, self.means, self.std, alpha, sigma).to(xt.dtype)


class LabelledMixtureDenoiser(MixtureDenoiser):
    """(x_t, t, y) -> E[x0 | x_t, y] when each component of the mixture carries a class label: the component
    n has label labels[n], and conditioning on y keeps the components of that class (p(x0 | y) is the uniform
    mixture of them). y = null, or no y, conditions on nothing: the whole mixture, as MixtureDenoiser.
    The exact conditional and unconditional denoisers of one labelled dataset, e.g. for guidance."""

    def __init__(self, means: Tensor, labels: Tensor, std: float, path: AffinePath, null: int):
        super().__init__(means, std, path)
        self.labels, self.null = labels, null

    def __call__(self, xt: Tensor, t: Tensor, y: Tensor | None = None, **cond) -> Tensor:
        alpha, sigma = self.path.alpha_sigma(t, xt.double())
        allowed = None
        if y is not None:
            y = y.to(self.labels.device)[:, None]                                 # (B, 1)
            allowed = (self.labels[None] == y) | (y == self.null)                  # (B, N)
        return mixture_posterior_mean(xt, self.means, self.std, alpha, sigma, allowed).to(xt.dtype)


def ideal_denoiser(data: Tensor, path: AffinePath) -> MixtureDenoiser:
    """The exact denoiser of the finite dataset `data` (N, ...): E[x0 | x_t] with x0 uniform over its rows."""
    return MixtureDenoiser(data, 0.0, path)


def effective_count(xt: Tensor, points: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """1 / Σ_n w_n² for the empirical distribution of `points`: N when all weigh alike, 1 once one wins.  (B,)"""
    return 1 / responsibilities(xt, points, 0.0, alpha, sigma).pow(2).sum(1)
