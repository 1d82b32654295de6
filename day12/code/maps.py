"""Which word attends where: the cross-attention maps of a text-to-image U-Net while it samples.

Each CrossAttention layer's weights softmax(Q Kᵀ/√d) give, for every image position, a distribution over the
caption's tokens; read per token, they are a map of where in the image that word is used (Hertz et al. 2022).
`attention_maps` records them with forward hooks (the sampler is untouched) and averages over heads, over the
layers at one resolution and over the sampling steps.

`own_half_share` turns the maps into one number for two-thing captions: the share of each object word's
attention that falls in the half of the image where the caption puts its thing (0.5: no idea where it goes).

Reference: Hertz et al. 2022, "Prompt-to-Prompt Image Editing with Cross Attention Control" (arXiv:2208.01626).
"""
from __future__ import annotations

import torch
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


def own_half_share(maps: torch.Tensor, scenes: list[Scene], captions: list[str]) -> float:
    """Mean share of an object word's attention inside its thing's half of the image (two-thing captions)."""
    shares = []
    side = maps.shape[-1]
    for m, scene, text in zip(maps, scenes, captions):
        if len(scene.things) != 2:
            continue
        axis = 0 if scene.relation in ("left of", "right of") else 1
        first_is_low = scene.relation in ("left of", "above")              # the first-named thing left / on top
        low = torch.zeros(side, side, dtype=torch.bool)
        if axis == 0:
            low[:, : side // 2] = True
        else:
            low[: side // 2] = True
        for positions, half in zip(phrase_positions(text), (low, ~low) if first_is_low else (~low, low)):
            for p in positions:
                shares.append((m[p][half].sum() / m[p].sum()).item())
    return sum(shares) / len(shares) if shares else float("nan")
