"""Networks: time embeddings, a configurable U-Net for images and an MLP for 2-D points.

References
    Ronneberger et al. 2015, "U-Net" (arXiv:1505.04597); Ho et al. 2020 (DDPM's U-Net, Appendix B);
    Dhariwal & Nichol 2021, "Diffusion Models Beat GANs" (ADM: scale-shift norm, arXiv:2105.05233);
    Vaswani et al. 2017 (sinusoidal embeddings; attention); Rombach et al. 2022, "High-Resolution Image Synthesis
    with Latent Diffusion Models" (cross-attention conditioning, arXiv:2112.10752, §3.3).

Every network here is called as `model(x, t, y=None)` with t in [0, 1] of shape (B,); the U-Net also takes
an image-shaped condition `cond` and, when built with `context_dim`, a sequence of context tokens (say, the
words of a caption) that its cross-attention layers attend to (Rombach et al. 2022, Eq. 3). Networks register
under their class name (`@register`), so a checkpoint, which records that name and the network's config,
rebuilds them: common.checkpoint.build_model.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.config import require

Tensor = torch.Tensor

MODELS: dict[str, tuple[type[nn.Module], type]] = {}   # class name -> (network class, its config class)


def register(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: file a network under its class name with the config class its `__init__(cfg)` takes.

    Days register their own networks the same way (`@register` above the class); a checkpoint of one
    rebuilds wherever the defining module has been imported.
    """
    MODELS[cls.__name__] = (cls, typing.get_type_hints(cls.__init__)["cfg"])
    return cls


def sinusoidal(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """(B,) times -> (B, dim) sin/cos features at geometric frequencies (Vaswani et al. §3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = scale * t.float()[:, None] * freqs[None]                 # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TimeEmbedding(nn.Module):
    """t -> sinusoidal features -> 2-layer MLP, plus an optional class embedding (last index = "no class")."""

    def __init__(self, dim: int, num_classes: int = 0):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, 4 * dim))
        self.classes = nn.Embedding(num_classes + 1, 4 * dim) if num_classes else None

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.mlp(sinusoidal(t, self.dim))                         # (B, 4·dim)
        if self.classes is not None:
            null = self.classes.num_embeddings - 1
            y = torch.full_like(t, null, dtype=torch.long) if y is None else y
            emb = emb + self.classes(y)
        return emb


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """GN-SiLU-conv, then GN modulated by the embedding as (1 + scale)·h + shift (ADM), SiLU-conv; + skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Sequential(norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * c_out))
        self.norm2 = norm(c_out)
        self.conv2 = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(c_out, c_out, 3, padding=1))
        nn.init.zeros_(self.conv2[-1].weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2[-1].bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor, context: Context | None = None) -> Tensor:
        h = self.conv1(x)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        h = self.conv2(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions, through F.scaled_dot_product_attention."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None, context: Context | None = None) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        q, k, v = (z.transpose(-1, -2) for z in (q, k, v))               # (B, heads, HW, C/heads)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class Context(typing.NamedTuple):
    """What cross-attention attends to: tokens (B, L, D) and mask (B, L), True at real tokens, False at padding."""
    tokens: Tensor
    mask: Tensor


class CrossAttention(nn.Module):
    """Each position of the feature map attends over the context tokens (Rombach et al. 2022, Eq. 3):

        Q = W_Q norm(φ(x)),  K = W_K τ,  V = W_V τ,  out = x + W_O softmax(Q Kᵀ / √d_head + M) V

    with M = −∞ at padding tokens, so padding changes nothing. Without a context the layer is the identity:
    a U-Net with cross-attention then computes exactly what it computes without those layers.
    """

    def __init__(self, channels: int, context_dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity, like the residual blocks
        nn.init.zeros_(self.out.bias)

    def _qkv(self, x: Tensor, context: Context) -> tuple[Tensor, Tensor, Tensor]:
        b, c, h, w = x.shape
        q = self.q(self.norm(x)).reshape(b, self.heads, c // self.heads, h * w).transpose(-1, -2)  # (B, nh, HW, hs)
        k, v = self.kv(context.tokens).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return q, k.to(q.dtype), v.to(q.dtype)                                        # (B, nh, L, hs) each

    def forward(self, x: Tensor, emb: Tensor | None = None, context: Context | None = None) -> Tensor:
        if context is None:
            return x
        b, c, h, w = x.shape
        q, k, v = self._qkv(x, context)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=context.mask[:, None, None, :])  # (B, nh, HW, hs)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))

    def probabilities(self, x: Tensor, context: Context) -> Tensor:
        """The attention weights (B, heads, H·W, L): for each position, a distribution over the tokens."""
        q, k, _ = self._qkv(x, context)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        return logits.masked_fill(~context.mask[:, None, None, :], -math.inf).softmax(-1)


@dataclass
class UNetConfig:
    """Everything that fixes a U-Net, so that a checkpoint's copy of it rebuilds the same network."""
    in_channels: int = 1
    channels: int = 32                       # width at full resolution
    mults: tuple[int, ...] = (1, 2, 2)       # width multiplier per resolution; len - 1 downsamplings
    n_res: int = 2                           # residual blocks per resolution on the way down
    attn_res: tuple[int, ...] = (7,)         # sides (of the levels' feature maps) that get self-attention
    dropout: float = 0.0
    num_classes: int = 0                     # 0: unconditional
    image_size: int = 28                     # side of the square input; level l has side ceil(image_size / 2^l)
    out_channels: int = 0                    # output channels; 0: as many as in_channels (eps, x0, v, velocity)
    cond_channels: int = 0                   # channels of `cond`, concatenated to x before the stem (0: none)
    context_dim: int = 0                     # width of context tokens, attended wherever self-attention is (0: none)

    @property
    def sides(self) -> list[int]:
        """The feature maps' side at each level, as UNet.__init__ computes them (stride-2 downsampling)."""
        return [-(-self.image_size // 2 ** level) for level in range(len(self.mults))]

    def check(self) -> None:
        """Refuse a U-Net that cannot be built or would be degenerate (common.config.validate calls this)."""
        require(self.in_channels >= 1, "in_channels", "choose the data's channels (1 for MNIST, 3 for CIFAR-10)")
        require(self.image_size >= 1, "image_size", "choose the data's side in pixels (28 for MNIST)")
        require(len(self.mults) >= 1 and min(self.mults, default=0) >= 1, "mults",
                "choose one positive width multiplier per resolution, e.g. 1,2,2")
        require(self.n_res >= 1, "n_res", "choose at least 1 residual block per resolution")
        require(set(self.attn_res) <= set(self.sides), "attn_res",
                f"choose sides the levels have ({','.join(map(str, self.sides))}), or nothing for no attention")
        require(0 <= self.dropout < 1, "dropout", "choose a probability in [0, 1)")
        for key in ("num_classes", "out_channels", "cond_channels", "context_dim"):
            require(getattr(self, key) >= 0, key, "choose 0 (none) or a positive number")
        require(self.channels >= 2 and self.channels % 2 == 0, "channels",
                "choose an even width, e.g. 16 or 32 (the time embedding is made of sin/cos pairs)")
        require((why := self._unbuildable()) is None, "channels", f"{why}; choose channels a multiple of 8, e.g. 16")

    def _unbuildable(self) -> str | None:
        """Why UNet(self) cannot be built, None if it can. It is built on the meta device (no memory, no
        compute), so the real layers judge: each GroupNorm needs its width divisible by its min(8, width)
        groups (`norm`), each attention its width by its heads."""
        try:
            with torch.device("meta"):
                net = UNet(self)
        except ValueError as err:  # "num_channels (12) must be divisible by num_groups (8)"
            return f"GroupNorm: {err}"
        split = [(m.out.in_channels, m.heads) for m in net.modules()
                 if isinstance(m, Attention | CrossAttention) and m.out.in_channels % m.heads]
        return f"an attention layer cannot split width {split[0][0]} into {split[0][1]} heads" if split else None


@register
class UNet(nn.Module):
    """The DDPM/ADM U-Net: residual blocks with time (and class) conditioning, attention at low resolution.

    Attention follows each residual block of a level whose side is in cfg.attn_res (28 -> 28, 14, 7;
    32 -> 32, 16, 8, 4 with four levels), and always sits in the middle block, at the lowest resolution.
    With cfg.context_dim, cross-attention to the context tokens follows each self-attention layer.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        sizes = [-(-cfg.image_size // 2 ** level) for level in range(len(cfg.mults))]  # side per level (stride 2)
        self.embed = TimeEmbedding(ch, cfg.num_classes)
        self.stem = nn.Conv2d(cfg.in_channels + cfg.cond_channels, ch, 3, padding=1)
        self.down, skips = nn.ModuleList(), [ch]
        for level, mult in enumerate(cfg.mults):
            for _ in range(cfg.n_res):
                self.down.append(self._block(ch, cfg.channels * mult, emb_dim, sizes[level]))
                ch = cfg.channels * mult
                skips.append(ch)
            if level < len(cfg.mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, cfg.dropout), *self._attention(ch),
                                  ResBlock(ch, ch, emb_dim, cfg.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.mults))):
            for _ in range(cfg.n_res + 1):
                self.up.append(self._block(ch + skips.pop(), cfg.channels * mult, emb_dim, sizes[level]))
                ch = cfg.channels * mult
            if level > 0:
                self.up.append(Upsample(ch))
        out_channels = cfg.out_channels or cfg.in_channels
        self.head = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def _attention(self, channels: int) -> list[nn.Module]:
        """Self-attention, followed by cross-attention to the context when the U-Net takes one."""
        cross = [CrossAttention(channels, self.cfg.context_dim)] if self.cfg.context_dim else []
        return [Attention(channels), *cross]

    def _block(self, c_in: int, c_out: int, emb_dim: int, size: int) -> nn.Module:
        block = ResBlock(c_in, c_out, emb_dim, self.cfg.dropout)
        return Sequential2(block, *self._attention(c_out)) if size in self.cfg.attn_res else block

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, cond: Tensor | None = None,
                context: Context | None = None, residuals: list[Tensor] | None = None) -> Tensor:
        """x (B, in_channels, H, W), t (B,), y (B,) class labels or None; cond (B, cond_channels, H, W): an
        image-shaped condition (say, an upsampled low-resolution image) that the stem sees as extra input
        channels, torch.cat([x, cond], dim=1); context: Context(tokens (B, L, context_dim), mask (B, L)) for the
        cross-attention layers, or None (they are then skipped); residuals: tensors added to the skip connections
        (one per skip, in the order the down path makes them, stem first) and, last, to the middle block's output,
        as a ControlNet's zero convolutions feed them (Zhang et al. 2023, §3.2), or None.
        Returns (B, out_channels or in_channels, H, W)."""
        if (cond is None) != (self.cfg.cond_channels == 0):
            raise ValueError(f"this U-Net has cond_channels={self.cfg.cond_channels}: pass cond with exactly that many")
        if context is not None and context.tokens.shape[-1] != self.cfg.context_dim:
            raise ValueError(f"this U-Net has context_dim={self.cfg.context_dim}: pass tokens of that width")
        emb = self.embed(t, y)
        h = self.stem(x if cond is None else torch.cat([x, cond], dim=1))            # (B, channels, H, W)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb, context)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb, context)
        if residuals is not None:
            *skips, middle = residuals
            hs = [s + r for s, r in zip(hs, skips, strict=True)]
            h = h + middle
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h, emb, size=hs[-1].shape[-2:])
            else:
                h = layer(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.head(h)


class Sequential2(nn.Sequential):
    """nn.Sequential whose layers all take (x, emb, context)."""

    def forward(self, x: Tensor, emb: Tensor, context: Context | None = None) -> Tensor:
        for layer in self:
            x = layer(x, emb, context)
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None, context: Context | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None, size=None) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


@dataclass
class MLPConfig:
    dim: int = 2
    hidden: int = 128
    layers: int = 3
    num_classes: int = 0


@register
class MLP(nn.Module):
    """Residual MLP for low-dimensional points, conditioned on t by addition of its embedding."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = TimeEmbedding(cfg.hidden // 4, cfg.num_classes)   # -> (B, hidden)
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden))
                                    for _ in range(cfg.layers))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(cfg.hidden, cfg.dim))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.embed(t, y)
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
