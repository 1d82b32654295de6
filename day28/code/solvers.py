"""The sampler settings day 28 compares at equal network calls, and the λ-uniform time grid.

DDIM (Song et al. 2021) on a uniform grid is the baseline; DPM-Solver++(2M) (Lu et al. 2022, Alg. 2:
common.samplers.dpmpp_2m) runs on a uniform-in-t grid and on the grid uniform in λ = log(alpha / sigma) that its
analysis assumes; EDM's Heun (Karras et al. 2022, Alg. 1) on its ρ = 7 grid (Eq. 5). Heun makes two calls a
step but one on its last, so its NFE is odd: 2n − 1 for n steps.

References: Lu et al. 2022 (DPM-Solver, arXiv:2206.00927; DPM-Solver++, arXiv:2211.01095); Karras et al. 2022
(arXiv:2206.00364); Song, Meng & Ermon 2021 (arXiv:2010.02502).
"""
from __future__ import annotations

import torch

from common.config import UserError
from common.paths import AffinePath, edm_grid, uniform_grid
from common.samplers import ddim, dpmpp_2m, heun

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


# name -> (sampler, grid(path, n)); the first is the baseline the others are compared with
SETTINGS = {
    "DDIM, uniform t": (ddim, uniform_grid),
    "DPM-Solver++(2M), uniform t": (dpmpp_2m, uniform_grid),
    "DPM-Solver++(2M), uniform λ": (dpmpp_2m, lambda_grid),
    "Heun (EDM), ρ = 7": (heun, edm_grid),
}


def steps_for(sampler, nfe: int) -> int:
    """The steps that spend at most `nfe` calls (Heun: 2n − 1 ≤ nfe), at least one."""
    return max(1, (nfe + 1) // 2) if sampler is heun else nfe
