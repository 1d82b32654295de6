"""Day 16's figures: FID against network calls for every sampler, the 2-D flows' trajectories, and the distance to
each toy against the number of Euler steps."""
from __future__ import annotations

from pathlib import Path


from common.plotting import DPI, draw_trajectories
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend

NAMES = {"icfm": "I-CFM", "otcfm": "OT-CFM"}


def plot_nfe(rows: dict, path: Path) -> None:
    """FID / floor against network calls per sample, one line per sampler (log-log)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind in dict.fromkeys(name.split("-")[0] for name in rows):
        points = sorted((r["nfe"], r["fid_ratio"]) for name, r in rows.items() if name.split("-")[0] == kind)
        label = f"{kind} ({'DDPM' if kind == 'ddpm' else 'flow'})"
        ax.plot(*zip(*points), "o-" if kind != "ddpm" else "s--", label=label)
    ax.set(xscale="log", yscale="log", xlabel="network calls per sample (NFE)", ylabel="FID / floor",
           title="MNIST: quality against sampling cost")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def plot_toy_trajectories(trajectories: dict, path: Path, n_show: int = 48, lim: float = 3.5) -> None:
    """Rows: pairings; columns: toys. Noise points (blue), where they end (red), the first n_show paths (grey)."""
    toys = list(dict.fromkeys(toy for toy, _ in trajectories))
    pairings = list(dict.fromkeys(p for _, p in trajectories))
    fig, axes = plt.subplots(len(pairings), len(toys), figsize=(3.2 * len(toys), 3.2 * len(pairings)),
                             squeeze=False)
    for (toy, pairing), states in trajectories.items():
        title = f"{toy}, {NAMES.get(pairing, pairing)}"
        draw_trajectories(axes[pairings.index(pairing), toys.index(toy)], states, title, n_show, lim)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def plot_toy_distances(toys: dict, path: Path) -> None:
    """Sliced Wasserstein distance to the toy against Euler steps, one panel per toy, the floor dashed."""
    fig, axes = plt.subplots(1, len(toys), figsize=(3.6 * len(toys), 3.2), squeeze=False)
    for ax, (toy, r) in zip(axes[0], toys.items()):
        for pairing, row in r.items():
            if pairing == "floor_sw":
                continue
            steps = [int(n) for n in row["sw"]]
            ax.plot(steps, list(row["sw"].values()), "o-", label=NAMES.get(pairing, pairing))
        ax.axhline(r["floor_sw"], ls="--", color="grey", label="real vs real")
        ax.set(xscale="log", yscale="log", xlabel="Euler steps", title=toy)
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("sliced Wasserstein to the toy")
    axes[0, 0].legend(fontsize=8)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
