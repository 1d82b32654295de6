"""Day 23's figures: SDS images by guidance weight next to ancestral samples, the trends in w, and the scene's
views (a turntable GIF, the evaluator's reading per azimuth, front / back / mirrored panels)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from common.plotting import DPI, panel, plot_curves, save_gif


def save_by_w(settings: dict[str, torch.Tensor], labels: torch.Tensor, path, per_class: int = 2) -> None:
    """One row per setting (ancestral and SDS at each w), `per_class` images of every class in the same places."""
    pick = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique()])
    panel([list(x[pick]) for x in settings.values()], path, row_labels=list(settings))


def plot_trends(sds: dict[str, dict], path) -> None:
    """Label probability, confident share / real, saturation / real and diversity / real against w (log axis)."""
    ws = [r["w"] for r in sds.values()]
    keys = {"label_prob": "label probability", "confident_ratio": "confident / real",
            "saturation_ratio": "saturation / real", "diversity_ratio": "diversity / real"}
    plot_curves({name: (ws, [r[k] for r in sds.values()]) for k, name in keys.items()}, path,
                xlabel="guidance weight w (1: conditional)", ylabel="value", title="SDS on pixels: trends in w",
                logx=True)


def save_turntable(views: torch.Tensor, path) -> None:
    """A GIF of the views (V, 1, H, W) in azimuth order, one frame each, shown 4× enlarged."""
    save_gif([v[None] for v in views], path, duration_ms=120, scale=4)


def save_front_back(views: torch.Tensor, azimuths_deg: list[float], path, n: int = 6) -> None:
    """Rows: the view at φ, the view at φ + 180°, and the view at φ mirrored left–right; n azimuths φ in [0°, 180°)."""
    half = len(views) // 2
    cols = [round(i * half / n) for i in range(n)]
    panel([[views[i] for i in cols], [views[i + half] for i in cols], [views[i].flip(-1) for i in cols]], path,
          row_labels=["φ", "φ + 180°", "φ mirrored"], col_labels=[f"{azimuths_deg[i]:.0f}°" for i in cols])


def plot_views(azimuths_deg: list[float], p_target: list[float], confidence: list[float], labels: list[int],
               target: int, path) -> None:
    """The evaluator on each view: the target's probability, the top probability, and the label read (as text)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(azimuths_deg, p_target, marker="o", ms=3, label=f"p(label = {target})")
    ax.plot(azimuths_deg, confidence, marker="x", ms=3, ls="--", label="top probability")
    for a, c, lab in zip(azimuths_deg, confidence, labels):
        ax.annotate(str(lab), (a, c), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=6,
                    color="black" if lab == target else "red")
    ax.set(xlabel="azimuth φ (degrees)", ylabel="probability", ylim=(0, 1.08), title="the evaluator on each view "
           "(label read above each point; red: not the target)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
