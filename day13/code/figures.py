"""Day 13's figures: the realism–faithfulness frontier of SDEdit, edits across t0, and inpaintings."""
from __future__ import annotations

from pathlib import Path

import torch

from common.plotting import panel
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend

TITLES = {"strokes": "strokes → digits", "corrupted": "corrupted test digits", "class_change": "class change (w)"}


def plot_frontier(edits: dict, path: Path) -> None:
    """Per kind of edit, two views of the same t0 sweep: top, RMSE to the input against FID / floor; bottom, SSIM
    to the input against the share the evaluator reads as the intended class and the confident share / real
    share. Each point is labelled with its t0; the chosen t0 is starred."""
    fig, axes = plt.subplots(2, len(edits), figsize=(4.2 * len(edits), 7), squeeze=False)
    for col, (kind, e) in enumerate(edits.items()):
        rows, chosen = e["rows"], e["chosen_t0"]
        top, bottom = axes[0, col], axes[1, col]
        rmse, fid, ssim = ([r[k] for r in rows] for k in ("rmse", "fid_ratio", "ssim"))
        top.plot(rmse, fid, "o-", ms=4)
        for r in rows:
            top.annotate(f"{r['t0']:g}", (r["rmse"], r["fid_ratio"]), fontsize=7, xytext=(3, 3),
                         textcoords="offset points")
        bottom.plot(ssim, [r["intended_class"] for r in rows], "o-", ms=4, label="intended class read")
        bottom.plot(ssim, [r["confident_ratio"] for r in rows], "s--", ms=3, label="confident / real share")
        if "source_class" in rows[0]:
            bottom.plot(ssim, [r["source_class"] for r in rows], "^:", ms=3, label="source class read")
        for r in rows:
            if r["t0"] == chosen:
                top.plot(r["rmse"], r["fid_ratio"], "*", ms=16, color="C3", label=f"chosen t0 = {chosen:g}")
                bottom.plot(r["ssim"], r["intended_class"], "*", ms=16, color="C3")
        top.set(yscale="log", xlabel="RMSE to the input (less: more faithful)", ylabel="FID / real floor",
                title=TITLES.get(kind, kind))
        bottom.set(xlabel="SSIM to the input (more: more faithful)", ylabel="share", ylim=(-0.02, 1.1))
        bottom.invert_xaxis()  # both rows read left to right from faithful to free
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle("SDEdit: the t0 sweep from the input (t0 = 0) to plain sampling (t0 = 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_edits(guides: torch.Tensor, shown: dict[float, torch.Tensor], path: Path,
               row_labels: list[str] | None = None) -> None:
    """One row per input: the input, then its edit at each t0 (the same noise for every t0)."""
    t0s = [t for t in shown if t > 0]
    images = [[guides[i], *(shown[t][i] for t in t0s)] for i in range(len(guides))]
    panel(images, path, row_labels=row_labels, col_labels=["input", *(f"t0 = {t:g}" for t in t0s)])


def save_inpaintings(x: torch.Tensor, mask: torch.Tensor, shown: dict[str, torch.Tensor], path: Path,
                     rows: int) -> None:
    """For each of `rows` inputs and each method: the original, what the method sees (hidden pixels grey), and
    the method's completions (M, K, C, H, W) of it."""
    images, labels = [], []
    for i in range(rows):
        seen = torch.where(mask[i], x[i], torch.zeros_like(x[i]))
        for method, completions in shown.items():
            images.append([x[i], seen, *completions[i]])
            labels.append(method.replace("_", " "))
    k = next(iter(shown.values())).shape[1]
    panel(images, path, row_labels=labels, col_labels=["original", "known", *(f"#{j + 1}" for j in range(k))])
