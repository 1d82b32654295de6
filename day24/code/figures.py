"""Day 24's figures: clips as animated GIFs and the digits' centre-of-mass tracks."""
from __future__ import annotations

import torch
from measures import centres

from common.plotting import DPI, save_gif
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend


def save_clips_gif(clips: torch.Tensor, path) -> None:
    """Clips (N, F, C, H, W) side by side, one GIF frame per clip frame."""
    save_gif(list(clips.transpose(0, 1)), path, nrow=len(clips), duration_ms=250)


def plot_tracks(sets: dict[str, torch.Tensor], n: int, canvas: int, path) -> None:
    """One panel per set of clips: the centre of mass of the first n clips, frame by frame (dots mark frame 0)."""
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.2), squeeze=False)
    for ax, (name, clips) in zip(axes[0], sets.items()):
        c = centres(clips[:n, :, 0]).numpy()                                       # (n, F, 2)
        for track in c:
            line, = ax.plot(track[:, 1], track[:, 0], "-", lw=1)
            ax.plot(track[0, 1], track[0, 0], "o", ms=3, color=line.get_color())
        ax.set(xlim=(0, canvas - 1), ylim=(canvas - 1, 0), aspect="equal", title=name, xticks=[], yticks=[])
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
