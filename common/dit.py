"""Diffusion transformers: a ViT over image patches as the denoiser, conditioned on t and y by adaLN-Zero.

    x (B, C, H, W) ─patchify─> (B, N, D) + fixed 2-D sin-cos positions ─blocks(t, y)─> final layer (B, N, p²C)
      ─unpatchify─> (B, C, H, W),        N = (H / p)(W / p) tokens of width D

The patch embedding is a convolution with kernel and stride p: one linear map of each p × p patch. The
conditioning vector is c = emb(t) + emb(y) (y's last index is the null class, "no label"), and there are three
ways to feed it in (Peebles & Xie 2023, §3.2 and Fig. 5):

    adaln-zero       each block regresses shift β, scale γ and gate α of its two branches from c,
                         (β1, γ1, α1, β2, γ2, α2) = W SiLU(c) + b
                         h ← h + α1 ⊙ Attn(LN(h) ⊙ (1 + γ1) + β1),   h ← h + α2 ⊙ MLP(LN(h) ⊙ (1 + γ2) + β2)
                     with W = b = 0 at initialisation: α = 0, so every block starts as the identity (the "Zero")
    in-context       emb(t) and emb(y) as two more tokens in front of the patches; plain pre-LN blocks
    cross-attention  plain pre-LN blocks with a cross-attention layer after self-attention: the patches attend
                     to the two tokens [emb(t), emb(y)]

The final layer (LN, adaptively modulated by c under adaLN-Zero, then a linear map to p²C values per token) is
zero-initialised in every variant, so a fresh DiT outputs 0. Attention is torch's nn.MultiheadAttention (through
F.scaled_dot_product_attention). Called as `model(x, t, y=None)` like common.nets.UNet, t in [0, 1] of shape (B,),
t = 0 data and t = 1 noise; registered, so a checkpoint rebuilds it (common.checkpoint.build_model).

References
    Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (DiT), arXiv:2212.09748.
    Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words" (ViT, patch embedding), arXiv:2010.11929.
    He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners" (the 2-D sin-cos table), arXiv:2111.06377.
    Perez et al. 2018, "FiLM" (feature-wise modulation), arXiv:1709.07871.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.config import require
from common.nets import TimeEmbedding, register

Tensor = torch.Tensor
CONDITIONINGS = ("adaln-zero", "in-context", "cross-attention")


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, H, W) -> (B, N, p·p·C): the p × p patches in row-major order, each flattened as (row, column, channel)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)          # (B, H/p, W/p, p, p, C)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: Tensor, p: int, channels: int, side: int) -> Tensor:
    """The inverse of `patchify` for a square image of `side` pixels: (B, N, p·p·C) -> (B, C, side, side)."""
    g = side // p                                                                  # patches per row and column
    x = tokens.reshape(len(tokens), g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, H/p, p, W/p, p)
    return x.reshape(len(tokens), channels, side, side)


def sincos_2d(side: int, dim: int) -> Tensor:
    """Fixed 2-D sin-cos position embeddings (side², dim), MAE's and DiT's table: the token at row i, column j
    (index i·side + j) gets, with ω_k = 10000^(−k / (dim/4)) for k < dim/4,

        e[k] = sin(j ω_k),  e[dim/4 + k] = cos(j ω_k),  e[dim/2 + k] = sin(i ω_k),  e[3dim/4 + k] = cos(i ω_k).
    """
    quarter = dim // 4
    omega = 10_000.0 ** (-torch.arange(quarter, dtype=torch.float64) / quarter)     # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    angles = [pos.flatten()[:, None] * omega for pos in (cols, rows)]               # (N, dim/4) each
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1).float()


def zero(layer: nn.Linear) -> nn.Linear:
    """The layer with weight and bias set to 0 (adaLN-Zero's regressions, the final projection)."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def feed_forward(dim: int, ratio: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def attend(attn: nn.MultiheadAttention, x: Tensor, context: Tensor | None = None) -> Tensor:
    """Multi-head attention of the tokens x (B, N, D) over `context` (B, K, D), itself when None."""
    context = x if context is None else context
    return attn(x, context, context, need_weights=False)[0]                        # (B, N, D)


def modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: h ⊙ (1 + γ) + β with γ, β (B, 1, D) regressed from c, one per sample (FiLM on a layer norm)."""
    return h * (1 + scale) + shift


class AdaLNZeroBlock(nn.Module):
    """A DiT block (Peebles & Xie, Fig. 3): LNs without parameters of their own, modulated and gated by c."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = feed_forward(dim, mlp_ratio)
        self.ada = zero(nn.Linear(dim, 6 * dim))                                    # c -> β1, γ1, α1, β2, γ2, α2

    def forward(self, h: Tensor, c: Tensor, tokens: Tensor | None = None) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c))[:, None].chunk(6, dim=-1)  # (B, 1, D)
        h = h + gate1 * attend(self.attn, modulate(self.norm1(h), shift1, scale1))
        return h + gate2 * self.mlp(modulate(self.norm2(h), shift2, scale2))


class Block(nn.Module):
    """A pre-LN transformer block (ViT's), with cross-attention to the conditioning tokens after self-attention
    when `cross` (the ablations: in-context tokens travel inside h and need none)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if cross else None
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True) if cross else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = feed_forward(dim, mlp_ratio)

    def forward(self, h: Tensor, c: Tensor, tokens: Tensor | None = None) -> Tensor:
        h = h + attend(self.attn, self.norm1(h))
        if self.cross is not None:
            h = h + attend(self.cross, self.norm_cross(h), tokens)                  # queries (B, N, D), keys (B, K, D)
        return h + self.mlp(self.norm2(h))


class FinalLayer(nn.Module):
    """LN, then a zero-initialised linear map to p·p·C values per token; under adaLN-Zero the LN is modulated
    by c (shift and scale, also regressed from zero)."""

    def __init__(self, dim: int, out: int, adaptive: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.ada = zero(nn.Linear(dim, 2 * dim)) if adaptive else None
        self.linear = zero(nn.Linear(dim, out))

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        h = self.norm(h)
        if self.ada is not None:
            shift, scale = self.ada(F.silu(c))[:, None].chunk(2, dim=-1)            # (B, 1, D) each
            h = modulate(h, shift, scale)
        return self.linear(h)


@dataclass
class DiTConfig:
    """Everything that fixes a DiT, so that a checkpoint's copy of it rebuilds the same network."""
    image_size: int = 28                   # side of the square input
    in_channels: int = 1
    patch: int = 4                         # p: N = (image_size / p)² tokens
    width: int = 64                        # D, the tokens' width (the paper's hidden size d)
    depth: int = 4                         # blocks
    heads: int = 4
    mlp_ratio: float = 4.0                 # the MLP's hidden width over D
    num_classes: int = 0                   # 0: unconditional; else classes 0..num_classes − 1 and a null class
    conditioning: str = "adaln-zero"       # one of CONDITIONINGS

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    def check(self) -> None:
        """Refuse a DiT that cannot be built (common.config.validate calls this)."""
        require(self.in_channels >= 1, "in_channels", "choose the data's channels (1 for MNIST, 3 for CIFAR-10)")
        require(self.image_size >= 1, "image_size", "choose the data's side in pixels (28 for MNIST)")
        require(self.patch >= 1 and self.image_size % self.patch == 0, "patch",
                f"choose a divisor of image_size={self.image_size}, e.g. 2 or 4 for 28")
        require(self.width >= 8 and self.width % 8 == 0, "width", "choose a multiple of 8 (the position table "
                "splits the width in four sin/cos blocks; the time embedding's width/4 features are sin/cos pairs)")
        require(self.depth >= 1, "depth", "choose at least 1 block")
        require(self.heads >= 1 and self.width % self.heads == 0, "heads", f"choose a divisor of width={self.width}")
        require(int(self.width * self.mlp_ratio) >= 1, "mlp_ratio", "choose a positive ratio, e.g. 4")
        require(self.num_classes >= 0, "num_classes", "choose 0 (unconditional) or the number of classes")
        require(self.conditioning in CONDITIONINGS, "conditioning", f"choose one of {', '.join(CONDITIONINGS)}")


@register
class DiT(nn.Module):
    """A diffusion transformer (Peebles & Xie 2023) with one of three conditionings (cfg.conditioning)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d, p, adaptive = cfg.width, cfg.patch, cfg.conditioning == "adaln-zero"
        self.embed = nn.Conv2d(cfg.in_channels, d, p, stride=p)                    # a linear map of each patch
        self.register_buffer("pos", sincos_2d(cfg.image_size // p, d), persistent=False)  # (N, D), fixed
        self.time = TimeEmbedding(d // 4)                                          # (B,) -> (B, D)
        self.classes = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes else None  # last: the null class
        self.blocks = nn.ModuleList(
            AdaLNZeroBlock(d, cfg.heads, cfg.mlp_ratio) if adaptive
            else Block(d, cfg.heads, cfg.mlp_ratio, cross=cfg.conditioning == "cross-attention")
            for _ in range(cfg.depth))
        self.final = FinalLayer(d, p * p * cfg.in_channels, adaptive)

    def condition(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The conditioning tokens (B, K, D): emb(t), then emb(y) when class-conditional (None: the null class)."""
        tokens = [self.time(t)]
        if self.classes is not None:
            null = self.classes.num_embeddings - 1
            tokens.append(self.classes(torch.full_like(t, null, dtype=torch.long) if y is None else y))
        return torch.stack(tokens, dim=1)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x (B, C, H, W), t (B,), y (B,) class labels or None -> (B, C, H, W)."""
        tokens = self.condition(t, y)                                              # (B, K, D)
        c = tokens.sum(dim=1)                                                      # (B, D): c = emb(t) + emb(y)
        h = self.embed(x).flatten(2).transpose(1, 2) + self.pos                    # (B, N, D)
        k = tokens.shape[1] if self.cfg.conditioning == "in-context" else 0
        if k:
            h = torch.cat([tokens.to(h.dtype), h], dim=1)                          # (B, K + N, D)
        for block in self.blocks:
            h = block(h, c, tokens)
        out = self.final(h[:, k:], c)                                              # (B, N, p·p·C)
        return unpatchify(out, self.cfg.patch, self.cfg.in_channels, self.cfg.image_size)
