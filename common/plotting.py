"""Figures every day makes: image grids and GIFs, curves, 2-D scatter, trajectories, vector fields.

Images come in as the models see them, (N, C, H, W) or (C, H, W) tensors in [-1, 1] with C = 1 or
3, and are mapped to pixels by u = round((clamp(x, -1, 1) + 1) * 127.5), the inverse of the
loaders' x = u / 127.5 - 1 (common/data.py): `to_uint8` of common/samples.py, so a figure shows
exactly the pixels a samples.npz stores. Grids are torchvision's `make_grid`, saved with PIL (exact
pixels, nearest-neighbour upscaling); everything with axes or text uses matplotlib's file-only Agg backend.
Every function writes one small file (PNGs of a few tens of kB) and creates its parent folder.

2-D plots share one square window [-lim, lim]^2, matching the toys of common/toy2d.py.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from common.config import UserError  # noqa: E402
from common.samples import to_uint8  # noqa: E402  (re-exported: plotting.to_uint8)

PAD_VALUE = 255  # grid separators are white: they stand out against MNIST's black background
MARK_RGB = (230, 30, 30)  # the frame of a marked image
GIF_HOLD_MS = 1000  # the last GIF frame (the final sample) stays up at least this long
DPI = 100


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2,
               marked: torch.Tensor | None = None) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (H', W', 3) uint8 array (torchvision's make_grid).

    `nrow` images per row (at most N), default ceil(sqrt(N)); `pad` pixels of PAD_VALUE around and
    between images, so image i's top-left pixel sits at
    (pad + (i // nrow) * (H + pad), pad + (i % nrow) * (W + pad)).
    `marked` (N,) bool: those images get a red frame in the padding around them (e.g. the samples
    the evaluator is not confident about).
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
    nrow = nrow or math.ceil(math.sqrt(len(x)))
    grid = make_grid(to_uint8(x), nrow=nrow, padding=pad, pad_value=PAD_VALUE)  # (3, H', W'); grey -> RGB
    if len(x) == 1:  # make_grid returns a lone image without its frame
        grid = F.pad(grid, (pad, pad, pad, pad), value=PAD_VALUE)
    h, w = x.shape[-2:]
    for i in ([] if marked is None else torch.nonzero(marked).flatten().tolist()):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        frame = grid[:, top - pad: top + h + pad, left - pad: left + w + pad]   # (3, h + 2 pad, w + 2 pad)
        inside = frame[:, pad: pad + h, pad: pad + w].clone()
        frame[:] = torch.tensor(MARK_RGB, dtype=torch.uint8)[:, None, None]
        frame[:, pad: pad + h, pad: pad + w] = inside
    return grid.permute(1, 2, 0).contiguous().numpy()


def _grid_image(x: torch.Tensor, nrow: int | None, scale: int, marked: torch.Tensor | None = None) -> Image.Image:
    grid = Image.fromarray(image_grid(x, nrow, marked=marked))
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


def _prepare(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_grid(x: torch.Tensor, path, nrow: int | None = None, scale: int = 2,
              marked: torch.Tensor | None = None) -> None:
    """Save image_grid(x) as a PNG, each pixel upscaled to scale x scale (nearest neighbour); the
    `marked` images (a (N,) bool mask) framed in red."""
    _grid_image(x, nrow, scale, marked).save(_prepare(path))


def save_gif(
    frames: list[torch.Tensor], path, nrow: int | None = None, duration_ms: int = 80, scale: int = 2
) -> None:
    """Save an animated GIF, one grid per frame (each (N, C, H, W)); the last frame is held longer.

    GIF stores at most 256 colours per frame, so colour images are quantised; fine for a preview.
    """
    images = [_grid_image(frame, nrow, scale) for frame in frames]
    durations = [duration_ms] * (len(images) - 1) + [max(duration_ms, GIF_HOLD_MS)]
    images[0].save(
        _prepare(path), save_all=True, append_images=images[1:], duration=durations, loop=0
    )


def _save_figure(fig, path) -> None:
    fig.savefig(_prepare(path), dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    logy: bool = False,
    logx: bool = False,
) -> None:
    """One line per entry {label: (xs, ys)}, with a legend."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (xs, ys) in curves.items():
        ax.plot(list(xs), list(ys), label=label, marker="o" if len(xs) < 20 else None, ms=3)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    _save_figure(fig, path)


def plot_fid_vs_calls(rows: dict[str, dict], path, title: str, xlabel: str = "network calls per sample") -> None:
    """FID / floor against network calls, log-log, one line per model: rows {setting: {"model", "nfe",
    "fid_ratio", ...}} as the days' metrics.json hold them. A model sampled at one setting is a star."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for model in dict.fromkeys(r["model"] for r in rows.values()):
        points = sorted((r["nfe"], r["fid_ratio"]) for r in rows.values()
                        if r["model"] == model and r["fid_ratio"] is not None)
        if points:
            ax.plot(*zip(*points), "o-" if len(points) > 1 else "*", ms=6 if len(points) > 1 else 12, label=model)
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="FID / floor", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save_figure(fig, path)


def _read_loss_csv(csv_path) -> tuple[np.ndarray, np.ndarray]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "step" not in rows[0] or "loss" not in rows[0]:
        raise UserError(f"{csv_path} has no rows with 'step' and 'loss' columns; is it a training log?")
    steps = np.array([float(r["step"]) for r in rows])
    losses = np.array([float(r["loss"]) for r in rows])
    return steps, losses


def centred_average(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over `window` neighbours centred on each point; near the ends the window shrinks to
    what exists, so the curve starts at the first point and does not lag behind a falling loss."""
    kernel = np.ones(max(1, min(window, len(values))))
    sums = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones_like(values), kernel, mode="same")
    return sums / counts


def plot_loss_csv(csv_path, path, smooth: int = 5, title: str = "training loss") -> None:
    """Plot a training log (CSV with columns step, loss, ...): logged loss faint, a centred moving average
    over `smooth` log rows bold.

    Each row is already the mean over a logging interval, so a few rows are enough to smooth it.
    The y axis is logarithmic when every loss is positive (diffusion losses fall over decades).
    """
    steps, losses = _read_loss_csv(csv_path)
    window = max(1, min(smooth, len(losses)))
    every = int(steps[0]) if len(steps) == 1 else int(steps[1] - steps[0])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label=f"mean of each {every} steps")
    ax.plot(steps, centred_average(losses, window), color="tab:blue", lw=1.8,
            label=f"centred average of {window} rows ({window * every} steps)")
    ax.set(xlabel="step", ylabel="loss", title=title)
    if losses.min() > 0:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    _save_figure(fig, path)


def _square_axes(lim: float, title: str):
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=title, aspect="equal")
    return fig, ax


def _np(points: torch.Tensor) -> np.ndarray:
    return points.detach().float().cpu().numpy()


def scatter2d(sets: dict[str, torch.Tensor], path, lim: float = 3.5, title: str = "") -> None:
    """Overlay several (n, 2) point clouds, one colour and legend entry each."""
    fig, ax = _square_axes(lim, title)
    for label, points in sets.items():
        p = _np(points)
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5, label=label, rasterized=True)
    if sets:
        ax.legend(markerscale=4, loc="upper right")
    _save_figure(fig, path)


def trajectories2d(
    states: list[torch.Tensor], path, n_show: int = 64, lim: float = 3.5, title: str = ""
) -> None:
    """Sampler paths: all start and end points, and the paths of the first n_show particles.

    `states` is the list a sampler yields, each (n, 2): states[0] the start (noise), states[-1] the end.
    """
    path_xy = torch.stack([s.detach() for s in states]).float().cpu().numpy()  # (T, n, 2)
    fig, ax = _square_axes(lim, title)
    ax.plot(path_xy[:, :n_show, 0], path_xy[:, :n_show, 1], color="grey", lw=0.6, alpha=0.5)
    ax.scatter(*path_xy[0].T, s=2, color="tab:blue", alpha=0.4, label="start", rasterized=True)
    ax.scatter(*path_xy[-1].T, s=2, color="tab:red", alpha=0.6, label="end", rasterized=True)
    ax.legend(markerscale=4, loc="upper right")
    _save_figure(fig, path)


def draw_trajectories(ax, states: list[torch.Tensor], title: str, n_show: int = 48, lim: float = 3.5) -> None:
    """One panel of a grid of 2-D flows: every start (blue) and end (red), and the paths of the first n_show points
    (grey). `states` is the list a sampler yields, each (n, 2), states[0] the noise."""
    z = torch.stack([s.detach() for s in states]).float().cpu().numpy()       # (K + 1, n, 2)
    ax.plot(z[:, :n_show, 0], z[:, :n_show, 1], color="grey", lw=0.6, alpha=0.6)
    ax.scatter(*z[0].T, s=1, color="tab:blue", alpha=0.3, rasterized=True)
    ax.scatter(*z[-1].T, s=1, color="tab:red", alpha=0.5, rasterized=True)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=9)


def vector_field(
    fn: Callable[[torch.Tensor], torch.Tensor],
    path,
    lim: float = 3.5,
    n: int = 20,
    title: str = "",
    background: torch.Tensor | None = None,
) -> None:
    """Quiver plot of fn on an n x n grid over [-lim, lim]^2 (fn gets an (n*n, 2) float32 CPU tensor).

    `background`, if given, is an (m, 2) sample drawn faintly behind the arrows (e.g. the data).
    """
    ticks = torch.linspace(-lim, lim, n)
    grid = torch.cartesian_prod(ticks, ticks)  # (n*n, 2), rows (x, y)
    with torch.no_grad():
        v = _np(fn(grid))  # (n*n, 2)
    fig, ax = _square_axes(lim, title)
    if background is not None:
        b = _np(background)
        ax.scatter(b[:, 0], b[:, 1], s=2, color="tab:orange", alpha=0.3, rasterized=True)
    g = grid.numpy()
    ax.quiver(g[:, 0], g[:, 1], v[:, 0], v[:, 1], np.hypot(v[:, 0], v[:, 1]), cmap="viridis")
    _save_figure(fig, path)


def panel(
    images: list[list[torch.Tensor]],
    path,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    scale: int = 2,
) -> None:
    """A labelled table of single images (each (C, H, W) in [-1, 1]), e.g. rows 'forward' and
    'reverse', columns t = 0, 0.25, ..., 1. Rows may differ in length."""
    nrows, ncols = len(images), max(len(row) for row in images)
    h, w = images[0][0].shape[-2:]
    cell = max(0.8, scale * max(h, w) / DPI)  # inches per image
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell + 0.8, nrows * cell + 0.3), squeeze=False)
    for r, c in np.ndindex(nrows, ncols):
        ax = axes[r, c]
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= len(images[r]):
            ax.set_axis_off()
            continue
        pixels = to_uint8(images[r][c]).permute(1, 2, 0).numpy()  # (H, W, C)
        ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=255)
        if r == 0 and col_labels is not None:
            ax.set_title(col_labels[c], fontsize=8)
        if c == 0 and row_labels is not None:
            ax.set_ylabel(row_labels[r], fontsize=8)
    _save_figure(fig, path)
