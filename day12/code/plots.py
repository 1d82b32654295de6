"""Day 12's figures: captioned galleries, failures, the guidance sweep, same-noise rows and word attention maps."""
from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from judge import judge, predict  # noqa: E402

from common.plotting import to_uint8  # noqa: E402


def _show(ax, image: torch.Tensor, text: str = "", colour: str = "black") -> None:
    ax.imshow(to_uint8(image).permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("\n".join(textwrap.wrap(text, 22)), fontsize=6, color=colour)


def _save(fig, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_gallery(x: torch.Tensor, captions: list[str], path, title: str = "", scored_by=None, ncol: int = 8) -> None:
    """Images under their captions; with scored_by=(classifier, scenes), captions the image gets wrong in red."""
    wrong = [False] * len(x)
    if scored_by is not None:
        classifier, scenes = scored_by
        preds = predict(classifier, x)[0].tolist()
        wrong = [not judge(p, s)["all"][0] for p, s in zip(preds, scenes)]
    nrow = -(-len(x) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.25 * ncol, 1.45 * nrow), squeeze=False)
    for ax in axes.flat[len(x):]:
        ax.set_axis_off()
    for ax, image, text, bad in zip(axes.flat, x, captions, wrong):
        _show(ax, image, text, "red" if bad else "black")
    fig.suptitle(title, fontsize=8)
    _save(fig, path)


def plot_failures(classifier, x: torch.Tensor, scenes, captions: list[str], path, n: int = 16) -> None:
    """The first n images that get some attribute of their caption wrong, each titled with what is wrong."""
    preds = predict(classifier, x)[0].tolist()
    bad = []
    for i, (pred, scene) in enumerate(zip(preds, scenes)):
        verdict = judge(pred, scene)
        wrong = [name for name, v in verdict.items() if name != "all" and not all(v)]
        if wrong:
            bad.append((i, wrong))
    bad = bad[:n]
    fig, axes = plt.subplots(2, max(1, -(-len(bad) // 2)), figsize=(1.3 * max(1, -(-len(bad) // 2)), 3.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (i, wrong) in zip(axes.flat, bad):
        ax.set_axis_on()
        _show(ax, x[i], f"{captions[i]} — wrong: {', '.join(wrong)}", "red")
    fig.suptitle(f"failures: {len(bad)} shown", fontsize=8)
    _save(fig, path)


def plot_same_noise(rows: list[list[torch.Tensor]], captions: list[str], ws, path) -> None:
    """One caption and one noise per row, the guidance weight across."""
    fig, axes = plt.subplots(len(rows), len(ws) + 1, figsize=(1.1 * len(ws) + 2.2, 1.1 * len(rows)),
                             squeeze=False, gridspec_kw={"width_ratios": [2, *[1] * len(ws)]})
    for r, (row, text) in enumerate(zip(rows, captions)):
        axes[r, 0].set_axis_off()
        axes[r, 0].text(0, 0.5, "\n".join(textwrap.wrap(text, 26)), fontsize=6, va="center")
        for c, image in enumerate(row):
            _show(axes[r, c + 1], image, f"w={ws[c]:g}" if r == 0 else "")
    _save(fig, path)


def plot_attention(images: torch.Tensor, maps: torch.Tensor, tokens: torch.Tensor, tokenizer, path) -> None:
    """Per row: a sample, then each word's attention map (mean over heads, layers, steps) over the image, on one
    colour scale per row (0 to the row's largest weight)."""
    words = [tokenizer.decode(row) for row in tokens]
    ncol = 1 + max(len(w) for w in words)
    fig, axes = plt.subplots(len(images), ncol, figsize=(0.95 * ncol, 1.05 * len(images)), squeeze=False)
    for r, (image, m, ws) in enumerate(zip(images, maps, words)):
        for ax in axes[r]:
            ax.set_axis_off()
        _show(axes[r, 0], image)
        axes[r, 0].set_axis_on()
        up = F.interpolate(m[None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0]  # (L, H, W)
        top = up[1:len(ws) + 1].max().item()                 # one colour scale per row: words compare honestly
        gray = to_uint8(image).float().mean(0).numpy()
        for k, word in enumerate(ws):
            ax = axes[r, k + 1]
            ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
            ax.imshow(up[k + 1].numpy(), cmap="inferno", alpha=0.65, vmin=0, vmax=top)   # token k + 1 (0: <start>)
            ax.set_title(word, fontsize=7)
    _save(fig, path)


def plot_sweep(sweep: dict, real: dict, path) -> None:
    """Per-attribute accuracy against w, seen (solid) and held-out (dashed) captions; real images as stars."""
    names = ("count", "colour", "shape", "size", "relation", "all")
    ws = [row["w"] for row in sweep.values()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, name in enumerate(names):
        colour = f"C{k}"
        for split, style in (("seen", "o-"), ("held_out", "s--")):
            axes[0].plot(ws, [row[split][f"{name}_accuracy"] for row in sweep.values()], style, color=colour,
                         label=f"{name}" if split == "seen" else None)
        axes[0].plot([max(ws) * 1.08], [real["seen"][name]], "*", color=colour)
    axes[0].set(xlabel="guidance weight w", ylabel="accuracy", title="attributes right (solid seen, dashed held-out;"
                " ★ real)")
    axes[0].legend(fontsize=7, ncol=2)
    axes[0].grid(alpha=0.3)
    for split, style in (("seen", "o-"), ("held_out", "s--")):
        axes[1].plot(ws, [row[split]["fid_ratio"] or float("nan") for row in sweep.values()], style,
                     label=split.replace("_", "-"))
    axes[1].set(xlabel="guidance weight w", ylabel="FID / floor", yscale="log", title="distance to real renders")
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3, which="both")
    _save(fig, path)


def plot_gap(gap: dict[str, dict[str, float]], path) -> None:
    """Δ(t): the loss with another image's caption minus with its own, against the noise level t."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for split, style in (("seen", "o-"), ("held_out", "s--")):
        ax.plot([float(t) for t in gap[split]], list(gap[split].values()), style, label=split.replace("_", "-"))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="noise level t (0 data, 1 noise)", ylabel="Δ(t): loss, wrong − right caption",
           title="how much the prediction reads the caption")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
