"""Day 18's figure of the 2-D trajectories of every round (FID against steps: common.plotting.plot_fid_vs_calls)."""
from __future__ import annotations

from pathlib import Path

from common.plotting import DPI, draw_trajectories
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend


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
