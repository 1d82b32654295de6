"""A factorised space-time U-Net: day 6's U-Net on every frame, and temporal attention across the frames.

A clip x is (B, F, C, H, W). The spatial layers (common.nets: residual blocks, self-attention) see B·F independent
images, the frames folded into the batch. After each spatial attention layer (the low resolutions, cfg.unet.attn_res,
and the middle block) a `TemporalAttention` layer lets the frames talk: the H·W positions are folded into the batch
and each position attends over its F frames, with a sinusoidal frame-index embedding added to the queries and keys so
that the layer knows which frame comes first. Its output projection starts at zero, so the untrained network is
exactly frame-independent (Ho et al. 2022 §3; Singer et al. 2023 initialise their temporal layers the same way).
`temporal=False` removes these layers: the frame-independent baseline, the same per-frame network.

The network also takes a frame mask m (B, F), 1 at frames that are given (x holds the clean frame there), as one
extra input channel per frame: with m = 0 it generates whole clips, with m = (1, 0, ..., 0) the rest of a clip from
its first frame.

References
    Ho, Salimans, Gritsenko, Chan, Norouzi & Fleet 2022, "Video Diffusion Models", arXiv:2204.03458.
    Singer et al. 2023, "Make-A-Video: Text-to-Video Generation without Text-Video Data", arXiv:2209.14792.
    Vaswani et al. 2017, "Attention Is All You Need" (sinusoidal positions, §3.5), arXiv:1706.03762.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from common.config import require
from common.nets import Attention, Sequential2, UNet, UNetConfig, norm, register, sinusoidal

Tensor = torch.Tensor


class TemporalAttention(nn.Module):
    """Self-attention over the F frames at each spatial position: (B·F, C, h, w) -> (B·F, C, h, w).

        y = x + W_O softmax(Q Kᵀ / √d) V,   Q, K, V = W norm(x) (+ frame embedding e_f for Q and K)

    Without the frame embedding the layer is permutation-equivariant in the frames: shuffling the input's frames
    shuffles its output the same way. With it, the frames have an order.
    """

    def __init__(self, channels: int, frames: int, heads: int = 4, frame_embedding: bool = True):
        super().__init__()
        self.frames, self.heads = frames, heads
        self.norm = norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)  # starts as the identity: the net begins frame-independent
        nn.init.zeros_(self.out.bias)
        index = sinusoidal(torch.arange(frames), channels, scale=1.0)              # (F, C)
        self.register_buffer("index", index if frame_embedding else torch.zeros_like(index), persistent=False)

    def forward(self, x: Tensor, emb: Tensor | None = None, context=None) -> Tensor:
        bf, c, h, w = x.shape
        f = self.frames
        seq = self.norm(x).reshape(bf // f, f, c, h * w).permute(0, 3, 1, 2).reshape(-1, f, c)   # (B·hw, F, C)
        q, k, v = self.qkv(seq).chunk(3, dim=-1)
        q, k = q + self.index.to(q), k + self.index.to(k)
        q, k, v = (z.reshape(-1, f, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))  # (B·hw,nh,F,hs)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, f, c)             # (B·hw, F, C)
        y = self.out(y).reshape(bf // f, h * w, f, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return x + y


@dataclass
class VideoUNetConfig:
    """The per-frame U-Net (its cond channel carries the frame mask), the clip length and the temporal layers."""
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(image_size=32, channels=16, n_res=1, attn_res=(8,),
                                                                cond_channels=1))
    frames: int = 8
    temporal: bool = True              # False: the frame-independent baseline
    frame_embedding: bool = True       # sinusoidal frame index in the temporal attention
    heads: int = 4                     # of the temporal attention

    def check(self) -> None:
        require(self.frames >= 2, "frames", "choose 2 or more frames")
        require(self.unet.cond_channels == 1, "unet.cond_channels", "choose 1 (the frame-mask channel)")
        require(self.unet.context_dim == 0 and self.unet.num_classes == 0, "unet.context_dim",
                "choose 0: the video network takes no text or class")
        require(len(self.unet.attn_res) >= 1 or not self.temporal, "unet.attn_res",
                "choose at least one side: the temporal layers sit where spatial attention is")


@register
class VideoUNet(nn.Module):
    """model(x (B, F, C, H, W), t (B,), mask (B, F) or None) -> velocity (B, F, C, H, W)."""

    def __init__(self, cfg: VideoUNetConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = UNet(cfg.unet)
        if cfg.temporal:
            add_temporal_layers(self.unet, cfg)

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        b, f = x.shape[:2]
        mask = torch.zeros(b, f, device=x.device) if mask is None else mask
        cond = mask.to(x)[:, :, None, None, None].expand(b, f, 1, *x.shape[-2:])    # (B, F, 1, H, W)
        out = self.unet(x.flatten(0, 1), t.repeat_interleave(f), cond=cond.flatten(0, 1))  # (B·F, C, H, W)
        return out.unflatten(0, (b, f))


def add_temporal_layers(unet: UNet, cfg: VideoUNetConfig) -> None:
    """Follow every spatial attention layer of `unet` with a TemporalAttention of the same width, in place."""
    spots = [(parent, name, child) for parent in unet.modules() for name, child in parent.named_children()
             if isinstance(child, Attention)]
    for parent, name, attention in spots:
        temporal = TemporalAttention(attention.out.in_channels, cfg.frames, cfg.heads, cfg.frame_embedding)
        setattr(parent, name, Sequential2(attention, temporal))
