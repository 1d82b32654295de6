"""What a network predicts, and the adapters that turn any prediction into the canonical pair (x̂0, ε̂).

On an affine path x_t = alpha x0 + sigma eps (common.paths), a network may be trained to output

    eps        the noise ε (Ho et al. 2020)
    x0         the clean data x0
    v          alpha ε − sigma x0 (Salimans & Ho 2022, §4; on a non-VP path divided back by alpha² + sigma²)
    velocity   dx_t/dt = d_alpha x0 + d_sigma ε, the flow-matching target (Lipman et al. 2023)
    score      ∇ log p(x_t | x0) = −ε / sigma (Song et al. 2021); E of it given x_t is the marginal score

Each is linear in (x0, ε) given x_t, so each can be solved for the pair: TO_PAIR[kind](x_t, out, c) -> (x̂0, ε̂)
and TARGET[kind](x0, ε, c) -> the training target are inverses (tested by round trips in float64 on every
path). A *denoiser* is a function (x_t, t, **cond) -> Pair; samplers consume nothing else, so the same sampler
runs any network, and exact oracles (common.denoisers) plug in as "networks that predict x0".

References
    Ho, Jain & Abbeel 2020, arXiv:2006.11239; Salimans & Ho 2022, arXiv:2202.00512;
    Lipman et al. 2023, arXiv:2210.02747; Song et al. 2021, arXiv:2011.13456;
    Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models..." (Imagen: dynamic thresholding, §2.3).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from common.config import UserError
from common.paths import AffinePath, as_t, broadcast

Tensor = torch.Tensor


class Pair(NamedTuple):
    """The canonical prediction: x̂0 and ε̂ with x_t = alpha x̂0 + sigma ε̂."""
    x0: Tensor
    eps: Tensor


class Coefficients(NamedTuple):
    """The path at t, shaped to broadcast against a batch: alpha, sigma, their t-derivatives, alpha² + sigma²."""
    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor
    norm2: Tensor

    @classmethod
    def at(cls, path: AffinePath, t: Tensor | float, like: Tensor) -> Coefficients:
        t = as_t(t)
        return cls(*(broadcast(f(t), like) for f in (path.alpha, path.sigma, path.d_alpha, path.d_sigma,
                                                      path.norm2)))


def _from_velocity(xt, u, c):
    """Solve x_t = alpha x0 + sigma ε and u = d_alpha x0 + d_sigma ε (a 2×2 system per pixel)."""
    det = c.alpha * c.d_sigma - c.sigma * c.d_alpha
    return (c.d_sigma * xt - c.sigma * u) / det, (c.alpha * u - c.d_alpha * xt) / det


TO_PAIR: dict[str, Callable] = {
    "eps": lambda xt, eps, c: ((xt - c.sigma * eps) / c.alpha, eps),
    "x0": lambda xt, x0, c: (x0, (xt - c.alpha * x0) / c.sigma),
    "v": lambda xt, v, c: ((c.alpha * xt - c.sigma * v) / c.norm2, (c.sigma * xt + c.alpha * v) / c.norm2),
    "velocity": _from_velocity,
    "score": lambda xt, score, c: ((xt + c.sigma ** 2 * score) / c.alpha, -c.sigma * score),
}
TARGET: dict[str, Callable] = {
    "eps": lambda x0, eps, c: eps,
    "x0": lambda x0, eps, c: x0,
    "v": lambda x0, eps, c: c.alpha * eps - c.sigma * x0,
    "velocity": lambda x0, eps, c: c.d_alpha * x0 + c.d_sigma * eps,
    "score": lambda x0, eps, c: -eps / c.sigma,
}
PREDICTIONS = tuple(TO_PAIR)


def check_prediction(kind: str) -> str:
    if kind not in TO_PAIR:
        raise UserError(f"unknown prediction '{kind}'; choose one of: {', '.join(PREDICTIONS)}")
    return kind


def to_pair(kind: str, xt: Tensor, out: Tensor, c: Coefficients) -> Pair:
    return Pair(*TO_PAIR[check_prediction(kind)](xt, out, c))


def denoiser(model: Callable, prediction: str, path: AffinePath) -> Callable[..., Pair]:
    """Wrap a network (x_t, t, **cond) -> its `prediction` as a denoiser (x_t, t, **cond) -> Pair."""
    check_prediction(prediction)

    def denoise(xt: Tensor, t: Tensor, **cond) -> Pair:
        out = model(xt, torch.as_tensor(t).to(xt.device), **cond)   # t stays float64: exact oracles need it
        return to_pair(prediction, xt, out.to(xt.dtype), Coefficients.at(path, t, xt))
    return denoise


def velocity(pair: Pair, c: Coefficients) -> Tensor:
    """dx_t/dt of the probability-flow ODE: E[d_alpha x0 + d_sigma ε | x_t] = d_alpha x̂0 + d_sigma ε̂."""
    return c.d_alpha * pair.x0 + c.d_sigma * pair.eps


# --- wrappers around a denoiser ------------------------------------------------------------------------

def _refit_eps(xt: Tensor, x0: Tensor, t: Tensor, path: AffinePath) -> Pair:
    """Keep x_t = alpha x̂0 + sigma ε̂ true after x̂0 was changed: ε̂ = (x_t − alpha x̂0) / sigma."""
    alpha, sigma = path.alpha_sigma(t, xt)
    return Pair(x0, (xt - alpha * x0) / sigma)


def clipped(denoise: Callable[..., Pair], path: AffinePath, lo: float = -1.0, hi: float = 1.0):
    """x̂0 clamped to the data range [lo, hi] (Ho et al.'s sampler clips to [-1, 1]), ε̂ refitted."""
    def denoise_clipped(xt, t, **cond):
        return _refit_eps(xt, denoise(xt, t, **cond).x0.clamp(lo, hi), t, path)
    return denoise_clipped


def thresholded(denoise: Callable[..., Pair], path: AffinePath, percentile: float = 0.995):
    """Dynamic thresholding (Saharia et al. 2022, §2.3): s = max(1, the percentile of |x̂0| per image),
    then x̂0 ← clamp(x̂0, −s, s) / s, which pulls saturated pixels inwards instead of flattening them."""
    def denoise_thresholded(xt, t, **cond):
        x0 = denoise(xt, t, **cond).x0
        s = torch.quantile(x0.flatten(1).abs().float(), percentile, dim=1).clamp(min=1).to(x0)
        s = s.reshape(-1, *[1] * (x0.dim() - 1))
        return _refit_eps(xt, torch.maximum(torch.minimum(x0, s), -s) / s, t, path)
    return denoise_thresholded


def guided(denoise: Callable[..., Pair], w: float, null: int | Tensor):
    """Classifier-free guidance (Ho & Salimans 2022): ε̃ = ε_∅ + w (ε_c − ε_∅) for conditions `y`.

    `y` holds class labels (B,) and `null` the "no class" label, or `y` holds tokenized captions (B, L) and
    `null` the empty caption's tokens (L,). w = 0 is the unconditional model, w = 1 the conditional one; the
    paper's guidance strength is w − 1 (its ε̃ = (1 + w') ε_c − w' ε_∅). Both branches run in one batched
    forward pass. The combination is linear, so applying it to x̂0 and ε̂ alike gives the same x̂0 as
    applying it to any one prediction.
    """
    def denoise_guided(xt, t, *, y, **cond):
        t = torch.as_tensor(t).expand(len(xt)) if torch.as_tensor(t).dim() == 0 else torch.as_tensor(t)
        y_null = torch.as_tensor(null, dtype=y.dtype, device=y.device).expand_as(y)
        both = denoise(torch.cat([xt, xt]), torch.cat([t, t]), y=torch.cat([y, y_null]), **cond)
        (x0_c, x0_u), (eps_c, eps_u) = both.x0.chunk(2), both.eps.chunk(2)
        return Pair(torch.lerp(x0_u, x0_c, w), torch.lerp(eps_u, eps_c, w))  # u + w (c − u), exact at w = 0 and 1
    return denoise_guided
