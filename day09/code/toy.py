"""Day 9's exact lesson: guidance on a labelled 2-D Gaussian mixture, where every density is known.

Three classes, one Gaussian each (std 0.55, means on a circle of radius 1.2), overlap. The data density p(x),
each class's p(x | c), their noised versions p_t (common.toy2d.GaussianMixture.noised) and the exact denoisers
E[x0 | x_t] and E[x0 | x_t, c] (common.denoisers.LabelledMixtureDenoiser) are closed forms, so the guided sampler
below runs on exact scores: whatever it gets wrong, guidance gets wrong, not a network.

The hope. The guided score at level t is the score of the "sharpened" density (Ho & Salimans 2022, §3.2)

    p_t(x | c)^w p_t(x)^(1−w)  ∝  p_t(x | c) p_t(c | x)^(w−1)        (w = 1: the conditional model)

so one may hope that guided sampling draws from its t = 0 member p(x | c)^w p(x)^(1−w). It does not: the
family {p_t(x | c)^w p_t(x)^(1−w)}_t is not the forward-noised family of its t = 0 member (noising does not
commute with the power), so the reverse process driven by its scores is no reverse process of any diffusion.
Here we draw the sharpened density exactly on a fine grid and compare (Chidambaram et al. 2024 prove this for
two 1-D Gaussians; Bradley & Nakkiran 2024 say what guided sampling does instead).

References
    Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", arXiv:2207.12598.
    Chidambaram et al. 2024, "What does guidance do? A fine-grained analysis in a simple setting", arXiv:2409.13074.
    Bradley & Nakkiran 2024, "Classifier-Free Guidance is a Predictor-Corrector", arXiv:2408.09000.
"""
from __future__ import annotations

import math

import matplotlib
import torch

from common.denoisers import LabelledMixtureDenoiser
from common.paths import DiscreteVP, uniform_grid
from common.predictions import denoiser, guided
from common.samplers import ddim, ddpm, last
from common.toy2d import GaussianMixture, sliced_wasserstein

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

F64 = torch.float64
STD, RADIUS, CLASSES = 0.55, 1.2, 3
LIM = 4.0                      # the plot window and the sharpened density's grid: [-LIM, LIM]²


def class_means() -> torch.Tensor:
    """(3, 2) means at angles 90°, 210°, 330° on the circle of radius 1.2; class c is component c."""
    angles = math.pi / 2 + torch.arange(CLASSES, dtype=F64) * 2 * math.pi / CLASSES
    return RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)


def data_density() -> GaussianMixture:
    return GaussianMixture(class_means(), STD)


def class_density(c: int) -> GaussianMixture:
    return GaussianMixture(class_means()[c:c + 1], STD)


def sharpened_log_density(x: torch.Tensor, c: int, w: float) -> torch.Tensor:
    """log p(x | c)^w p(x)^(1−w), up to a constant.  (n,)"""
    return w * class_density(c).log_prob(x) + (1 - w) * data_density().log_prob(x)


def sample_grid(log_density, n: int, generator: torch.Generator, cells: int = 1000) -> torch.Tensor:
    """n exact draws (up to the 0.008-wide cells) from an unnormalised 2-D density on [-LIM, LIM]²: pick a
    cell with probability ∝ the density at its centre, then a uniform point inside it.  (n, 2)"""
    edge = 2 * LIM / cells
    centres = torch.linspace(-LIM + edge / 2, LIM - edge / 2, cells, dtype=F64)
    grid = torch.cartesian_prod(centres, centres)                                # (cells², 2)
    logp = log_density(grid)
    idx = torch.multinomial((logp - logp.max()).exp(), n, replacement=True, generator=generator)
    return grid[idx] + edge * (torch.rand(n, 2, generator=generator, dtype=F64) - 0.5)


def guided_samples(w: float, c: int, n: int, sampler, steps: int, generator: torch.Generator) -> torch.Tensor:
    """n draws of the guided sampler (ddpm or ddim) for class c on exact scores, in float64.  (n, 2)"""
    path = DiscreteVP.named("cosine", 1000)
    oracle = LabelledMixtureDenoiser(class_means(), torch.arange(CLASSES), STD, path, null=CLASSES)
    denoise = guided(denoiser(oracle, "x0", path), w, null=CLASSES)
    x1 = torch.randn(n, 2, generator=generator, dtype=F64)
    y = torch.full((n,), c)
    return last(sampler(denoise, x1, uniform_grid(path, steps), path=path, generator=generator, y=y))


def summary(x: torch.Tensor, c: int) -> dict:
    """Where samples of class c sit: their mean distance along the class's direction (its mean is at 1.2),
    their spread, and the mean exact p(c | x) — how far from the other classes they went."""
    u = class_means()[c] / RADIUS
    along = x @ u
    logp = torch.stack([class_density(k).log_prob(x) for k in range(CLASSES)], dim=1)   # (n, 3)
    return {"mean_along": round(along.mean().item(), 4), "std_along": round(along.std().item(), 4),
            "std_across": round((x @ torch.stack([-u[1], u[0]])).std().item(), 4),
            "p_class": round(logp.softmax(1)[:, c].mean().item(), 4)}


def run_toy(ws: tuple[float, ...], n: int, steps: int, seed: int, out) -> dict:
    """For each w: the sharpened density (exact draws), guided ancestral (SDE) and deterministic (ODE)
    sampling on exact scores; sliced Wasserstein distances to the sharpened draws, next to the distance
    between two independent exact draws (the noise level of the comparison). Writes out/toy_guidance.png."""
    g = torch.Generator().manual_seed(seed)
    c, rows, results = 0, [], {}
    for w in ws:
        def sharpened(x, w=w):
            return sharpened_log_density(x, c, w)
        sets = {"sharpened p(x|c)^w p(x)^(1-w)": sample_grid(sharpened, n, g),
                "guided ancestral (DDPM)": guided_samples(w, c, n, ddpm, steps, g),
                "guided ODE (DDIM, η = 0)": guided_samples(w, c, n, ddim, steps, g)}
        target, again = list(sets.values())[0], sample_grid(sharpened, n, g)   # again: the comparison's noise
        sw = {"exact_vs_exact": sliced_wasserstein(target, again, generator=g),
              "ddpm_vs_exact": sliced_wasserstein(sets["guided ancestral (DDPM)"], target, generator=g),
              "ode_vs_exact": sliced_wasserstein(sets["guided ODE (DDIM, η = 0)"], target, generator=g)}
        results[f"w={w:g}"] = {"sliced_w1": {k: round(v, 4) for k, v in sw.items()},
                               **{key: summary(x, c) for key, x in zip(("sharpened", "ddpm", "ode"),
                                                                         sets.values())}}
        rows.append(sets)
    plot_toy(rows, ws, out / "toy_guidance.png")
    return {"class": c, "n": n, "steps": steps, "std": STD, "radius": RADIUS, "by_w": results}


def plot_toy(rows: list[dict], ws, path) -> None:
    """One row per w: the sharpened density's draws, then the two guided samplers; class means marked."""
    means = class_means()
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (w, sets) in enumerate(zip(ws, rows)):
        for ax, (name, x) in zip(axes[r], sets.items()):
            ax.hist2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=120, range=[[-LIM, LIM]] * 2, cmap="Blues")
            ax.scatter(means[:, 0], means[:, 1], c=["tab:red", "tab:grey", "tab:grey"], marker="x", s=60)
            ax.set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), aspect="equal", xticks=[], yticks=[])
            ax.set_title(f"w = {w:g}: {name}", fontsize=8)
    fig.suptitle("class 0 (red ×) among 3 overlapping classes: exact scores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
