"""Day 30's figures: FID / floor against network calls (one line per family and sampler, seed intervals as bars) and
against training seconds (the second view of compute)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(s: dict) -> str:
    return f"{s['family']} ({s['sampler']})"


def _bars(ax, xs, stats: list[dict], **kw) -> None:
    """Means with their seed intervals as error bars (a single seed: the point alone)."""
    means = [s["mean"] for s in stats]
    err = [[m - (s["ci95"] or [m, m])[0] for m, s in zip(means, stats)],
           [(s["ci95"] or [m, m])[1] - m for m, s in zip(means, stats)]]
    ax.errorbar(xs, means, yerr=err, capsize=3, **kw)


def plot_fid_vs_nfe(summary: dict, path) -> None:
    """FID / floor (mean over seeds, 95 % t-interval) against network calls per sample."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in dict.fromkeys(label(s) for s in summary.values()):
        mine = sorted((s for s in summary.values() if label(s) == name), key=lambda s: s["nfe"])
        _bars(ax, [s["nfe"] for s in mine], [s["fid_ratio"] for s in mine], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="network calls per sample (NFE)", ylabel="FID / floor",
           title="MNIST at one training budget: quality against sampling compute")
    ax.set_xticks(sorted({s["nfe"] for s in summary.values()}), labels=sorted({s["nfe"] for s in summary.values()}))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_fid_vs_seconds(summary: dict, runs: list[dict], path) -> None:
    """Each family's best setting's FID / floor against its mean measured training seconds (teacher's share in)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for family in dict.fromkeys(s["family"] for s in summary.values()):
        best = min((s for s in summary.values() if s["family"] == family), key=lambda s: s["fid_ratio"]["mean"])
        seconds = [r["train_seconds"] for r in runs if r["family"] == family]
        _bars(ax, [sum(seconds) / len(seconds)], [best["fid_ratio"]], marker="o",
              label=f"{label(best)}, {best['nfe']} calls")
    ax.set(yscale="log", xlabel="training seconds (measured, mean over seeds)", ylabel="FID / floor",
           title="the same budget in FLOPs, in seconds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
