"""Day 22's figure: FID against the training FLOPs per image of every model, one line per study."""
from __future__ import annotations

from pathlib import Path

from common.plotting import DPI
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend

SHORT = {"adaln-zero": "", "in-context": "\nin-context", "cross-attention": "\ncross-attn"}
STYLES = {"scaling": ("o-", "DiT sizes"), "patch": ("s--", "DiT patch sizes"),
          "conditioning": ("^", "DiT conditionings")}


def label(row: dict) -> str:
    """A model's caption: the U-Net, or a DiT's width × depth and patch, its conditioning below unless adaLN-Zero."""
    if row["model"] == "unet":
        return "U-Net"
    return f"{row['width']}×{row['depth']}, p={row['patch']}{SHORT[row['conditioning']]}"


def plot_fid_vs_gflops(rows: dict[str, dict], studies: dict[str, list[str]], path: Path) -> None:
    """FID / floor against GFLOPs per training image (log-log): each study a line through its models in GFLOPs
    order, the U-Net a star, every point captioned. Rows without a FID (no evaluator) are left out."""
    scored = {name: r for name, r in rows.items() if r.get("fid_ratio") is not None}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for study, (style, caption) in STYLES.items():
        names = sorted((n for n in studies.get(study, []) if n in scored), key=lambda n: scored[n]["gflops_per_image"])
        if names:
            ax.plot([scored[n]["gflops_per_image"] for n in names], [scored[n]["fid_ratio"] for n in names], style,
                    label=caption, alpha=0.8)
    for r in scored.values():
        if r["model"] == "unet":
            ax.plot(r["gflops_per_image"], r["fid_ratio"], "*", ms=14, color="black", label="U-Net")
        ax.annotate(label(r), (r["gflops_per_image"], r["fid_ratio"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    if not scored:
        ax.text(0.5, 0.5, "no FID: the dataset has no evaluator", ha="center", transform=ax.transAxes)
    else:
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=8)
    ax.set(xlabel="GFLOPs per training image (forward + backward)", ylabel="FID / floor",
           title="quality against compute, equal steps and batch")
    ax.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
