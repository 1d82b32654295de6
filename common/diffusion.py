"""Discrete-time Gaussian diffusion: schedules, q(x_t | x_0), the posterior, parameterisations, DDPM.

References
    Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM), arXiv:2006.11239.
    Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672.
    Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models" (v), arXiv:2202.00512.
    Xu et al. 2022, "GeoDiff" (arXiv:2203.02923): the sigmoid ramp of β used here.

Vocabulary. A schedule has `n_steps` (Ho's T) noise levels β_1..β_T. Time is t = i / n_steps in [0, 1]:
t=0 is data, t=1 is (almost) pure noise. With ᾱ_t = Π_{j≤i} (1 − β_j) we write
    alpha_t = sqrt(ᾱ_t),  sigma_t = sqrt(1 − ᾱ_t),  x_t = alpha_t x_0 + sigma_t eps      (Eq. 4 of Ho et al.)
Every function here works between any two levels s < t, so respaced sampling (fewer steps) is the
same code as the full chain.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

from common.config import UserError

Tensor = torch.Tensor
SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")
PREDICTIONS = ("eps", "x0", "v")


# --- schedules --------------------------------------------------------------------------------------

def make_betas(kind: str, n_steps: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """β_1..β_T in float64 for the named schedule."""
    if kind == "linear":  # Ho et al. §4
        return torch.linspace(beta_1, beta_T, n_steps, dtype=torch.float64)
    if kind == "quadratic":  # linear in sqrt(β)
        return torch.linspace(beta_1 ** 0.5, beta_T ** 0.5, n_steps, dtype=torch.float64) ** 2
    if kind == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, n_steps, dtype=torch.float64)) * (beta_T - beta_1) + beta_1
    if kind == "cosine":  # Eq. 17 of Nichol & Dhariwal: ᾱ(t) = cos²((t + s)/(1 + s) · π/2), β ≤ 0.999
        s = 0.008
        t = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise UserError(f"unknown schedule '{kind}'; choose one of: {', '.join(SCHEDULES)}")


class Schedule:
    """Noise levels of a discrete diffusion, indexed by t in {0, 1/T, ..., 1}."""

    def __init__(self, betas: Tensor):
        self.betas = betas.double()                                    # (T,)  β_1..β_T
        self.alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64),
                                    torch.cumprod(1 - self.betas, 0)])  # (T+1,) ᾱ_0 = 1 .. ᾱ_T

    @classmethod
    def named(cls, kind: str, n_steps: int = 1000) -> "Schedule":
        return cls(make_betas(kind, n_steps))

    @property
    def n_steps(self) -> int:
        return len(self.betas)

    def index(self, t: Tensor | float) -> Tensor:
        """The integer step i = round(t · T) of a time t."""
        return torch.round(torch.as_tensor(t).cpu().double() * self.n_steps).long()  # the table lives on the CPU

    def alpha_bar_at(self, t: Tensor | float) -> Tensor:
        return self.alpha_bar[self.index(t)]

    def alpha_sigma(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) shaped to broadcast against `like` (B, ...), in its dtype."""
        ab = self.alpha_bar_at(t).reshape(-1, *[1] * (like.dim() - 1))
        return ab.sqrt().to(like), (1 - ab).sqrt().to(like)

    def snr_db(self) -> Tensor:
        """SNR(t) = ᾱ_t / (1 − ᾱ_t) in decibels for t = 1/T .. 1."""
        ab = self.alpha_bar[1:]
        return 10 * torch.log10(ab / (1 - ab))

    def timesteps(self, n: int) -> Tensor:
        """A grid of n + 1 times from 1 down to 0 (n sampling steps), on the schedule's lattice."""
        if not 1 <= n <= self.n_steps:
            raise UserError(f"steps={n}: choose between 1 and {self.n_steps}")
        i = torch.linspace(self.n_steps, 0, n + 1, dtype=torch.float64).round()
        return i / self.n_steps

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training times t uniform on {1/T, ..., 1} (Alg. 1 of Ho et al.)."""
        return torch.randint(1, self.n_steps + 1, (n,), generator=generator).double() / self.n_steps


# --- forward process and posterior --------------------------------------------------------------------

def q_sample(schedule: Schedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) eps, a draw from q(x_t | x_0) (Eq. 4 of Ho et al.)."""
    alpha, sigma = schedule.alpha_sigma(t, x0)
    return alpha * x0 + sigma * eps


def posterior(x0: Tensor, xt: Tensor, ab_t: Tensor, ab_s: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_s | x_t, x_0) for s < t (Eqs. 6–7 of Ho et al., between any two levels).

    With β_{t|s} = 1 − ᾱ_t / ᾱ_s:
        mean = sqrt(ᾱ_s) β_{t|s} / (1 − ᾱ_t) · x_0 + sqrt(ᾱ_t / ᾱ_s) (1 − ᾱ_s) / (1 − ᾱ_t) · x_t
        var  = (1 − ᾱ_s) / (1 − ᾱ_t) · β_{t|s}                                      (β̃ in the paper)
    """
    beta_ts = 1 - ab_t / ab_s
    mean = (ab_s.sqrt() * beta_ts * x0 + (ab_t / ab_s).sqrt() * (1 - ab_s) * xt) / (1 - ab_t)
    return mean, (1 - ab_s) / (1 - ab_t) * beta_ts


def gaussian_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) ‖ N(mean2, var2)) elementwise, in nats."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


def kl_prior(schedule: Schedule, x0: Tensor) -> Tensor:
    """KL(q(x_1 | x_0) ‖ N(0, I)) per sample in nats: the L_T term of the ELBO (Eq. 5 of Ho et al.)."""
    ab = schedule.alpha_bar[-1].to(x0)
    kl = gaussian_kl(ab.sqrt() * x0, 1 - ab, torch.zeros_like(x0), torch.ones_like(x0))
    return kl.flatten(1).sum(1)


# --- parameterisations: what the network predicts -----------------------------------------------------
# Each adapter is f(x_t, prediction, alpha_t, sigma_t) -> one canonical quantity; alpha² + sigma² = 1.

def x0_from_eps(xt, eps, alpha, sigma):
    return (xt - sigma * eps) / alpha


def eps_from_x0(xt, x0, alpha, sigma):
    return (xt - alpha * x0) / sigma


def v_from(x0, eps, alpha, sigma):
    """v = alpha_t eps − sigma_t x_0 (§4 of Salimans & Ho)."""
    return alpha * eps - sigma * x0


def x0_from_v(xt, v, alpha, sigma):
    return alpha * xt - sigma * v


def eps_from_v(xt, v, alpha, sigma):
    return sigma * xt + alpha * v


EPS_FROM = {"eps": lambda xt, out, a, s: out, "x0": eps_from_x0, "v": eps_from_v}
TARGET = {"eps": lambda x0, eps, a, s: eps, "x0": lambda x0, eps, a, s: x0, "v": v_from}


def eps_model(model: Callable, prediction: str, schedule: Schedule) -> Callable:
    """Wrap a network predicting `prediction` as a function (x_t, t, **cond) -> eps."""
    if prediction not in PREDICTIONS:
        raise UserError(f"unknown prediction '{prediction}'; choose one of: {', '.join(PREDICTIONS)}")

    def predict_eps(xt: Tensor, t: Tensor, **cond) -> Tensor:
        alpha, sigma = schedule.alpha_sigma(t, xt)
        return EPS_FROM[prediction](xt, model(xt, t.to(xt), **cond), alpha, sigma)
    return predict_eps


def min_snr_weight(prediction: str, gamma: float = 5.0) -> Callable[[Tensor], Tensor]:
    """Min-SNR-γ loss weights (Hang et al. 2023, arXiv:2303.09556, Eq. 7): SNR -> weight of the target's MSE.

    Written as an x0 error every target's MSE is a weighted ‖x̂0 − x0‖²: the eps MSE is SNR times it and the
    v MSE (1 + SNR) times it (x̂0 − x0 = −(sigma/alpha)(ε̂ − ε) = −sigma (v̂ − v)). Min-SNR weights the x0
    error by min(SNR, γ), so easy low-noise levels stop dominating the gradient.
    """
    if prediction not in PREDICTIONS:
        raise UserError(f"unknown prediction '{prediction}'; choose one of: {', '.join(PREDICTIONS)}")
    per_x0_error = {"eps": lambda snr: snr, "x0": lambda snr: torch.ones_like(snr), "v": lambda snr: snr + 1}
    return lambda snr: snr.clamp(max=gamma) / per_x0_error[prediction](snr)


def diffusion_loss(model: Callable, x0: Tensor, schedule: Schedule, prediction: str,
                   generator: torch.Generator | None = None, weight: Callable[[Tensor], Tensor] | None = None,
                   **cond) -> tuple[Tensor, Tensor]:
    """Per-sample MSE between the network and its target at random t (Alg. 1 of Ho et al.).

    `weight` maps SNR(t) to a per-sample loss weight (e.g. `min_snr_weight`); None is Ho's plain MSE.
    Returns (loss (B,), t (B,)) so callers can average or bin the loss by t.
    """
    t = schedule.sample_t(len(x0), generator)
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    alpha, sigma = schedule.alpha_sigma(t, x0)
    xt = alpha * x0 + sigma * eps
    target = TARGET[prediction](x0, eps, alpha, sigma)
    out = model(xt, t.to(x0), **cond)
    loss = (out.float() - target).pow(2).flatten(1).mean(1)
    if weight is not None:
        ab = schedule.alpha_bar_at(t)
        loss = loss * weight(ab / (1 - ab)).to(loss)
    return loss, t


# --- sampling -------------------------------------------------------------------------------------------

@torch.no_grad()
def ddpm(eps_fn: Callable, x: Tensor, ts: Tensor, schedule: Schedule, variance: str = "posterior",
         clip_x0: bool = True, generator: torch.Generator | None = None, **cond) -> Iterator[Tensor]:
    """Ancestral sampling (Alg. 2 of Ho et al.) along the grid `ts` (1 -> 0); yields each x_s.

    variance: "posterior" uses σ² = β̃ (Ho's lower bound), "beta" uses σ² = β_{t|s} (the upper one).
    With a respaced grid this is the sampler of §4 of Nichol & Dhariwal.
    """
    if variance not in ("posterior", "beta"):
        raise UserError(f"unknown variance '{variance}'; choose posterior or beta")
    for t, s in zip(ts[:-1], ts[1:]):
        ab_t, ab_s = schedule.alpha_bar_at(t).to(x), schedule.alpha_bar_at(s).to(x)
        eps = eps_fn(x, t.expand(len(x)), **cond)
        x0 = x0_from_eps(x, eps, ab_t.sqrt(), (1 - ab_t).sqrt())
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        mean, var = posterior(x0, x, ab_t, ab_s)
        if variance == "beta":
            var = 1 - ab_t / ab_s
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = mean + (var.sqrt() * noise if s > 0 else 0)
        yield x
