"""Day 26's figures: a control with several seeds, and fidelity and FID against the control scale."""
from __future__ import annotations

from pathlib import Path

import torch

from common.plotting import DPI, panel
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend

FIDELITIES = {"edge_f1": "edge F1 (1-px tolerance)", "mask_iou": "mask IoU"}


def control_panel(controls: list[torch.Tensor], x: torch.Tensor, source: torch.Tensor, names: tuple[str, ...],
                  path: Path) -> None:
    """One row per control: the control image(s) | samples from different seeds | the held-out digit they came
    from. controls: one (R, 1, H, W) tensor in {0, 1} per name; x (R, seeds, 1, H, W); source (R, 1, H, W)."""
    rows = [[2 * c[r] - 1 for c in controls] + list(x[r]) + [source[r]] for r in range(len(source))]
    labels = [*names, *(f"seed {k}" for k in range(x.shape[1])), "source"]
    panel(rows, path, col_labels=labels)


def plot_scale_sweep(rows: dict[str, dict], path: Path) -> None:
    """Left: each fidelity against the control scale s, for each ControlNet (s = 0 is the base); the
    Multi-ControlNet a star at s = 1. Right: FID / floor against s, the same lines (when FIDs were scored)."""
    base = next(r for r in rows.values() if not r["controls"])
    single = {name: sorted([base] + [r for r in rows.values() if r["controls"] == [name]], key=lambda r: r["scale"])
              for name in ("edges", "masks")}
    both = [r for r in rows.values() if len(r["controls"]) == 2]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, line in single.items():
        s = [r["scale"] for r in line]
        for key, style in zip(FIDELITIES, ("o-", "s--")):
            left.plot(s, [r[key] for r in line], style, label=f"{name} ControlNet: {FIDELITIES[key]}",
                      color="C0" if name == "edges" else "C1", alpha=1 if style == "o-" else 0.6)
        if base.get("fid_ratio") is not None:
            right.plot(s, [r["fid_ratio"] for r in line], "o-", label=f"{name} ControlNet")
    for r in both:
        for key, colour in zip(FIDELITIES, ("C2", "C3")):
            left.plot([r["scale"]], [r[key]], "*", ms=11, color=colour, label=f"edges + masks: {FIDELITIES[key]}")
        if r.get("fid_ratio") is not None:
            right.plot([r["scale"]], [r["fid_ratio"]], "*", ms=11, color="C2", label="edges + masks")
    left.set(xlabel="control scale s", ylabel="fidelity to the control", title="control fidelity (s = 0: base)")
    right.set(xlabel="control scale s", ylabel="FID / floor", title="realism")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
