"""Averages of the weights over training, and choosing one after training (Karras et al. 2024, EDM2).

Training steps are k = 1, 2, … and θ_k the optimiser's weights after step k (k is not diffusion time).

    classic EMA      θ̄_k = β θ̄_{k−1} + (1 − β) θ_k  (common.training.EMA, with its warm-up of β)
    power EMA        θ̂_γ(k) = β_γ(k) θ̂_γ(k−1) + (1 − β_γ(k)) θ_k,   β_γ(k) = (1 − 1/k)^{γ+1}       (EDM2, Eq. 3)

The power EMA averages θ_1 … θ_k with weights growing like τ^γ: in continuous time its profile is
p(τ) = (γ + 1) τ^γ / k^{γ+1} on [0, k], a fixed *fraction* of the run however long it is, with no bias towards
the initial weights. Its width relative to the run's length is (EDM2, Eq. 2)

    σ_rel = (γ + 1)^{1/2} / ((γ + 2) (γ + 3)^{1/2}),       e.g. γ ≈ 6.94 ⇔ σ_rel = 0.10.

Post-hoc EMA (EDM2, §3.1 and App. C.2). Store snapshots θ̂_{γ_i}(k_i) of a few power EMAs during training. Each is
the integral of θ(τ) against its profile p_i, and averaging is linear in θ, so any other profile p* that is a
combination Σ c_i p_i of the stored ones gives θ* = Σ c_i θ̂_i exactly. For any target, the least-squares c solves

    G c = b,   G_ij = ⟨p_i, p_j⟩,   b_i = ⟨p_i, p*⟩,   ⟨p_a, p_b⟩ = (γ_a + 1)(γ_b + 1) m^{γ_a + γ_b + 1}
                                                                   / ((γ_a + γ_b + 1) k_a^{γ_a + 1} k_b^{γ_b + 1}),
    m = min(k_a, k_b)  (the integral of p_a p_b over [0, m], where both are non-zero).

Reference: Karras, Aittala, Lehtinen, Hellsten, Aila & Laine 2024, "Analyzing and Improving the Training Dynamics
of Diffusion Models", arXiv:2312.02696.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from common.config import UserError, require
from common.training import EMA, average_into

Tensor = torch.Tensor
F64 = torch.float64


def sigma_rel(gamma: float) -> float:
    """The relative width of the power EMA with exponent γ (EDM2, Eq. 2)."""
    return (gamma + 1) ** 0.5 / ((gamma + 2) * (gamma + 3) ** 0.5)


GAMMA_WIDEST = (5 ** 0.5 - 3) / 2   # σ_rel is largest here (its derivative's root), 0.3003; it falls on either side


def gamma_for(sigma: float) -> float:
    """The exponent γ whose power EMA has relative width σ: the largest root of σ²(γ + 2)²(γ + 3) = γ + 1, a cubic.
    Two exponents give each width below the largest, 0.3003 at γ = (√5 − 3)/2; the larger is the one whose σ_rel
    falls as γ grows (longer memory, narrower profile), the branch EDM2 uses."""
    if not 0 < sigma < sigma_rel(GAMMA_WIDEST):
        raise UserError(f"sigma_rel={sigma}: choose a relative width in (0, {sigma_rel(GAMMA_WIDEST):.4f})")
    s2 = sigma ** 2                             # s²(γ³ + 7γ² + 16γ + 12) − γ − 1 = 0
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


class PowerEMA:
    """The power-function EMA of a model's weights, β_γ(k) = (1 − 1/k)^{γ+1} at the k-th update (k = 1 copies)."""

    def __init__(self, model: nn.Module, gamma: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.gamma = gamma
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        beta = (1 - 1 / self.updates) ** (self.gamma + 1)
        average_into(self.model, model, 1 - beta)


# --- several averages in one run (common.loop keeps those TrainConfig.averages names) --------------------

AVERAGES = "ema-β (fixed decay β from the first step), ema-β-ramp (decay warmed up), power-σ (power EMA of σ_rel σ)"


def parse_average(spec: str) -> tuple[str, float, bool]:
    """'ema-0.999' -> ('ema', 0.999, False); 'ema-0.999-ramp' -> ('ema', 0.999, True); 'power-0.05' -> ('power',
    0.05, False). A spec that is none of these is a one-line error naming the forms."""
    kind, _, rest = spec.partition("-")
    number, _, ramp = rest.partition("-")
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    ok = {"ema": 0 < value < 1 and ramp in ("", "ramp"),
          "power": 0 < value < sigma_rel(GAMMA_WIDEST) and not ramp}.get(kind, False)
    require(ok, "averages", f"'{spec}' is not an average; write {AVERAGES}, e.g. ema-0.9999,power-0.05")
    return kind, value, ramp == "ramp"


def make_average(spec: str, model: nn.Module) -> EMA | PowerEMA:
    """The average a spec names, of `model`'s weights."""
    kind, value, ramp = parse_average(spec)
    return EMA(model, value, ramp=ramp) if kind == "ema" else PowerEMA(model, gamma_for(value))


# --- post-hoc EMA --------------------------------------------------------------------------------------

def profile_inner(k_a: Tensor, g_a: Tensor, k_b: Tensor, g_b: Tensor) -> Tensor:
    """⟨p_a, p_b⟩ of power-EMA profiles ending at steps k and with exponents γ (broadcast; float64)."""
    k_a, g_a, k_b, g_b = (torch.as_tensor(v, dtype=F64) for v in (k_a, g_a, k_b, g_b))
    m, e = torch.minimum(k_a, k_b), g_a + g_b + 1
    # (γ_a + 1)(γ_b + 1) m^e / (e k_a^{γ_a+1} k_b^{γ_b+1}), with powers of ratios ≤ 1 to stay finite for large γ
    return (g_a + 1) * (g_b + 1) / e * (m / k_a) ** (g_a + 1) * (m / k_b) ** (g_b + 1) / m


def posthoc_weights(steps: Tensor, gammas: Tensor, target_step: float, target_gamma: float) -> Tensor:
    """Coefficients c (N,) with Σ c_i p_i closest in L² to the target profile: G c = b (least squares)."""
    steps, gammas = torch.as_tensor(steps, dtype=F64), torch.as_tensor(gammas, dtype=F64)
    gram = profile_inner(steps[:, None], gammas[:, None], steps[None], gammas[None])        # (N, N)
    b = profile_inner(steps, gammas, torch.tensor(target_step, dtype=F64), torch.tensor(target_gamma, dtype=F64))
    return torch.linalg.lstsq(gram, b[:, None]).solution[:, 0]


def profile_error(steps: Tensor, gammas: Tensor, weights: Tensor, target_step: float, target_gamma: float) -> float:
    """‖Σ c_i p_i − p*‖ / ‖p*‖ in L²: how well the stored profiles reproduce the target (0: exactly)."""
    steps, gammas = torch.as_tensor(steps, dtype=F64), torch.as_tensor(gammas, dtype=F64)
    ts, tg = torch.tensor(target_step, dtype=F64), torch.tensor(target_gamma, dtype=F64)
    gram = profile_inner(steps[:, None], gammas[:, None], steps[None], gammas[None])
    b = profile_inner(steps, gammas, ts, tg)
    target = profile_inner(ts, tg, ts, tg)
    return float((weights @ gram @ weights - 2 * weights @ b + target).clamp(min=0).sqrt() / target.sqrt())


def combine(states: list[dict[str, Tensor]], weights: Tensor) -> dict[str, Tensor]:
    """Σ_i c_i state_i, key by key (float tensors; others taken from the first state)."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(float(c) * s[key].double() for c, s in zip(weights, states)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out
