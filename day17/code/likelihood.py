"""Exact log-likelihoods through the probability-flow ODE (instantaneous change of variables).

Here t = 0 is data and t = 1 noise, as in Song et al. 2021. Along a solution of dx/dt = u(x, t) the density of
the flow's marginals obeys d log p_t(x_t) / dt = −∇·u(x_t, t) (Chen et al. 2018, Thm. 1), so solving from the
data point x_0 up to x_1:

    log p_0(x_0) = log p_1(x_1) + ∫_0^1 ∇·u(x_t, t) dt,        p_1 = N(0, I)

The divergence is exact in 2-D (one backward pass per coordinate) and Hutchinson's estimate in 784-D:
∇·u = E_z[zᵀ (∂u/∂x) z] for Rademacher z, one vector-Jacobian product per call, with the same z along the whole
trajectory (Grathwohl et al. 2019, FFJORD). The augmented state (x, ∫∇·u) is integrated by torchdiffeq.

Bits per dimension of 8-bit images in [-1, 1] (bins of width 2/256 = 1/128), with uniform dequantisation
x = (k + u) / 128 − 1, u ~ U[0, 1)^D: −log2 P(k) ≤ E_u[−log2 p(x)] + 7 D (Theis et al. 2016), so

    bpd = −log p(x) / (D ln 2) + 7

References
    Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural Ordinary Differential Equations", arXiv:1806.07366.
    Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud 2019, "FFJORD", arXiv:1810.01367.
    Hutchinson 1989, "A stochastic estimator of the trace of the influence matrix...", Comm. Stat. 18(3).
    Song et al. 2021, "Score-Based Generative Modeling through SDEs" (§4.3, App. D.2), arXiv:2011.13456.
    Theis, van den Oord & Bethge 2016, "A note on the evaluation of generative models", arXiv:1511.01844.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torchdiffeq import odeint

from common.paths import AffinePath
from common.predictions import Coefficients, velocity

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]


def drift(denoise: Callable, path: AffinePath) -> Field:
    """(t, x) -> u(x, t) = d_alpha x̂0 + d_sigma ε̂: the probability-flow ODE of a denoiser (t a scalar tensor)."""
    def u(t: Tensor, x: Tensor) -> Tensor:
        t = t.to(torch.float64).expand(len(x))
        return velocity(denoise(x, t), Coefficients.at(path, t, x))
    return u


def exact_divergence(u: Tensor, x: Tensor) -> Tensor:
    """∇·u = Σ_i ∂u_i/∂x_i for u (B, D) computed from x (B, D): D backward passes (cheap in 2-D).  (B,)"""
    return sum(torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))


def hutchinson(z: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """The estimate zᵀ (∂u/∂x) z of ∇·u with a fixed probe z like x: one vector-Jacobian product.  (B,)"""
    def divergence(u: Tensor, x: Tensor) -> Tensor:
        (vjp,) = torch.autograd.grad(u, x, z)                             # zᵀ ∂u/∂x, shaped like x
        return (vjp * z).flatten(1).sum(1)
    return divergence


def rademacher(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Entries ±1 with probability ½ each: the probe of least variance for Hutchinson's estimator."""
    return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1


def log_density(field: Field, x0: Tensor, ts: Tensor, divergence: Callable = exact_divergence,
                method: str = "rk4") -> tuple[Tensor, Tensor]:
    """log p_{ts[0]}(x0) by solving the augmented ODE d(x, ℓ)/dt = (u, ∇·u) on the increasing grid ts (from the
    data end to ts[-1] = 1) with torchdiffeq's `method`; returns (log-density (B,), x at ts[-1])."""
    def augmented(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, _ = state
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = field(t, x)
            div = divergence(u, x)
        return u.detach(), div.detach()

    ell0 = torch.zeros(len(x0), dtype=x0.dtype, device=x0.device)
    xs, ells = odeint(augmented, (x0, ell0), ts.to(x0.device), method=method)
    x1 = xs[-1]
    return standard_normal_log_prob(x1) + ells[-1].double(), x1


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I) per row, in float64.  (B,)"""
    x = x.flatten(1).double()
    return -0.5 * (x.pow(2).sum(1) + x.shape[1] * math.log(2 * math.pi))


def dequantise(x: Tensor, generator: torch.Generator) -> Tensor:
    """8-bit images in [-1, 1] (levels k / 127.5 − 1) -> x = (k + u) / 128 − 1 with u ~ U[0, 1): a point of the
    level's bin, the bins tiling [-1, 1] with width 1/128."""
    k = torch.round((x + 1) * 127.5)
    return (k + torch.rand(x.shape, generator=generator)) / 128 - 1


def bits_per_dim(log_p: Tensor, dims: int) -> Tensor:
    """−log2 of the bin probability per dimension, from the log-density of a dequantised point."""
    return -log_p / (dims * math.log(2)) + 7


def histogram_bits_per_dim(train: Tensor, test: Tensor) -> float:
    """A baseline on the same 8-bit data: every pixel independent, its 256-level histogram fitted on `train` (add-one
    smoothing), −log2 P of the `test` images per dimension."""
    k_train = torch.round((train + 1) * 127.5).long().flatten(1)               # (N, D)
    k_test = torch.round((test + 1) * 127.5).long().flatten(1)
    counts = torch.zeros(k_train.shape[1], 256, dtype=torch.float64)
    counts.scatter_add_(1, k_train.T, torch.ones(k_train.T.shape, dtype=torch.float64))   # (D, 256)
    log_p = (counts + 1).log() - (counts + 1).sum(1, keepdim=True).log()
    return float(-log_p.gather(1, k_test.T).mean() / math.log(2))
