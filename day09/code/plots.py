"""Day 9's two figures: the fidelity–diversity trade-off of guidance, and what diversity it costs."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_tradeoff(cfg_sweep: dict, cg_sweep: dict, path) -> None:
    """FID (as a multiple of the real-data floor) against class accuracy, one point per guidance weight:
    classifier-free (w) and classifier guidance (s) on the same axes, real test images at (accuracy, 1)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for rows, key, style, name in ((cfg_sweep, "w", "o-", "classifier-free, w"),
                                   (cg_sweep, "s", "s--", "classifier guidance, s")):
        if not rows:
            continue
        acc = [r["class_accuracy"] for r in rows.values()]
        fid = [r["fid_ratio"] for r in rows.values()]
        ax.plot(acc, fid, style, label=name)
        for a, f, r in zip(acc, fid, rows.values()):
            ax.annotate(f"{r[key]:g}", (a, f), textcoords="offset points", xytext=(4, 4), fontsize=8)
    real = next(iter(cfg_sweep.values()))["real_accuracy"]
    ax.plot([real], [1], "k*", ms=10, label="real test images")
    ax.set(xlabel="class accuracy (evaluator's label = requested)", ylabel="FID / floor", yscale="log",
           title=f"guidance trade-off (n = {next(iter(cfg_sweep.values()))['n']} per point, same noise)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_diversity(cfg_sweep: dict, cg_sweep: dict, path) -> None:
    """Against the guidance weight: recall, within-class feature spread and ink, each relative to real images."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, title in zip(axes, ("recall_ratio", "spread_ratio", "ink_ratio"),
                              ("recall / real recall", "within-class feature spread / real", "ink / real ink")):
        for rows, weight, style, name in ((cfg_sweep, "w", "o-", "classifier-free (w)"),
                                          (cg_sweep, "s", "s--", "classifier guidance (s)")):
            if rows:
                ax.plot([r[weight] for r in rows.values()], [r[key] for r in rows.values()], style, label=name)
        ax.axhline(1, color="grey", ls=":", label="real test images")
        ax.set_xscale("symlog", linthresh=1)                  # w in 0..8 and s up to 64 on one axis
        ax.set_xlim(left=-0.3)
        ax.set(xlabel="guidance weight (linear below 1, log above)", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
