"""Day 18's figures: FID against Euler steps for each flow, and the 2-D trajectories of every round."""
from __future__ import annotations

from pathlib import Path

from common.plotting import DPI, draw_trajectories
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend


def plot_fid(rows: dict, path: Path) -> None:
    """FID / floor against network calls (Euler steps), one line per model (log-log)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for model in dict.fromkeys(r["model"] for r in rows.values()):
        points = sorted((r["nfe"], r["fid_ratio"]) for r in rows.values()
                        if r["model"] == model and r["fid_ratio"] is not None)
        if points:
            ax.plot(*zip(*points), "o-" if len(points) > 1 else "*", ms=6 if len(points) > 1 else 12, label=model)
    ax.set(xscale="log", yscale="log", xlabel="network calls per sample (Euler steps)", ylabel="FID / floor",
           title="MNIST: rectified flows against steps")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def plot_toy_trajectories(trajectories: dict, path: Path, n_show: int = 64, lim: float = 3.5) -> None:
    """Rows: toys; columns: rounds. Noise points (blue), where they end (red), the first n_show paths (grey)."""
    toys = list(trajectories)
    rounds = list(next(iter(trajectories.values())))
    fig, axes = plt.subplots(len(toys), len(rounds), figsize=(3.2 * len(rounds), 3.2 * len(toys)), squeeze=False)
    for i, toy in enumerate(toys):
        for j, k in enumerate(rounds):
            draw_trajectories(axes[i, j], trajectories[toy][k], f"{toy}, {k}-rectified flow", n_show, lim)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
