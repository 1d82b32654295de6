"""The sampler settings day 28 compares at equal network calls, and the λ-uniform time grid.

DDIM (Song et al. 2021) on a uniform grid is the baseline; DPM-Solver++(2M) (Lu et al. 2022, Alg. 2:
common.samplers.dpmpp_2m) runs on a uniform-in-t grid, on the grid uniform in λ = log(alpha / sigma) that its
analysis assumes, and on EDM's ρ = 7 grid (Karras et al. 2022, Eq. 5); EDM's Heun (Alg. 1, in x / alpha against
sigma / alpha: common.samplers.edm_heun) on the ρ = 7 grid from EDM's σ_max = 80. Heun makes two calls a step
but one on its last, so its NFE is odd: 2n − 1 for n steps.

References: Lu et al. 2022 (DPM-Solver, arXiv:2206.00927; DPM-Solver++, arXiv:2211.01095); Karras et al. 2022
(arXiv:2206.00364); Song, Meng & Ermon 2021 (arXiv:2010.02502).
"""
from __future__ import annotations

import math

import torch

from common.config import UserError
from common.paths import AffinePath, edm_grid, uniform_grid
from common.samplers import CALLS_PER_STEP, ddim, dpmpp_2m, edm_heun

F64 = torch.float64


def lambda_grid(path: AffinePath, n: int, t0: float = 1.0, t_min: float = 1e-3) -> torch.Tensor:
    """n steps: n times evenly spaced in λ from λ(t0) to λ(t_min), then t = 0 (the 'logSNR' grid of Lu et al.
    2022, §3.3). λ(t0) must be finite (a DDPM schedule's ᾱ_T > 0; t0 < 1 else).

    On a discrete schedule the times are rounded to its levels. Where λ falls steeply (near ᾱ_T, and near the data)
    several λ-uniform times round to one level; each such time moves to the next free level below, so the grid
    keeps n distinct levels, as close to λ-uniform as the schedule allows."""
    if n < 1:
        raise UserError(f"steps={n}: choose at least 1 sampling step")
    lam = path.log_snr(torch.tensor([t0, t_min], dtype=F64)) / 2                      # λ = log_snr / 2
    ts = path.t_from_log_snr(2 * torch.linspace(lam[0], lam[1], n, dtype=F64))
    ts[0] = t0                                                                         # exact start
    if path.scale > 1:                                                                 # a schedule of levels
        levels = (ts * path.scale).round()
        for i in range(1, n):
            levels[i] = min(levels[i], levels[i - 1] - 1)
        if levels[-1] < 1:
            raise UserError(f"steps={n}: this {path.scale}-level schedule has too few levels below t0={t0} for "
                            f"{n} steps; choose fewer steps")
        ts = levels / path.scale
    return torch.cat([ts, torch.zeros(1, dtype=F64)])


def sigma_max_grid(path: AffinePath, n: int, s_max: float = 80.0) -> torch.Tensor:
    """EDM's ρ = 7 grid started where EDM starts, at σ̄ = sigma / alpha = σ_max (80, Karras et al. Table 1): the
    first time is the level with that σ̄, and the sampler treats the noise as x there (α = 0.0125, EDM's own
    approximation). From t = 1 instead (σ̄ ≈ 2·10⁴ on DDPM's clipped cosine schedule) Heun's first trapezoid
    would span a 10²–10³-fold fall of σ̄, where ε̂ along the path is far from linear in σ̄."""
    t0 = float(path.t_from_log_snr(torch.tensor(-2 * math.log(s_max), dtype=F64)))
    if path.scale > 1:                                                   # a schedule of levels: the nearest
        t0 = round(t0 * path.scale) / path.scale
    return edm_grid(path, n, t0=t0)


# name -> (sampler, grid(path, n)); the first is the baseline the others are compared with
SETTINGS = {
    "DDIM, uniform t": (ddim, uniform_grid),
    "DPM-Solver++(2M), uniform t": (dpmpp_2m, uniform_grid),
    "DPM-Solver++(2M), uniform λ": (dpmpp_2m, lambda_grid),
    "DPM-Solver++(2M), ρ = 7": (dpmpp_2m, edm_grid),
    "Heun (EDM), ρ = 7 from σ̄ = 80": (edm_heun, sigma_max_grid),
}


def steps_for(sampler, nfe: int) -> int:
    """The most steps that spend at most `nfe` calls, at least one: c calls a step but one on the last (to t = 0),
    so n steps cost c·n − c + 1 (Heun: 2n − 1)."""
    c = CALLS_PER_STEP.get(sampler, 1)
    return max(1, (nfe + c - 1) // c)
