"""Day 19's 2-D figure: one-step samples beside the exact ODE map, and the consistency error against t."""
from __future__ import annotations

from pathlib import Path

from common.plotting import DPI
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend


def plot_toy(shown: dict, rows: dict, path: Path, lim: float = 3.5) -> None:
    """Top: a panel per point cloud of `shown` (name -> (n, 2)); bottom right: consistency error per t bin."""
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3.2 * (len(shown) + 1), 3.2))
    for ax, (name, points) in zip(axes, shown.items()):
        p = points.detach().double().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.4, rasterized=True)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=name, xticks=[], yticks=[])
    ax = axes[-1]
    for name in ("cd", "ct"):
        err = rows[name]["consistency_error"]
        centres = [(k + 0.5) / len(err) for k in range(len(err))]
        ax.plot(centres, err, "o-", ms=3, label=name.upper())
    ax.set(xlabel="t (0 data, 1 noise)", ylabel="E ‖f(x_t, t) − x_0‖", title="consistency error on exact paths")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
