"""Day 25's figures: the realism–faithfulness frontier of the three editing methods, and their edits across t0."""
from __future__ import annotations

from pathlib import Path

import torch

from common.plotting import panel
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend

STYLES = {"rough": ("-", "o", "rough edits"), "strokes": ("--", "s", "pure strokes")}
COLOURS = {"sdedit": "C0", "invert": "C1", "inpaint": "C2"}


def plot_frontier(rows: dict[str, list[dict]], path: Path) -> None:
    """SSIM to the input (x, faithful on the right) against target accuracy (left) and FID / floor (right, log):
    one curve per method (colour) and set of inputs (line style), points labelled with their t0."""
    fig, (acc, fid) = plt.subplots(1, 2, figsize=(11, 4.3))
    for key, curve in rows.items():
        name, method = key.split("/")
        line, marker, label = STYLES[name]
        ssim = [r["ssim"] for r in curve]
        kw = {"ls": line, "marker": marker, "ms": 4, "color": COLOURS[method], "label": f"{method}, {label}"}
        acc.plot(ssim, [r["target_accuracy"] for r in curve], **kw)
        fid.plot(ssim, [r["fid_ratio"] for r in curve], **kw)
        for r in curve:
            acc.annotate(f"{r['t0']:g}", (r["ssim"], r["target_accuracy"]), fontsize=6, xytext=(2, 2),
                         textcoords="offset points", color=COLOURS[method])
    acc.set(xlabel="SSIM to the input (more: more faithful)", ylabel="target class read by the evaluator",
            ylim=(-0.02, 1.05), title="edit success")
    fid.set(xlabel="SSIM to the input (more: more faithful)", ylabel="FID / real floor (less: more realistic)",
            yscale="log", title="realism")
    for ax in (acc, fid):
        ax.grid(alpha=0.3)
    acc.legend(fontsize=7)
    fig.suptitle("Editing towards a target class: each curve sweeps t0 (labels) from the input (t0 = 0) to t0 = 1")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_edits(data: dict, shown: dict[str, dict[float, torch.Tensor]], n: int, path: Path) -> None:
    """Rows: each of the first n inputs under each method; columns: the input, then the edit at every t0 > 0."""
    t0s = [t for t in next(iter(shown.values())) if t > 0]
    images, labels = [], []
    for i in range(min(n, len(data["x"]))):
        for method, by_t0 in shown.items():
            images.append([data["x"][i], *(by_t0[t][i] for t in t0s)])
            labels.append(f"{method} → {int(data['target'][i])}")
    panel(images, path, row_labels=labels, col_labels=["input", *(f"t0 = {t:g}" for t in t0s)])
