"""What day 11 measures about its networks and latents: a training step's FLOPs, two pictures of the latent space."""
from __future__ import annotations

import matplotlib
import torch
from torch.utils.flop_counter import FlopCounterMode

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Tensor = torch.Tensor


def training_flops(net: torch.nn.Module, x: Tensor) -> int:
    """FLOPs of one training step per image: forward and backward of `net` on one input x (1, ...) at t = 0.5,
    counted by torch.utils.flop_counter (matrix multiplications and convolutions; elementwise ops are free)."""
    net = net.train().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        net(x, torch.full((len(x),), 0.5)).square().mean().backward()
    net.zero_grad(set_to_none=True)
    net.eval().requires_grad_(False)
    return counter.get_total_flops() // len(x)


def plot_latent_channels(z: Tensor, x: Tensor, path) -> None:
    """One row per image: the image, then each latent channel as a small grey map (diverging colours)."""
    n, c = z.shape[:2]
    fig, axes = plt.subplots(n, c + 1, figsize=(1.2 * (c + 1), 1.2 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(x[i, 0], cmap="gray", vmin=-1, vmax=1)
        for k in range(c):
            axes[i, k + 1].imshow(z[i, k], cmap="RdBu_r", vmin=-3, vmax=3)
        for ax in axes[i]:
            ax.set(xticks=[], yticks=[])
    axes[0, 0].set_title("image", fontsize=8)
    for k in range(c):
        axes[0, k + 1].set_title(f"channel {k}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_latent_projection(z: Tensor, labels: Tensor, path) -> None:
    """The flattened latents projected on their first two principal components, coloured by class."""
    flat = z.flatten(1).double()
    flat = flat - flat.mean(0)
    _, _, v = torch.linalg.svd(flat, full_matrices=False)
    xy = (flat @ v[:2].T).numpy()                                           # (N, 2)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels.numpy(), cmap="tab10", s=4, alpha=0.7)
    fig.colorbar(points, ax=ax, ticks=range(10), label="class")
    ax.set(xlabel="PC 1", ylabel="PC 2", title="scaled latents, first two principal components")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
