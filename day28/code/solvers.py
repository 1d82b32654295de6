"""The sampler settings day 28 compares at equal network calls, and EDM's grid from σ_max.

DDIM (Song et al. 2021) on a uniform grid is the baseline; DPM-Solver++(2M) (Lu et al. 2022, Alg. 2:
common.samplers.dpmpp_2m) and UniPC (Zhao et al. 2023: common.samplers.unipc, DPM-Solver++(2M) plus a corrector
at no extra call) on the same uniform grid; EDM's Heun (Alg. 1, in x / alpha against sigma / alpha:
common.samplers.edm_heun) on EDM's ρ = 7 grid (Karras et al. 2022, Eq. 5) from EDM's σ_max = 80. Heun makes two
calls a step but one on its last, so its NFE is odd: 2n − 1 for n steps.

References: Lu et al. 2022 (DPM-Solver++, arXiv:2211.01095); Zhao et al. 2023 (UniPC, arXiv:2302.04867); Karras
et al. 2022 (arXiv:2206.00364); Song, Meng & Ermon 2021 (arXiv:2010.02502).
"""
from __future__ import annotations

import math

import torch

from common.paths import AffinePath, edm_grid, uniform_grid
from common.samplers import CALLS_PER_STEP, ddim, dpmpp_2m, edm_heun, unipc

F64 = torch.float64


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
    "UniPC, uniform t": (unipc, uniform_grid),
    "Heun (EDM), ρ = 7 from σ̄ = 80": (edm_heun, sigma_max_grid),
}


def steps_for(sampler, nfe: int) -> int:
    """The most steps that spend at most `nfe` calls, at least one: c calls a step but one on the last (to t = 0),
    so n steps cost c·n − c + 1 (Heun: 2n − 1)."""
    c = CALLS_PER_STEP.get(sampler, 1)
    return max(1, (nfe + c - 1) // c)
