"""Day 17's figures: the solvers' orders, the change-of-variables check, the 2-D densities, and quality against
network calls and seconds on MNIST."""
from __future__ import annotations

from pathlib import Path

import torch

from common.plotting import DPI
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def plot_orders(orders: dict, path: Path) -> None:
    """Max error against steps (log-log) per solver, with the observed slope in the legend."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, row in orders.items():
        ax.plot(row["steps"], row["max_error"], "o-", label=f"{name}: slope −{row['order']:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="steps", ylabel="max |x − exact|",
           title="PF-ODE of a Gaussian: error against steps")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)


def plot_identity(rows: list[dict], path: Path) -> None:
    """|log p_ODE − log p| against RK4 steps for the exact 8-Gaussians field (mean and max over the points)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    steps = [r["steps"] for r in rows]
    ax.plot(steps, [r["mean_abs_err"] for r in rows], "o-", label="mean")
    ax.plot(steps, [r["max_abs_err"] for r in rows], "s--", label="max")
    ax.set(xscale="log", yscale="log", xlabel="RK4 steps", ylabel="|log p_ODE − log p| (nats)",
           title="change of variables, exact field")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)


def plot_density(maps: dict[str, torch.Tensor], path: Path) -> None:
    """log p on [-3, 3]², one panel per map, one colour scale."""
    lo = max(float(m.min()) for m in maps.values())
    hi = max(float(m.max()) for m in maps.values())
    fig, axes = plt.subplots(1, len(maps), figsize=(3.3 * len(maps), 3.3), squeeze=False)
    for ax, (name, m) in zip(axes[0], maps.items()):
        image = ax.imshow(m.clamp(min=max(lo, hi - 12)).numpy(), extent=(-3, 3, -3, 3), origin="lower",
                          cmap="viridis")
        ax.set(title=name, xticks=[], yticks=[])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="log p")
    _save(fig, path)


def plot_nfe(rows: dict, path: Path) -> None:
    """FID / floor against network calls and against seconds per sample, one line per sampler (log-log)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    kinds = dict.fromkeys(name.split("-")[0] for name in rows)
    for kind in kinds:
        mine = sorted((r["nfe"], r["seconds_per_sample"], r["fid_ratio"]) for name, r in rows.items()
                      if name.split("-")[0] == kind and r["fid_ratio"] is not None)
        if not mine:
            continue
        calls, seconds, fid = zip(*mine)
        style = "s--" if kind == "ddpm" else "o-"
        label = "ddpm (ancestral SDE)" if kind == "ddpm" else f"{kind} (ODE)"
        axes[0].plot(calls, fid, style, label=label)
        axes[1].plot([1000 * s for s in seconds], fid, style, label=label)
    axes[0].set(xlabel="network calls per sample (NFE)", ylabel="FID / floor")
    axes[1].set(xlabel="milliseconds per sample (2 CPU cores)")
    for ax in axes:
        ax.set(xscale="log", yscale="log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle("MNIST, day 6's model: quality against sampling cost")
    _save(fig, path)
