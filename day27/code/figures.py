"""Pictures of the navigation task: trajectories of each policy beside the demonstrations, and a rollout GIF."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from envs import NAV, Nav  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

OUTCOME_COLOURS = {"success": "tab:green", "collision": "tab:red", "timeout": "tab:grey"}


def _scene(ax, nav: Nav, title: str) -> None:
    ax.add_patch(plt.Circle(nav.centre, nav.radius, color="black", alpha=0.25))
    ax.add_patch(plt.Circle(nav.goal, nav.goal_radius, color="tab:blue", alpha=0.4))
    ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", xticks=[], yticks=[], title=title)


def plot_trajectories(panels: dict[str, tuple[list[np.ndarray], list[str]]], path: Path, nav: Nav = NAV) -> None:
    """One panel per entry: title -> (trajectories (L_i, 2), outcome of each: success | collision | timeout)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, (paths, outcomes)) in zip(axes, panels.items()):
        _scene(ax, nav, title)
        for xy, outcome in zip(paths, outcomes):
            ax.plot(xy[:, 0], xy[:, 1], lw=0.8, alpha=0.6, color=OUTCOME_COLOURS[outcome])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def outcomes(success: torch.Tensor, collision: torch.Tensor) -> list[str]:
    return ["success" if s else "collision" if c else "timeout" for s, c in zip(success.tolist(), collision.tolist())]


def _to_pixels(xy: torch.Tensor, size: int) -> list[tuple[float, float]]:
    return [((x + 1) / 2 * (size - 1), (1 - y) / 2 * (size - 1)) for x, y in xy.tolist()]


def save_rollout_gif(panels: dict[str, torch.Tensor], path: Path, size: int = 128, nav: Nav = NAV) -> None:
    """An animated GIF, one panel per policy: its episodes' positions (n, steps + 1, 2) drawn step by step."""
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    steps = max(p.shape[1] for p in panels.values())
    c, g = _to_pixels(torch.tensor([nav.centre, nav.goal]), size)
    r_o, r_g = nav.radius * (size - 1) / 2, nav.goal_radius * (size - 1) / 2
    frames = []
    for k in range(1, steps + 1, 2):
        frame = Image.new("RGB", (size * len(panels), size + 14), "white")
        draw = ImageDraw.Draw(frame)
        for j, (name, positions) in enumerate(panels.items()):
            dx = j * size
            draw.ellipse([c[0] - r_o + dx, c[1] - r_o, c[0] + r_o + dx, c[1] + r_o], fill=(190, 190, 190))
            draw.ellipse([g[0] - r_g + dx, g[1] - r_g, g[0] + r_g + dx, g[1] + r_g], fill=(160, 200, 240))
            for i, xy in enumerate(positions[:, :k]):
                pts = [(x + dx, y) for x, y in _to_pixels(xy, size)]
                if len(pts) > 1:
                    draw.line(pts, fill=colours[i % len(colours)], width=2)
            draw.text((dx + 4, size), name, fill="black")
            draw.line([(dx, 0), (dx, size)], fill="black")
        frames.append(frame.quantize(colors=32))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[60] * (len(frames) - 1) + [1500], loop=0)
