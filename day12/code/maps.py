"""Which word attends where: the cross-attention maps of a text-to-image U-Net while it samples.

Each CrossAttention layer's weights softmax(Q Kᵀ/√d) give, for every image position, a distribution over the
caption's tokens; read per token, they are a map of where in the image that word is used (Hertz et al. 2022).
`attention_maps` records them with forward hooks (the sampler is untouched) and averages over heads, over the
layers at one resolution and over the sampling steps.

`own_object_share` turns the maps into one number for two-thing captions: each object word's mean attention on
the drawn thing the caption gives it, against its mean attention on the other drawn thing, as a share (0.5: the
word looks at both alike; 1: only at its own). The things are found in the generated image itself: its lit pixels
(the background is black), split into the two halves along the caption's axis.

Reference: Hertz et al. 2022, "Prompt-to-Prompt Image Editing with Cross Attention Control" (arXiv:2208.01626).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scenes import Scene

from common.nets import CrossAttention


def attention_maps(model, sample, tokens: torch.Tensor, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `sample(tokens) -> images` while recording the cross-attention of `model`'s layers at `side` px.
    Returns (images (B, 3, H, W), maps (B, L, side, side)): each token's attention, averaged over heads, layers and
    steps. Under guidance the network sees the batch twice; the first half (the captions, not ∅) is kept."""
    total, calls = torch.zeros(len(tokens), tokens.shape[1], side * side), 0

    def record(layer, args, output):
        nonlocal total, calls
        x, _, context = args
        if x.shape[-1] == side and context is not None:
            probs = layer.probabilities(x, context)[: len(tokens)].float().mean(1)   # (B, HW, L)
            total += probs.transpose(1, 2).cpu()
            calls += 1
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, CrossAttention)]
    try:
        images = sample(tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return images, (total / max(calls, 1)).reshape(len(tokens), -1, side, side)


def phrase_positions(caption: str) -> tuple[list[int], list[int]]:
    """Token positions of the first and second thing's words (size, colour, shape) in a two-thing caption: the
    first follows the first 'a', the second is the caption's last three words (+1 for <start>)."""
    words = caption.split()
    first = words.index("a") + 1
    return [first + 1 + k for k in range(3)], [len(words) - 3 + 1 + k for k in range(3)]


def halves(scene: Scene, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(side, side) bool masks of the halves where the caption puts its first- and second-named thing."""
    low = torch.zeros(side, side, dtype=torch.bool)                       # left, or top
    if scene.relation in ("left of", "right of"):
        low[:, : side // 2] = True
    else:
        low[: side // 2] = True
    return (low, ~low) if scene.relation in ("left of", "above") else (~low, low)


def own_object_share(maps: torch.Tensor, images: torch.Tensor, scenes: list[Scene],
                     captions: list[str]) -> float | None:
    """Mean over two-thing captions and their object words of a / (a + b): a the word's mean attention over the
    lit pixels in its thing's half, b over the lit pixels in the other half (images whose half is dark skipped)."""
    side = maps.shape[-1]
    lit = F.avg_pool2d((images.amax(1, keepdim=True) > -0.5).float(), images.shape[-1] // side)[:, 0]  # (B, s, s)
    shares = []
    for m, light, scene, text in zip(maps, lit, scenes, captions):
        if len(scene.things) != 2:
            continue
        own_half, other_half = halves(scene, side)
        for positions, own, other in zip(phrase_positions(text), (own_half, other_half), (other_half, own_half)):
            w_own, w_other = light * own, light * other                    # lit share of each cell, per half
            if w_own.sum() == 0 or w_other.sum() == 0:
                continue
            for p in positions:
                a, b = (m[p] * w_own).sum() / w_own.sum(), (m[p] * w_other).sum() / w_other.sum()
                shares.append((a / (a + b)).item())
    return sum(shares) / len(shares) if shares else None                  # None: no two lit halves anywhere
