"""Progressive distillation: a student learns to take two of its teacher's DDIM steps in one, then teaches the next.

Here t = 0 is data and t = 1 noise, as in Salimans & Ho (their z_t = α_t x + σ_t ε is our x_t, their x our x0).

DDIM (η = 0) from t to s, given the pair (x̂0, ε̂) at x_t (Song et al. 2021, Eq. 12; common.samplers.ddim_step):

    x_s = α_s x̂0 + σ_s ε̂,      ε̂ = (x_t − α_t x̂0) / σ_t

Student target (Salimans & Ho 2022, Alg. 2). On the teacher's grid of 2N steps, take t = t_{2j}, t' = t_{2j+1},
t'' = t_{2j+2}. The teacher goes x_t → x_{t'} → x_{t''}; the student, on the grid of N steps, must land on x_{t''} in
one DDIM step, so its clean estimate x̃ solves x_{t''} = α_{t''} x̃ + (σ_{t''} / σ_t)(x_t − α_t x̃):

    x̃ = (x_{t''} − (σ_{t''} / σ_t) x_t) / (α_{t''} − (σ_{t''} / σ_t) α_t)

The loss is w(λ_t) ‖x̃ − x̂0_θ(x_t)‖² with the truncated-SNR weight w = max(α_t² / σ_t², 1) (their §4), x_t drawn from
real data. After a stage the student is the teacher and N halves. The student predicts v = α_t ε − σ_t x0, whose x̂0 =
α_t x_t − σ_t v stays bounded at t = 1, where ε-prediction divides by α_t ≈ 0 (their §4).

References
    Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR, arXiv:2202.00512.
    Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", ICLR, arXiv:2010.02502.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from common.paths import AffinePath
from common.predictions import Pair

Tensor = torch.Tensor


def ddim_to(pair: Pair, path: AffinePath, s: Tensor, like: Tensor) -> Tensor:
    """x_s = α_s x̂0 + σ_s ε̂: the DDIM (η = 0) step's landing point at level s (per-sample s allowed)."""
    alpha, sigma = path.alpha_sigma(s, like)
    return alpha * pair.x0 + sigma * pair.eps


def student_target(x_t: Tensor, x_s2: Tensor, t: Tensor, s2: Tensor, path: AffinePath) -> Tensor:
    """x̃: the x̂0 whose one DDIM step from (x_t, t) lands on x_s2 at level s2 (Salimans & Ho, Alg. 2)."""
    a_t, s_t = path.alpha_sigma(t, x_t)
    a_s, s_s = path.alpha_sigma(s2, x_t)
    ratio = s_s / s_t
    return (x_s2 - ratio * x_t) / (a_s - ratio * a_t)


def two_teacher_steps(teacher: Callable, x_t: Tensor, t: Tensor, t1: Tensor, t2: Tensor, path: AffinePath) -> Tensor:
    """x_t → x_{t1} → x_{t2} by two teacher DDIM steps, each sample on its own levels."""
    x_t1 = ddim_to(teacher(x_t, t), path, t1, x_t)
    return ddim_to(teacher(x_t1, t1), path, t2, x_t)


def distill_loss(teacher: Callable, student_x0: Callable, path: AffinePath, grid: Tensor) -> Callable:
    """The stage's loss for `fit`: the teacher's grid `grid` (2N steps, from 1 down to 0) and the student's x̂0
    (a function of (net, x_t, t)). Each sample draws its own j in 0..N−1."""
    pairs = (len(grid) - 1) // 2

    def loss(net, x0: Tensor, y, generator) -> Tensor:
        j = torch.randint(pairs, (len(x0),), generator=generator)
        t, t1, t2 = grid[2 * j], grid[2 * j + 1], grid[2 * j + 2]
        x_t = path.sample(x0, t, torch.randn(x0.shape, generator=generator).to(x0))
        with torch.no_grad():
            target = student_target(x_t, two_teacher_steps(teacher, x_t, t, t1, t2, path), t, t2, path).float()
        weight = path.log_snr(t).exp().clamp(min=1).to(target)                        # max(SNR, 1)
        error = (student_x0(net, x_t, t).float() - target).pow(2).flatten(1).mean(1)
        return (weight * error).mean()
    return loss
