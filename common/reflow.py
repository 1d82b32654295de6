"""Rectified flow and reflow: a flow trained on its own (noise, sample) pairs has straighter paths.

Here t = 0 is data and t = 1 noise, as on every day; Liu et al. write the opposite (their X_0 is noise, X_1 data),
so their velocity at their time τ is minus ours at t = 1 − τ.

    x_t = (1 − t) x0 + t x1,    target u = x1 − x0             (common.paths.Linear, the velocity target)

1-rectified flow trains on independent pairs (x0 data, x1 ~ N(0, I)): day 16's conditional flow matching. Its ODE,
solved from t = 1 to 0, is a deterministic map x1 ↦ x̂0 = Φ(x1). Reflow (Liu et al. 2023, Alg. 1) draws fresh
noise, pairs each x1 with its own Φ(x1), and trains the next flow on those fixed pairs with the same loss. The new
flow keeps the marginals, never raises the transport cost E c(x1 − x̂0) for convex c (their Thm. 3.5), and is
straighter (Thm. 3.7); a straight flow needs one Euler step: x̂0 = x1 − u(x1, 1).

A one-step model distils a flow's map directly: G(x1) = x1 − u_G(x1, 1) regressed on the pairs (x1, Φ(x1)) (their
§2.3), here with a squared error where Liu et al. use LPIPS.

References
    Liu, Gong & Liu 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow",
        ICLR, arXiv:2209.03003.
    Liu, Zhang, Ma, Peng & Liu 2024, "InstaFlow: One Step is Enough for High-Quality Diffusion-Based Text-to-Image
        Generation", ICLR, arXiv:2309.06380.
"""
from __future__ import annotations

import copy

import torch

from common.diffusion import diffusion_loss
from common.paths import Linear, uniform_grid
from common.predictions import Coefficients, velocity
from common.samplers import heun, sample_batched

Tensor = torch.Tensor
PATH = Linear()
ONE = torch.tensor(1.0, dtype=torch.float64)


def reflow_pairs(denoise, noise: Tensor, steps: int, *, device="cpu", batch: int = 250, bf16: bool = True) -> Tensor:
    """Φ(noise): where the flow's ODE carries each noise, by Heun's method on `steps` uniform steps. Deterministic:
    the same noise gives the same samples (no generator is drawn from)."""
    return sample_batched(heun, denoise, noise, uniform_grid(PATH, steps), path=PATH, device=device, batch=batch,
                          bf16=bf16, desc="reflow pairs")


def independent_loss(net, x0: Tensor, y, generator) -> Tensor:
    """1-rectified flow (conditional flow matching): noise drawn independently of the data at every step."""
    return diffusion_loss(net, x0, PATH, "velocity", generator)[0].mean()


def paired_loss(net, x0: Tensor, x1: Tensor, generator) -> Tensor:
    """Reflow: the same loss on fixed pairs, x1 the noise each sample x0 = Φ(x1) came from (passed as fit's y)."""
    return diffusion_loss(net, x0, PATH, "velocity", generator, noise=x1)[0].mean()


def one_step(denoise, x1: Tensor) -> Tensor:
    """x̂0 = x1 − u(x1, 1): one Euler step from t = 1 to 0 (exact for a straight flow)."""
    t = ONE.expand(len(x1))
    return x1 - velocity(denoise(x1, t), Coefficients.at(PATH, t, x1))


def distill_loss(net, x0: Tensor, x1: Tensor, generator) -> Tensor:
    """‖(x1 − net(x1, 1)) − Φ(x1)‖²: the one-step map regressed on the teacher's pairs (x0 = Φ(x1), fit's y = x1)."""
    t = ONE.expand(len(x1)).to(x1)
    return (x1 - net(x1, t).float() - x0).pow(2).flatten(1).mean(1).mean()


def trainable_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a trained (EMA, frozen) network to train further: the next round starts from its weights."""
    return copy.deepcopy(model).train().requires_grad_(True)


def coupling_cost(x0: Tensor, x1: Tensor) -> float:
    """E ‖x1 − x0‖²: the quadratic transport cost of a coupling (a reflow never raises it)."""
    return float((x1 - x0).double().pow(2).flatten(1).sum(1).mean())
