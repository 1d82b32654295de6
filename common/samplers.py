"""Samplers: generators that walk a time grid from noise to data, one public step function each.

    *_, x = ddim(denoise, x1, uniform_grid(path, 20), path=path)     # the result
    states = list(ddpm(denoise, x1, ts, path=path, generator=g))     # the whole trajectory

Every sampler has the signature `sampler(denoise, x, ts, *, path, generator=None, **cond)` and yields the
state after each step; `denoise(x_t, t, **cond)` returns the pair (x̂0, ε̂) (common.predictions), whatever
the network predicts. Each sampler is a loop over its step `*_step(denoise, x, t, s, *, path, ...)`, which
moves x from time t to time s < t, so a day can compose steps (start at t0 < 1, paste known pixels between
steps, alternate with other updates).

Notation (Kingma et al. 2021, Appendix A): alpha_{t|s} = alpha_t / alpha_s and
sigma²_{t|s} = sigma_t² − alpha_{t|s}² sigma_s² describe q(x_t | x_s); on DDPM's schedule they are
sqrt(ᾱ_t / ᾱ_s) and β_{t|s} = 1 − ᾱ_t / ᾱ_s.

References
    Ho, Jain & Abbeel 2020 (DDPM, Alg. 2), arXiv:2006.11239; Nichol & Dhariwal 2021 (respacing), arXiv:2102.09672.
    Song, Meng & Ermon 2021 (DDIM, Eq. 12), arXiv:2010.02502.
    Song et al. 2021 (probability-flow ODE, Eq. 13), arXiv:2011.13456.
    Karras et al. 2022 (EDM, Alg. 1: Heun with an Euler last step), arXiv:2206.00364.
    Lu et al. 2022 (DPM-Solver++, Alg. 2: the multistep 2nd-order solver in x̂0), arXiv:2211.01095.
    Zhao et al. 2023 (UniPC: the corrector UniC after DPM-Solver++(2M)), arXiv:2302.04867.
    Kutta 1901, "Beitrag zur näherungsweisen Integration totaler Differentialgleichungen" (the classical RK4).
    Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae", J. Comput. Appl. Math. 6(1) (dopri5,
        through torchdiffeq: Chen et al. 2018, arXiv:1806.07366).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from tqdm import tqdm

from common.config import UserError
from common.paths import AffinePath, as_t, broadcast
from common.predictions import Coefficients, Pair, velocity

Tensor = torch.Tensor
Denoiser = Callable[..., Pair]
VARIANCES = ("posterior", "beta")


def _predict(denoise: Denoiser, x: Tensor, t: Tensor, cond: dict) -> Pair:
    return denoise(x, as_t(t).expand(len(x)).to(x.device), **cond)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise like x, drawn on the CPU (the same numbers on every device)."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def transition(path: AffinePath, t: Tensor, s: Tensor) -> tuple[float, float, float, float]:
    """(alpha_s, sigma_s, alpha_{t|s}, sigma²_{t|s}) in float64 for s < t."""
    t, s = as_t(t), as_t(s)
    a_t, s_t, a_s, s_s = path.alpha(t), path.sigma(t), path.alpha(s), path.sigma(s)
    a_ts = a_t / a_s
    return a_s, s_s, a_ts, s_t ** 2 - a_ts ** 2 * s_s ** 2


def posterior(path: AffinePath, x0: Tensor, xt: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_s | x_t, x0) for s < t (Eqs. 6–7 of Ho et al., on any affine path):

        mean = alpha_s sigma²_{t|s} / sigma_t² · x0 + alpha_{t|s} sigma_s² / sigma_t² · x_t
        var  = sigma²_{t|s} sigma_s² / sigma_t²                                       (Ho's β̃)
    """
    a_s, s_s, a_ts, var_ts = transition(path, t, s)
    s_t2 = path.sigma(as_t(t)) ** 2
    mean = (a_s * var_ts / s_t2).to(xt) * x0 + (a_ts * s_s ** 2 / s_t2).to(xt) * xt
    return mean, posterior_variance(path, t, s)


def posterior_variance(path: AffinePath, t: Tensor, s: Tensor) -> Tensor:
    """β̃ = sigma²_{t|s} sigma_s² / sigma_t², the variance of q(x_s | x_t, x0) (float64)."""
    _, s_s, _, var_ts = transition(path, t, s)
    return var_ts * s_s ** 2 / path.sigma(as_t(t)) ** 2


# --- steps ----------------------------------------------------------------------------------------------

def ddpm_step(denoise: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, path: AffinePath,
              variance: str = "posterior", generator: torch.Generator | None = None, **cond) -> Tensor:
    """One ancestral step (Alg. 2 of Ho et al.): x_s ~ N(posterior mean at x̂0, σ²), σ² = β̃ or β_{t|s}."""
    mean, var = posterior(path, _predict(denoise, x, t, cond).x0, x, t, s)
    if variance == "beta":  # the upper bound σ² = sigma²_{t|s} of §3.2
        var = transition(path, t, s)[3]
    noise = noise_like(x, generator)  # drawn at every step, also the last, so the stream does not depend on s
    return mean + (var.sqrt().to(x) * noise if as_t(s) > 0 else 0)


def ddim_step(denoise: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, path: AffinePath, eta: float = 0.0,
              generator: torch.Generator | None = None, **cond) -> Tensor:
    """x_s = alpha_s x̂0 + sqrt(sigma_s² − c²) ε̂ + c z with c² = η² β̃ (Eq. 12 of Song et al. 2021a).

    η = 0 is deterministic; η = 1 has the same law as the DDPM step with σ² = β̃.
    """
    pred = _predict(denoise, x, t, cond)
    a_s, s_s, _, _ = transition(path, t, s)
    c2 = eta ** 2 * posterior_variance(path, t, s)
    x_s = a_s.to(x) * pred.x0 + (s_s ** 2 - c2).clamp(min=0).sqrt().to(x) * pred.eps
    return x_s + c2.sqrt().to(x) * noise_like(x, generator) if eta > 0 else x_s  # η = 0 draws no noise


def euler_step(denoise: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, path: AffinePath,
               generator: torch.Generator | None = None, **cond) -> Tensor:
    """x_s = x_t + (s − t) u(x_t, t) on the probability-flow ODE dx/dt = d_alpha x̂0 + d_sigma ε̂. t and s may be
    (B,) tensors: each sample its own step (day 19's consistency distillation)."""
    u = velocity(_predict(denoise, x, t, cond), Coefficients.at(path, t, x))
    return x + broadcast(as_t(s) - as_t(t), x) * u


def heun_step(denoise: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, path: AffinePath,
              generator: torch.Generator | None = None, **cond) -> Tensor:
    """Heun's 2nd-order step (Alg. 1 of Karras et al.): Euler, then the average of the slopes at t and s.

    The last step (s = 0) stays an Euler step: the velocity at the data end is not defined for every
    prediction (ε̂ = (x − alpha x̂0) / sigma divides by sigma = 0).
    """
    h = (as_t(s) - as_t(t)).to(x)
    u_t = velocity(_predict(denoise, x, t, cond), Coefficients.at(path, t, x))
    x_euler = x + h * u_t
    if as_t(s) <= 0:
        return x_euler
    u_s = velocity(_predict(denoise, x_euler, s, cond), Coefficients.at(path, s, x))
    return x + h * (u_t + u_s) / 2


def edm_heun_step(denoise: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, path: AffinePath,
                  generator: torch.Generator | None = None, **cond) -> Tensor:
    """Heun's step where Karras et al. take it (Alg. 1 with their Eq. 4's s(t) = alpha): in x̃ = x / alpha against
    σ̄ = sigma / alpha, where every affine path's probability-flow ODE reads dx̃/dσ̄ = ε̂ (a straight line while ε̂
    stays put). Its Euler half is DDIM's step; Heun adds the trapezoid's correction:

        x_s = [alpha_s x̂0_t + sigma_s ε̂_t]  +  alpha_s (σ̄_s − σ̄_t) (ε̂_s − ε̂_t) / 2,   ε̂_s taken at the bracket

    The last step (sigma_s = 0) stays Euler, as in Alg. 1. EDM starts at a finite σ̄ (σ_max = 80): a step from
    σ̄_t = ∞ (alpha_t = 0 to float32 precision: the linear and VP-cosine paths at t = 1) is refused, as no
    trapezoid spans it.
    """
    t, s = as_t(t), as_t(s)
    a_s, s_s = path.alpha(s), path.sigma(s)
    if s_s > 0 and path.alpha(t) <= torch.finfo(torch.float32).eps:
        raise UserError(f"EDM's Heun needs a finite sigma/alpha where it starts, and t={float(t):g} has alpha = 0: "
                        f"start its grid below t = 1 (edm_grid(path, n, t0=...))")
    pred = _predict(denoise, x, t, cond)
    x_euler = a_s.to(x) * pred.x0 + s_s.to(x) * pred.eps
    if s_s <= 0:
        return x_euler
    d_sigma = s_s / a_s - path.sigma(t) / path.alpha(t)                   # σ̄_s − σ̄_t < 0
    eps_s = _predict(denoise, x_euler, s, cond).eps
    return x_euler + (a_s * d_sigma / 2).to(x) * (eps_s - pred.eps)


def rk4_step(denoise: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, path: AffinePath,
             generator: torch.Generator | None = None, **cond) -> Tensor:
    """The classical 4th-order Runge–Kutta step: slopes k1 at t, k2 and k3 at the midpoint, k4 at s, and
    x_s = x_t + h (k1 + 2 k2 + 2 k3 + k4) / 6 with h = s − t. The last step (s = 0) is an Euler step, as Heun's."""
    t, s = as_t(t), as_t(s)
    h = (s - t).to(x)

    def slope(y: Tensor, r: Tensor) -> Tensor:
        return velocity(_predict(denoise, y, r, cond), Coefficients.at(path, r, y))
    k1 = slope(x, t)
    if s <= 0:
        return x + h * k1
    mid = (t + s) / 2
    k2 = slope(x + h / 2 * k1, mid)
    k3 = slope(x + h / 2 * k2, mid)
    k4 = slope(x + h * k3, s)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def dpmpp_2m_step(denoise: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, path: AffinePath,
                  earlier: tuple[Tensor, Tensor] | None = None, generator: torch.Generator | None = None,
                  **cond) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One step of DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): one call, then `dpmpp_2m_update`.

    `earlier` = (x̂0, h) of the previous step, None on the first; returns x_s and this step's (x̂0, h) for the
    next."""
    return dpmpp_2m_update(x, t, s, _predict(denoise, x, t, cond).x0, path=path, earlier=earlier)


def dpmpp_2m_update(x: Tensor, t: Tensor, s: Tensor, x0: Tensor, *, path: AffinePath,
                    earlier: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """DPM-Solver++(2M)'s move from t to s given x̂0 at (x_t, t), exact in the linear part of the ODE in λ:

        x_s = (sigma_s / sigma_t) x_t − alpha_s (e^{−h} − 1) D,   h = λ_s − λ_t,  λ = log(alpha / sigma)
        D = (1 + 1/(2r)) x̂0_t − 1/(2r) x̂0_prev,  r = h_prev / h        (D = x̂0_t on the first step)

    With D = x̂0_t the step is DDIM's exactly. The last step (sigma_s = 0, h = ∞) is first order, as in Lu et
    al.'s code: x_0 = alpha_0 x̂0.
    """
    t, s = as_t(t), as_t(s)
    a_s, s_s = path.alpha(s), path.sigma(s)
    if s_s <= 0:
        return a_s.to(x) * x0, (x0, torch.tensor(float("inf"), dtype=torch.float64))
    h = (path.log_snr(s) - path.log_snr(t)) / 2                  # log_snr is 2λ
    d = x0
    if earlier is not None:
        x0_prev, h_prev = earlier
        half_over_r = (h / (2 * h_prev)).to(x)                   # 1 / (2r); 0 after an infinite first step
        d = (1 + half_over_r) * x0 - half_over_r * x0_prev
    x_s = (s_s / path.sigma(t)).to(x) * x + (-a_s * torch.expm1(-h)).to(x) * d
    return x_s, (x0, h)


class UniPCState(NamedTuple):
    """What UniPC keeps of its step from r to t: the state x_r it started from (corrected), the time r,
    DPM-Solver++(2M)'s memory after r, (x̂0_r, λ_t − λ_r), and the memory it had at r (the step q → r; None when
    r was the first time)."""
    x: Tensor
    r: Tensor
    memory: tuple[Tensor, Tensor]
    before: tuple[Tensor, Tensor] | None


def unipc_step(denoise: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, path: AffinePath,
               earlier: UniPCState | None = None, generator: torch.Generator | None = None,
               **cond) -> tuple[Tensor, UniPCState]:
    """One step of UniPC-2 with B(h) = e^h − 1 ('bh2'; Zhao et al. 2023), one call: the call at (x_t, t) first
    corrects x_t (UniC, `unipc_correct`), then DPM-Solver++(2M) predicts x_s from the corrected state (UniP-2 with
    this B(h) is DPM-Solver++(2M)'s update). The x̂0 of that call is kept, not taken again at the corrected x_t,
    so the corrector costs no call; the state after the last step is a prediction, as no call follows it.

    `earlier`: the previous step's UniPCState, None on the first; returns x_s and this step's state.
    """
    x0 = _predict(denoise, x, t, cond).x0
    memory = earlier.memory if earlier is not None else None
    if earlier is not None:
        x = unipc_correct(earlier, x0, t, path=path)
    x_s, new_memory = dpmpp_2m_update(x, t, s, x0, path=path, earlier=memory)
    return x_s, UniPCState(x, as_t(t), new_memory, memory)


def unipc_correct(earlier: UniPCState, x0_t: Tensor, t: Tensor, *, path: AffinePath) -> Tensor:
    """UniC (Zhao et al. 2023) in data prediction: redo the step from r to t with x̂0_t, the prediction at the
    state it reached, as one more point of the polynomial in λ that x̂0 is integrated along:

        x_t^c = (sigma_t / sigma_r) x_r − alpha_t B x̂0_r − alpha_t B [ρ_1 D_1 + ρ_2 (x̂0_t − x̂0_r)]

    with h = λ_t − λ_r and B = e^{−h} − 1 (their B(h) = e^h − 1, 'bh2', with h → −h for data prediction);
    D_1 = (x̂0_q − x̂0_r) / r_1 through the time q before r, r_1 = (λ_q − λ_r) / h < 0; and ρ solving
    [[1, 1], [r_1, 1]] ρ = (g_1, 2 g_2) / B, where g_1 = B / (−h) − 1 and g_2 = g_1 / (−h) − 1/2 (the φ-functions
    of the exponential integrator). After the first step (no q) ρ_2 = 1/2 and there is no D_1.
    """
    x_r, r, (x0_r, h), before = earlier
    t = as_t(t)
    a_t, b = path.alpha(t), torch.expm1(-h)
    x_t = (path.sigma(t) / path.sigma(r)).to(x_r) * x_r - (a_t * b).to(x_r) * x0_r
    if before is None:
        return x_t - (a_t * b / 2).to(x_r) * (x0_t - x0_r)
    x0_q, h_qr = before
    r_1 = -h_qr / h                                               # λ_q − λ_r = −(λ_r − λ_q)
    g_1 = b / -h - 1
    g_2 = g_1 / -h - 0.5
    rho_1 = (g_1 - 2 * g_2) / b / (1 - r_1)                       # the 2 × 2 system, solved by hand
    rho_2 = g_1 / b - rho_1
    return x_t - (a_t * b).to(x_r) * ((rho_1 / r_1).to(x_r) * (x0_q - x0_r) + rho_2.to(x_r) * (x0_t - x0_r))


# --- samplers: a loop over a step -----------------------------------------------------------------------

def _walk(step: Callable, denoise: Denoiser, x: Tensor, ts: Tensor, **kw) -> Iterator[Tensor]:
    for t, s in zip(ts[:-1], ts[1:]):
        x = step(denoise, x, t, s, **kw)
        yield x


@torch.no_grad()
def ddpm(denoise, x, ts, *, path, variance="posterior", generator=None, **cond) -> Iterator[Tensor]:
    """Ancestral sampling (Alg. 2 of Ho et al.; on a respaced grid, §4 of Nichol & Dhariwal)."""
    if variance not in VARIANCES:
        raise UserError(f"unknown variance '{variance}'; choose one of: {', '.join(VARIANCES)}")
    yield from _walk(ddpm_step, denoise, x, ts, path=path, variance=variance, generator=generator, **cond)


@torch.no_grad()
def ddim(denoise, x, ts, *, path, eta=0.0, generator=None, **cond) -> Iterator[Tensor]:
    """DDIM (Song, Meng & Ermon 2021, Eq. 12): η = 0 deterministic, η = 1 ancestral."""
    if not 0 <= eta <= 1:
        raise UserError(f"eta={eta}: choose a value in [0, 1]")
    yield from _walk(ddim_step, denoise, x, ts, path=path, eta=eta, generator=generator, **cond)


@torch.no_grad()
def euler(denoise, x, ts, *, path, generator=None, **cond) -> Iterator[Tensor]:
    """Euler's method on the probability-flow ODE (Song et al. 2021, Eq. 13), one network call a step."""
    yield from _walk(euler_step, denoise, x, ts, path=path, **cond)


@torch.no_grad()
def heun(denoise, x, ts, *, path, generator=None, **cond) -> Iterator[Tensor]:
    """Heun's method on the probability-flow ODE (Karras et al. 2022, Alg. 1), two calls a step."""
    yield from _walk(heun_step, denoise, x, ts, path=path, **cond)


@torch.no_grad()
def edm_heun(denoise, x, ts, *, path, generator=None, **cond) -> Iterator[Tensor]:
    """EDM's sampler (Karras et al. 2022, Alg. 1): Heun in (σ̄, x̃) = (sigma, x) / alpha, two calls a step."""
    yield from _walk(edm_heun_step, denoise, x, ts, path=path, **cond)


@torch.no_grad()
def rk4(denoise, x, ts, *, path, generator=None, **cond) -> Iterator[Tensor]:
    """The classical Runge–Kutta method (Kutta 1901) on the probability-flow ODE, four calls a step."""
    yield from _walk(rk4_step, denoise, x, ts, path=path, **cond)


@torch.no_grad()
def dopri5(denoise, x, ts, *, path, rtol=1e-3, atol=1e-3, generator=None, **cond) -> Iterator[Tensor]:
    """The probability-flow ODE solved by adaptive Dormand–Prince 5(4) steps (torchdiffeq); yields the states at
    ts[1:]. The solver picks its own steps to keep each step's error estimate below atol + rtol |x|, so the
    network calls depend on the field: count them by wrapping `denoise`. Its steps land on the times of ts
    (step_t), so it never evaluates the field beyond ts[-1] (where a DDPM schedule is not defined)."""
    from torchdiffeq import odeint  # here: only the adaptive solver needs it

    def drift(t: Tensor, x_t: Tensor) -> Tensor:
        return velocity(_predict(denoise, x_t, t, cond), Coefficients.at(path, t, x_t)).to(x_t.dtype)
    yield from odeint(drift, x, ts.to(x.device), rtol=rtol, atol=atol, method="dopri5",
                      options={"step_t": ts})[1:]


@torch.no_grad()
def dpmpp_2m(denoise, x, ts, *, path, generator=None, **cond) -> Iterator[Tensor]:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): one call a step, second order through the previous x̂0."""
    earlier = None
    for t, s in zip(ts[:-1], ts[1:]):
        x, earlier = dpmpp_2m_step(denoise, x, t, s, path=path, earlier=earlier, **cond)
        yield x


@torch.no_grad()
def unipc(denoise, x, ts, *, path, generator=None, **cond) -> Iterator[Tensor]:
    """UniPC-2, bh2 (Zhao et al. 2023): DPM-Solver++(2M) plus a corrector from the next step's call; one call a
    step."""
    earlier = None
    for t, s in zip(ts[:-1], ts[1:]):
        x, earlier = unipc_step(denoise, x, t, s, path=path, earlier=earlier, **cond)
        yield x


SAMPLERS = {"ddpm": ddpm, "ddim": ddim, "euler": euler, "heun": heun, "edm_heun": edm_heun, "rk4": rk4,
            "dpmpp_2m": dpmpp_2m, "unipc": unipc}
CALLS_PER_STEP = {heun: 2, edm_heun: 2, rk4: 4}  # the others: one


def nfe(sampler: Callable, ts: Tensor) -> int:
    """Network calls a sampler makes on the grid ts (Heun and RK4: one call on a last step to t = 0)."""
    calls, steps = CALLS_PER_STEP.get(sampler, 1), len(ts) - 1
    return calls * steps - (calls - 1) * int(as_t(ts[-1]) <= 0)


class Counted:
    """A denoiser that counts its network calls: an adaptive solver decides how many it makes."""

    def __init__(self, denoise: Denoiser):
        self.denoise, self.calls = denoise, 0

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Pair:
        self.calls += 1
        return self.denoise(x, t, **cond)


# --- many samples ---------------------------------------------------------------------------------------

def last(states: Iterator[Tensor]) -> Tensor:
    """The final state of a sampler, without holding the others (1000 states of a batch would be ~1 GB)."""
    (x,) = deque(states, maxlen=1)
    return x


@torch.no_grad()
def sample_batched(sampler: Callable, denoise: Denoiser, noise: Tensor, ts: Tensor, *, path: AffinePath,
                   device: torch.device | str = "cpu", batch: int = 250, bf16: bool = True,
                   generator: torch.Generator | None = None, desc: str = "sample",
                   cond: dict[str, Tensor] | None = None, **kw) -> Tensor:
    """Run `sampler` from each row of `noise` (N, ...) in chunks of `batch` under bf16 autocast; keep the
    last states, as float32 on the CPU. `cond` holds per-sample conditions (N, ...), e.g. {"y": labels},
    split into the same chunks; `kw` goes to the sampler whole. The same (noise, generator, batch) gives
    the same samples."""
    device = torch.device(device)
    cond = {key: value.split(batch) for key, value in (cond or {}).items()}
    out = []
    for i, chunk in enumerate(tqdm(noise.split(batch), desc=desc, leave=False)):
        rows = {key: parts[i].to(device) for key, parts in cond.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            x = last(sampler(denoise, chunk.to(device), ts, path=path, generator=generator, **rows, **kw))
        out.append(x.float().cpu())
    return torch.cat(out)
