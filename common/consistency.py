"""Consistency models: a network that maps any point of a probability-flow ODE trajectory to the trajectory's end.

Here t = 0 is data and t = 1 noise, on the linear path x_t = (1 − t) x0 + t ε (day 16's flow). Song et al. write the
variance-exploding form x = x0 + σ z; ours maps onto it exactly: x_t / (1 − t) = x0 + σ ε with σ = t / (1 − t).

Consistency function (Song et al. 2023, Def. 1): f(x_t, t) = x0 of the ODE trajectory through x_t, the same for every
t on it (self-consistency), and f(x, 0) = x (the boundary condition). It is parameterised as

    f_θ(x_t, t) = c_skip(t) x_t + c_out(t) F_θ(x_t, t),      c_skip(0) = 1, c_out(0) = 0       (their Eq. 5)

so the boundary condition holds for any weights. With F_θ a velocity network the pair is (c_skip, c_out) = (1, −t):
f_θ is the x̂0 = x_t − t u of common.predictions' velocity adapter, and a student copied from a flow teacher starts
as the teacher's one-step denoiser E[x0 | x_t]. (Song et al.'s EDM pair, c_skip = σ_d² / (σ² + σ_d²), tends to the
same (1, 0) as σ → 0.)

Training compares f at two adjacent levels t_n < t_{n+1} of a grid 0 = t_0 < ... < t_N = 1 (EDM's ρ-spacing):

    x_hi = x_{t_{n+1}} = (1 − t_{n+1}) x0 + t_{n+1} ε
    CD (distillation, their Alg. 2):  x_lo = one Euler step of the teacher's ODE from x_hi to t_n
    CT (training, their Alg. 3):      x_lo = (1 − t_n) x0 + t_n ε, the same ε: the one-sample estimate of that step
    loss = λ_n d(f_θ(x_hi, t_{n+1}), stopgrad f_θ(x_lo, t_n))

The target network is the network itself without gradient (μ = 0, no EMA target: Song & Dhariwal 2024, §3.2). CD
uses λ = 1, d = the squared ℓ2 distance and uniform n (Song et al. 2023). CT uses the improved recipe of Song &
Dhariwal 2024: d is the pseudo-Huber distance √(‖a − b‖² + c²) − c with c = 0.00054 √dim (§3.3), λ_n =
1 / (σ_{n+1} − σ_n) in σ = t / (1 − t) (§3.1), n is drawn from a lognormal over σ (§3.5), and N doubles on a
schedule from s0 to s1 (§3.4, Eq. 7).

Sampling (their Alg. 1): x0 = f(x_1, 1) is one network call; more steps re-noise it to a lower t and apply f again.

References
    Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", ICML, arXiv:2303.01469.
    Song & Dhariwal 2024, "Improved Techniques for Training Consistency Models", ICLR, arXiv:2310.14189.
    Karras, Aittala, Aila & Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"
        (Eq. 5: the ρ-spaced levels), arXiv:2206.00364.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from common.paths import Linear, edm_grid
from common.predictions import denoiser
from common.samplers import euler_step, noise_like

Tensor = torch.Tensor
PATH = Linear()
F64 = torch.float64
S_MAX = 80.0  # EDM's σ_max


def consistency_fn(net: Callable) -> Callable[[Tensor, Tensor], Tensor]:
    """f_θ(x_t, t) = x_t − t F_θ(x_t, t): c_skip = 1, c_out = −t, so f_θ(x, 0) = x for any network."""
    denoise = denoiser(net, "velocity", PATH)
    return lambda xt, t: denoise(xt, t).x0


def levels(n: int) -> Tensor:
    """0 = t_0 < t_1 < ... < t_n = 1, ρ-spaced in σ = t / (1 − t) (Karras et al. Eq. 5; common.paths.edm_grid)."""
    return edm_grid(PATH, n).flip(0)


def edm_sigma(t: Tensor) -> Tensor:
    """σ = t / (1 − t), EDM's noise level of x_t / (1 − t); t = 1 (σ = ∞) stands for EDM's σ_max = S_MAX, as in
    common.paths.edm_grid, which puts the grid's first level there."""
    return torch.where(t < 1, t / (1 - t).clamp(min=1e-12), torch.full_like(t, S_MAX))


def lognormal_weights(ts: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """P(n) for the pair (t_n, t_{n+1}): the mass of log σ ~ N(p_mean, p_std²) between the pair's σs (Song &
    Dhariwal 2024, §3.5)."""
    sigma = edm_sigma(ts.to(F64))
    cdf = torch.erf((sigma.log() - p_mean) / (math.sqrt(2) * p_std))
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


def curriculum(step: int, total: int, s0: int, s1: int) -> int:
    """N(k) = min(s0 · 2^⌊k / K'⌋, s1), K' = ⌊K / (log2⌊s1 / s0⌋ + 1)⌋ (Song & Dhariwal 2024, Eq. 7)."""
    stage = max(total // (int(math.log2(s1 // s0)) + 1), 1)
    return min(s0 * 2 ** (step // stage), s1)


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """√(‖a − b‖² + c²) − c per sample: ~‖a − b‖² / 2c near 0, ~‖a − b‖ far from it (Song & Dhariwal 2024, §3.3)."""
    return ((a - b).float().pow(2).flatten(1).sum(1) + c ** 2).sqrt() - c


def huber_c(x: Tensor) -> float:
    """Song & Dhariwal's c = 0.00054 √dim (0.03 for a 32 × 32 × 3 image)."""
    return 0.00054 * math.sqrt(x[0].numel())


def consistency_pair(net, x0: Tensor, ts: Tensor, p: Tensor, generator: torch.Generator | None,
                     teacher: Callable | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(f_θ(x_{t_{n+1}}), stopgrad f_θ(x_{t_n}), t_n, t_{n+1}) for n ~ p on the grid ts: x_{t_n} from one Euler step
    of the `teacher` denoiser's ODE (CD), or from the same noise (CT) when there is no teacher."""
    n = torch.multinomial(p.float(), len(x0), replacement=True, generator=generator)
    t_lo, t_hi = ts[n], ts[n + 1]                                              # (B,) each, float64
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    x_hi = PATH.sample(x0, t_hi, eps)
    f = consistency_fn(net)
    with torch.no_grad():
        x_lo = PATH.sample(x0, t_lo, eps) if teacher is None else euler_step(teacher, x_hi, t_hi, t_lo, path=PATH)
        target = f(x_lo, t_lo).float()
    return f(x_hi, t_hi).float(), target, t_lo, t_hi


def cd_loss(teacher: Callable, n: int) -> Callable:
    """Consistency distillation on n fixed levels, n drawn uniformly, λ = 1 and the squared ℓ2 distance (Song et
    al. 2023, Alg. 2 with their ℓ2 metric; a mean over pixels)."""
    ts = levels(n)
    p = torch.full((n,), 1 / n, dtype=F64)

    def loss(net, x0, y, generator) -> Tensor:
        pred, target, _, _ = consistency_pair(net, x0, ts, p, generator, teacher)
        return (pred - target).pow(2).flatten(1).mean(1).mean()
    return loss


def ct_loss(total: int, s0: int, s1: int) -> Callable:
    """Improved consistency training (Song & Dhariwal 2024): N(step) levels by the curriculum, n by the lognormal,
    the pseudo-Huber distance weighted by λ_n = 1 / (σ_{n+1} − σ_n)."""
    def loss(net, x0, y, generator, step: int) -> Tensor:
        ts = levels(curriculum(step, total, s0, s1))
        pred, target, t_lo, t_hi = consistency_pair(net, x0, ts, lognormal_weights(ts), generator)
        weight = 1 / (edm_sigma(t_hi) - edm_sigma(t_lo))
        return (weight.to(pred) * pseudo_huber(pred, target, huber_c(x0))).mean()
    return loss


def consistency_step(denoise, x: Tensor, t: Tensor, s: Tensor, *, path=PATH,
                     generator: torch.Generator | None = None, **cond) -> Tensor:
    """x̂0 = f(x_t, t), then fresh noise back to level s: x_s = alpha_s x̂0 + sigma_s z (Song et al. 2023, Alg. 1)."""
    x0 = denoise(x, torch.as_tensor(t, dtype=F64).expand(len(x)), **cond).x0
    alpha, sigma = path.alpha_sigma(s, x)
    return alpha * x0 + sigma * noise_like(x, generator) if float(s) > 0 else x0


@torch.no_grad()
def consistency(denoise, x: Tensor, ts: Tensor, *, path=PATH, generator=None, **cond) -> Iterator[Tensor]:
    """Multistep consistency sampling on the grid ts (1 = ts[0] > ... > ts[-1] = 0): one network call a step."""
    for t, s in zip(ts[:-1], ts[1:]):
        x = consistency_step(denoise, x, t, s, path=path, generator=generator, **cond)
        yield x
