"""Day 05 helpers: how well any denoiser does at each t, and how close samples come to the data.

    predict_x0        the x_0 a network implies, whatever it predicts (eps, x0 or v)
    implied_errors    per-image MSE of the implied x_0 and the implied eps at given (t, eps)
    nearest           distance to, and index of, the nearest of a set of points

The denoisers that need no training (the exact E[x_0 | x_t] of a Gaussian mixture or of a finite set of
training images) live in `common.denoisers`: they are called like a network that predicts x0, so
`common.predictions.denoiser(oracle, "x0", path)` hands them to the DDPM sampler unchanged.

Reference: Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from common.paths import AffinePath
from common.predictions import Coefficients, to_pair

Tensor = torch.Tensor


def predict_x0(model: Callable, prediction: str, path: AffinePath, xt: Tensor, t: Tensor) -> Tensor:
    """The x_0 that `model` (predicting eps, x0 or v) implies at (x_t, t)."""
    return to_pair(prediction, xt, model(xt, t.to(xt)).float(), Coefficients.at(path, t, xt)).x0


@torch.no_grad()
def implied_errors(model: Callable, prediction: str, path: AffinePath, x0: Tensor, t: Tensor,
                   eps: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image MSE of the x_0 and of the eps that `model` implies at x_t = alpha x_0 + sigma eps.  (B,), (B,)

    Both come from the one output through the adapters of common.predictions, which keep
    x_t = alpha x̂_0 + sigma ε̂; so the x_0 error is exactly (sigma / alpha)² times the eps error, image by image.
    """
    c = Coefficients.at(path, t, x0)
    xt = c.alpha * x0 + c.sigma * eps                                         # Eq. 4 of Ho et al.
    pred = to_pair(prediction, xt, model(xt, t.to(xt)).float(), c)
    return (pred.x0 - x0).pow(2).flatten(1).mean(1), (pred.eps - eps).pow(2).flatten(1).mean(1)


def nearest(queries: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """L2 distance from each query to its nearest point, and that point's index (float64).  (Q,), (Q,)"""
    d = torch.cdist(queries.flatten(1).double(), points.flatten(1).double().to(queries.device))  # (Q, N)
    dist, idx = d.min(1)
    return dist, idx
