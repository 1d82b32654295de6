"""Forward processes as affine paths: one noising rule for every day, diffusion and flow alike.

    x_t = alpha(t) x0 + sigma(t) eps,   eps ~ N(0, I),   t in [0, 1],   t = 0 data, t = 1 noise

A path is four functions of t: alpha, sigma and their time derivatives d_alpha, d_sigma (the velocity of
x_t along the path is d_alpha x0 + d_sigma eps). From them come the log signal-to-noise ratio
log_snr(t) = log(alpha² / sigma²) and, where it exists, its inverse. Everything is computed in float64 on
the CPU (a handful of numbers per batch) and cast to the batch's dtype at the end, as `coefficients` does.

    DiscreteVP   the DDPM schedules (linear, cosine, quadratic, sigmoid) of T levels: exact at t = i/T,
                 log ᾱ linear in between (a constant β-rate inside each step)
    VPCosine     the continuous VP path alpha = cos(πt/2), sigma = sin(πt/2)
    Linear       flow matching / rectified flow: alpha = 1 − t, sigma = t
    VE           variance exploding (Song et al. 2021; EDM's noise levels): alpha = 1,
                 sigma = σ_min (σ_max / σ_min)^t

Papers that write time the other way: Lipman et al. 2023 (flow matching) and Liu et al. 2023 (rectified
flow) put data at t = 1 and noise at t = 0. Here t = 1 is noise on every path; their x_1 is our x0.

References
    Ho, Jain & Abbeel 2020 (DDPM), arXiv:2006.11239; Nichol & Dhariwal 2021 (cosine), arXiv:2102.09672.
    Kingma, Salimans, Poole & Ho 2021, "Variational Diffusion Models" (log-SNR), arXiv:2107.00630.
    Song et al. 2021, "Score-Based Generative Modeling through SDEs" (VE, VP), arXiv:2011.13456.
    Karras, Aittala, Aila & Laine 2022, "Elucidating the Design Space..." (EDM), arXiv:2206.00364.
    Lipman et al. 2023, "Flow Matching for Generative Modeling", arXiv:2210.02747.
"""
from __future__ import annotations

import math

import torch

from common.config import UserError

Tensor = torch.Tensor
F64 = torch.float64
SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")


def make_betas(kind: str, n_steps: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """β_1..β_T in float64 for the named DDPM schedule."""
    if kind == "linear":  # Ho et al. §4
        return torch.linspace(beta_1, beta_T, n_steps, dtype=F64)
    if kind == "quadratic":  # linear in sqrt(β)
        return torch.linspace(beta_1 ** 0.5, beta_T ** 0.5, n_steps, dtype=F64) ** 2
    if kind == "sigmoid":  # the sigmoid ramp of GeoDiff (Xu et al. 2022, arXiv:2203.02923)
        return torch.sigmoid(torch.linspace(-6, 6, n_steps, dtype=F64)) * (beta_T - beta_1) + beta_1
    if kind == "cosine":  # Eq. 17 of Nichol & Dhariwal: ᾱ(t) = cos²((t + s)/(1 + s) · π/2), β ≤ 0.999
        s = 0.008
        t = torch.linspace(0, 1, n_steps + 1, dtype=F64)
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise UserError(f"unknown schedule '{kind}'; choose one of: {', '.join(SCHEDULES)}")


def as_t(t: Tensor | float) -> Tensor:
    """Times as a float64 CPU tensor (the coefficients are a few numbers per batch)."""
    return torch.as_tensor(t, dtype=F64).detach().cpu() if not torch.is_tensor(t) else t.detach().cpu().to(F64)


def broadcast(c: Tensor, like: Tensor) -> Tensor:
    """(B,) or () coefficients -> shaped to broadcast against `like` (B, ...), in its dtype and device."""
    return c.reshape(-1, *[1] * (like.dim() - 1)).to(like)


class AffinePath:
    """x_t = alpha(t) x0 + sigma(t) eps. Subclasses define alpha, sigma, d_alpha, d_sigma on float64 t."""
    name = "affine"
    variance_preserving = False  # alpha² + sigma² = 1 for every t

    def alpha(self, t: Tensor) -> Tensor: raise NotImplementedError
    def sigma(self, t: Tensor) -> Tensor: raise NotImplementedError
    def d_alpha(self, t: Tensor) -> Tensor: raise NotImplementedError
    def d_sigma(self, t: Tensor) -> Tensor: raise NotImplementedError

    def log_snr(self, t: Tensor | float) -> Tensor:
        """λ(t) = log(alpha² / sigma²), decreasing from +inf-ish (data) to −inf-ish (noise)."""
        t = as_t(t)
        return 2 * (self.alpha(t).log() - self.sigma(t).log())

    def t_from_log_snr(self, lam: Tensor | float) -> Tensor:
        raise UserError(f"the {self.name} path has no closed-form inverse of its log-SNR")

    def norm2(self, t: Tensor) -> Tensor:
        """alpha² + sigma²: exactly 1 on variance-preserving paths (the v adapter divides by it)."""
        if self.variance_preserving:
            return torch.ones_like(t)
        return self.alpha(t) ** 2 + self.sigma(t) ** 2

    def alpha_sigma(self, t: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) shaped to broadcast against `like` (B, ...), in its dtype."""
        t = as_t(t)
        return broadcast(self.alpha(t), like), broadcast(self.sigma(t), like)

    def sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = alpha_t x0 + sigma_t eps: a draw from q(x_t | x0)."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * eps

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training times, uniform on (0, 1] (float64)."""
        return 1 - torch.rand(n, generator=generator, dtype=F64)

    scale = 1          # grids are made in units of 1 / scale: 1 / T on a T-level schedule
    first_time = 0.0   # the smallest time a network sees in training: 1 / T on a T-level schedule

    def on_grid(self, u: Tensor) -> Tensor:
        """Times from grid units u = t · scale, moved onto the times the path has (all t, if continuous)."""
        return as_t(u) / self.scale


# --- the discrete DDPM schedules ------------------------------------------------------------------------

class DiscreteVP(AffinePath):
    """T noise levels β_1..β_T (Ho et al.); level i sits at t = i / T with ᾱ_i = Π_{j≤i} (1 − β_j).

    At the levels, alpha = sqrt(ᾱ_i) and sigma = sqrt(1 − ᾱ_i) are read from the table. In between, log ᾱ is
    interpolated linearly: a constant β-rate inside each step, i.e. the continuous VP-SDE (Song et al. 2021,
    Eq. 11) with a piecewise-constant β(t) = −T log(1 − β_i) on ((i−1)/T, i/T]. So
        d log ᾱ / dt = T log(1 − β_i),   d_alpha = ½ alpha · d log ᾱ/dt,   d_sigma = −½ (ᾱ / sigma) · d log ᾱ/dt.
    """
    variance_preserving = True
    LATTICE_TOL = 1e-4  # |t·T − i| below this is the level i itself (a float32 time i/T is off by up to ~3e-5)

    def __init__(self, betas: Tensor, name: str = "discrete"):
        self.name = name
        self.betas = betas.double()                                      # (T,)  β_1..β_T
        self.alpha_bar = torch.cat([torch.ones(1, dtype=F64), torch.cumprod(1 - self.betas, 0)])  # (T+1,)
        self.log_alpha_bar = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(torch.log1p(-self.betas), 0)])

    @classmethod
    def named(cls, kind: str, n_steps: int = 1000) -> DiscreteVP:
        return cls(make_betas(kind, n_steps), kind)

    @property
    def n_steps(self) -> int:
        return len(self.betas)

    def index(self, t: Tensor | float) -> Tensor:
        """The nearest level i = round(t · T) of a time t."""
        return torch.round(as_t(t) * self.n_steps).long()

    def _cell(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(i, u): t·T = i + u with the level i in 0..T−1 below t and u in [0, 1]."""
        tt = t * self.n_steps
        i = tt.floor().clamp(0, self.n_steps - 1)
        return i.long(), tt - i

    def alpha_bar_at(self, t: Tensor | float) -> Tensor:
        """ᾱ(t): the table at the levels, exp of the interpolated log ᾱ in between."""
        t = as_t(t)
        on_level = (t * self.n_steps - self.index(t)).abs() < self.LATTICE_TOL
        i, u = self._cell(t)
        between = torch.exp(self.log_alpha_bar[i] + u * (self.log_alpha_bar[i + 1] - self.log_alpha_bar[i]))
        return torch.where(on_level, self.alpha_bar[self.index(t).clamp(0, self.n_steps)], between)

    def _dlog_ab(self, t: Tensor) -> Tensor:
        """d log ᾱ / dt: T log(1 − β_i) inside step i. At a level the rate jumps; there it is the mean of the two
        steps' rates, so that an ODE solver whose grid points are levels (every uniform_grid) errs by ±half a
        jump at both ends of a step, which cancels, instead of taking the rate of the step outside its own."""
        i, _ = self._cell(t)
        rate = self.n_steps * self.log_alpha_bar.diff()                          # (T,)  rate[i] on (i, i+1) / T
        k = self.index(t)
        on_level = (t * self.n_steps - k).abs() < self.LATTICE_TOL
        mean = (rate[(k - 1).clamp(0, self.n_steps - 1)] + rate[k.clamp(max=self.n_steps - 1)]) / 2
        return torch.where(on_level, mean, rate[i])

    def alpha(self, t): return self.alpha_bar_at(t).sqrt()
    def sigma(self, t): return (1 - self.alpha_bar_at(t)).sqrt()
    def d_alpha(self, t): return 0.5 * self.alpha(t) * self._dlog_ab(t)
    def d_sigma(self, t): return -0.5 * self.alpha_bar_at(t) * self._dlog_ab(t) / self.sigma(t)

    def log_snr(self, t: Tensor | float) -> Tensor:
        ab = self.alpha_bar_at(t)
        return ab.log() - (1 - ab).log()

    def t_from_log_snr(self, lam: Tensor | float) -> Tensor:
        """Invert λ(t): ᾱ = sigmoid(λ), then the piecewise-linear log ᾱ table backwards."""
        target = torch.nn.functional.logsigmoid(as_t(lam))                       # log ᾱ
        table = -self.log_alpha_bar                                              # increasing in i
        i = torch.searchsorted(table, -target).clamp(1, self.n_steps)            # table[i-1] < -target <= table[i]
        u = (-target - table[i - 1]) / (table[i] - table[i - 1])
        return ((i - 1) + u.clamp(0, 1)) / self.n_steps

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training times uniform on the levels {1/T, ..., 1} (Alg. 1 of Ho et al.)."""
        return torch.randint(1, self.n_steps + 1, (n,), generator=generator).double() / self.n_steps

    @property
    def scale(self) -> int:
        return self.n_steps

    @property
    def first_time(self) -> float:
        return 1 / self.n_steps

    def on_grid(self, u: Tensor) -> Tensor:
        """Levels u = t · T rounded to whole levels (how Nichol & Dhariwal respace), as times i / T."""
        return torch.round(as_t(u)) / self.n_steps

    def snr_db(self) -> Tensor:
        """SNR = ᾱ / (1 − ᾱ) in decibels at the levels t = 1/T .. 1."""
        ab = self.alpha_bar[1:]
        return 10 * torch.log10(ab / (1 - ab))


# --- continuous paths ----------------------------------------------------------------------------------

class VPCosine(AffinePath):
    """alpha = cos(πt/2), sigma = sin(πt/2): variance preserving, λ(t) = −2 log tan(πt/2)."""
    name = "vp-cosine"
    variance_preserving = True

    def alpha(self, t): return torch.cos(math.pi / 2 * t)
    def sigma(self, t): return torch.sin(math.pi / 2 * t)
    def d_alpha(self, t): return -math.pi / 2 * torch.sin(math.pi / 2 * t)
    def d_sigma(self, t): return math.pi / 2 * torch.cos(math.pi / 2 * t)

    def t_from_log_snr(self, lam):
        return 2 / math.pi * torch.atan(torch.exp(-as_t(lam) / 2))


class Linear(AffinePath):
    """alpha = 1 − t, sigma = t: the straight line from data to noise of flow matching and rectified flow.

    Its velocity d_alpha x0 + d_sigma eps = eps − x0 does not depend on t. λ(t) = 2 log((1 − t) / t).
    """
    name = "linear"

    def alpha(self, t): return 1 - t
    def sigma(self, t): return t.clone()
    def d_alpha(self, t): return -torch.ones_like(t)
    def d_sigma(self, t): return torch.ones_like(t)

    def t_from_log_snr(self, lam):
        return torch.sigmoid(-as_t(lam) / 2)


class VE(AffinePath):
    """alpha = 1, sigma = σ_min (σ_max / σ_min)^t (geometric, Song et al. 2021 Eq. 31); λ = −2 log sigma.

    Data is only reached up to σ_min at t = 0, and t = 1 is N(x0, σ_max² I): with σ_max far above the data's
    scale (EDM: 80 for images in [-1, 1]) a sampler starts from sigma_max · eps.
    """
    name = "ve"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not 0 < sigma_min < sigma_max:
            raise UserError(f"VE path: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def alpha(self, t): return torch.ones_like(t)
    def sigma(self, t): return self.sigma_min * torch.exp(self.log_ratio * t)
    def d_alpha(self, t): return torch.zeros_like(t)
    def d_sigma(self, t): return self.log_ratio * self.sigma(t)

    def t_from_log_snr(self, lam):
        return (-as_t(lam) / 2 - math.log(self.sigma_min)) / self.log_ratio



def band_times(path: AffinePath, band: int, bins: int, n: int, generator: torch.Generator) -> Tensor:
    """n training times uniform in the band (band / bins, (band + 1) / bins], on the path's levels."""
    t = (band + torch.rand(n, generator=generator, dtype=F64)) / bins
    return path.on_grid(t * path.scale).clamp(min=path.first_time)


# --- time grids for samplers: explicit tensors from t0 (1: pure noise) down to 0 -------------------------

def _steps(n: int) -> int:
    if n < 1:
        raise UserError(f"steps={n}: choose at least 1 sampling step")
    return n


def _checked(path: AffinePath, u: Tensor, n: int) -> Tensor:
    """Grid units -> times, refusing grids whose rounding to the schedule's levels repeats a time."""
    ts = path.on_grid(u)
    if bool((ts[1:] >= ts[:-1]).any()):
        raise UserError(f"steps={n}: rounded to this {path.scale}-level schedule the grid repeats a level; choose "
                        f"fewer steps (at most {path.scale} on a uniform grid)")
    return ts


def uniform_grid(path: AffinePath, n: int, t0: float = 1.0) -> Tensor:
    """n steps evenly spaced in t from t0 down to 0 (t0 < 1: start part-way, as SDEdit does)."""
    return _checked(path, torch.linspace(t0 * path.scale, 0, _steps(n) + 1, dtype=F64), n)


def quadratic_grid(path: AffinePath, n: int, t0: float = 1.0) -> Tensor:
    """n steps with t ∝ (i / n)²: dense near the data (the 'quadratic' grid of Song et al. 2021a, DDIM §D.2)."""
    return _checked(path, path.scale * t0 * torch.linspace(1, 0, _steps(n) + 1, dtype=F64) ** 2, n)


def edm_grid(path: AffinePath, n: int, t0: float = 1.0, t_min: float = 1e-3, rho: float = 7.0,
             s_cap: float = 80.0) -> Tensor:
    """n steps ρ-spaced in s = sigma / alpha from s(t0) to s(t_min), then 0 (Eq. 5 of Karras et al. 2022).

    s = exp(−λ/2) is EDM's noise level for any affine path; the grid is made in s and mapped back to t
    through the inverse log-SNR, so the same spacing serves VP, linear and VE paths. Paths whose s is
    infinite at t0 (alpha = 0: linear, VP-cosine at t = 1) start the spacing at EDM's σ_max = s_cap; the
    grid's first time is t0 itself.
    """
    s_max, s_min = (torch.exp(-path.log_snr(torch.tensor([t], dtype=F64)) / 2).clamp(max=s_cap)
                    for t in (t0, t_min))
    i = torch.arange(_steps(n), dtype=F64) / max(n - 1, 1)
    s = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho   # (n,) decreasing
    ts = torch.cat([path.t_from_log_snr(-2 * s.log()), torch.zeros(1, dtype=F64)])
    ts[0] = t0  # exact start, whatever the round trip through λ gave
    return _checked(path, path.scale * ts, n)
