"""Inpainting where the answer is known: complete a 2-D point whose first coordinate is given, with the exact
denoiser of a Gaussian mixture, and compare the completions with the exact conditional law p(x2 | x1).

For x ~ (1/N) Σ_n N(μ_n, s² I) and a known x1 = a, the missing coordinate follows

    p(x2 | x1 = a) = Σ_n w_n N(x2; μ_n2, s²),   w_n ∝ N(a; μ_n1, s²)

(the isotropic components factorise). The mixture below puts two components at x1 = −1, so the exact answer is an
even mixture at x2 = ±1, and a third at (1, 1.5) that makes the *unconditional* prior favour x2 > 0: a sampler that
does not fully condition on x1 leans upwards. The Kolmogorov–Smirnov distance between the completions and the
exact law measures how far each method is from exact conditioning.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from common.denoisers import MixtureDenoiser
from common.img2img import inpaint, resampling_walk
from common.paths import F64, DiscreteVP, uniform_grid
from common.predictions import denoiser
from common.samplers import last
import matplotlib.pyplot as plt  # common.plotting (imported by the callers) selects the file-only backend

MEANS, STD, KNOWN = ((-1.0, -1.0), (-1.0, 1.0), (1.0, 1.5)), 0.5, -1.0


def exact_cdf(z: torch.Tensor) -> torch.Tensor:
    """P(x2 ≤ z | x1 = KNOWN) under the mixture.  (len(z),)"""
    means = torch.tensor(MEANS, dtype=F64)
    w = torch.softmax(-(KNOWN - means[:, 0]) ** 2 / (2 * STD ** 2), 0)
    return (w * 0.5 * (1 + torch.erf((z[:, None] - means[:, 1]) / (STD * math.sqrt(2))))).sum(1)


def exact_pdf(z: np.ndarray) -> np.ndarray:
    means = np.array(MEANS)
    w = np.exp(-(KNOWN - means[:, 0]) ** 2 / (2 * STD ** 2))
    w /= w.sum()
    return (w * np.exp(-(z[:, None] - means[:, 1]) ** 2 / (2 * STD ** 2))).sum(1) / (STD * math.sqrt(2 * math.pi))


def ks_distance(x2: torch.Tensor) -> float:
    """sup_z |F_empirical(z) − F_exact(z)| of the completions x2 (N,)."""
    z = x2.double().sort().values
    f, n = exact_cdf(z), len(z)
    above = torch.arange(1, n + 1, dtype=F64) / n
    return torch.maximum(above - f, f - (above - 1 / n)).max().item()


def complete(walk: torch.Tensor, path, n: int, seed: int) -> torch.Tensor:
    """n completions of x2 given x1 = KNOWN along `walk`, driven by the mixture's exact denoiser.  (n,)"""
    denoise = denoiser(MixtureDenoiser(torch.tensor(MEANS, dtype=F64), STD, path), "x0", path)
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, 2, generator=g, dtype=F64)
    known, mask = torch.tensor([KNOWN, 0.0], dtype=F64).expand(n, 2), torch.tensor([True, False])
    return last(inpaint(denoise, x1, walk, path=path, known=known, mask=mask, generator=g))[:, 1]


def run_toy(steps: int, jump: int, repeats: int, n: int, seed: int, out) -> dict:
    """Replacement and RePaint on the cosine schedule: KS distance to the exact law, and a histogram figure."""
    path = DiscreteVP.named("cosine", 1000)
    walks = {"replace": uniform_grid(path, steps), "repaint": resampling_walk(path, steps, jump, repeats)}
    x2 = {name: complete(walk, path, n, seed) for name, walk in walks.items()}
    result = {"n": n, "steps": steps, "jump": jump, "repeats": repeats,
              "ks_noise_99": round(1.628 / math.sqrt(n), 4),  # exact draws stay under this 99% of the time
              **{f"ks_{name}": round(ks_distance(x), 4) for name, x in x2.items()},
              **{f"share_above_0_{name}": round((x > 0).double().mean().item(), 4) for name, x in x2.items()},
              "share_above_0_exact": round(1 - exact_cdf(torch.zeros(1, dtype=F64)).item(), 4)}
    z = np.linspace(-3, 3.5, 300)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, x in x2.items():
        ax.hist(x.numpy(), bins=80, range=(-3, 3.5), density=True, histtype="step", lw=1.5,
                label=f"{name} (KS {result[f'ks_{name}']:.3f})")
    ax.plot(z, exact_pdf(z), "k--", lw=1, label="exact p(x2 | x1 = −1)")
    ax.set(xlabel="x2", ylabel="density", title=f"completing x2 given x1 = −1 (exact denoiser, n = {n})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return result
