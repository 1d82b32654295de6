"""The text side: a word tokenizer, a small transformer text encoder, and the U-Net that attends to it.

    tokens = tokenizer.encode(captions)            # (B, L) word ids; 1 = <start>, 0 = padding
    context = encoder(tokens)                      # Context(tokens (B, L, D), mask (B, L))
    model(x_t, t, y=tokens)                        # TextToImage: the U-Net's cross-attention reads the context

Every caption begins with <start>, so even the empty caption "" has one token to attend to: it is the null
caption ∅ of classifier-free guidance (the role Stable Diffusion gives the encoding of ""). The encoder is
trained jointly with the U-Net, as in LDM's text-to-image model (a pretrained CLIP/T5 encoder is the usual
choice when one can be downloaded; real_data.py loads a local CLIP).

References: Vaswani et al. 2017 (the transformer encoder, arXiv:1706.03762); Rombach et al. 2022 (LDM §3.3,
τ_θ trained jointly with the denoiser, arXiv:2112.10752); Ho & Salimans 2022 (the null condition).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from common.nets import Context, UNet, UNetConfig, register

PAD, START, UNKNOWN = "<pad>", "<start>", "<unk>"


class Tokenizer:
    """Words -> ids from a fixed vocabulary: 0 <pad>, 1 <start>, 2 <unk>, then the words in the order given."""

    def __init__(self, words: list[str], length: int):
        self.words = [PAD, START, UNKNOWN, *words]
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.length = length

    def encode(self, captions: list[str]) -> torch.Tensor:
        """(B, length) ids: <start>, the caption's words (unknown ones as <unk>, cut at `length`), padding."""
        rows = torch.zeros(len(captions), self.length, dtype=torch.long)
        for i, text in enumerate(captions):
            ids = [self.ids[START], *(self.ids.get(w, self.ids[UNKNOWN]) for w in text.lower().split())]
            rows[i, :min(len(ids), self.length)] = torch.tensor(ids[:self.length])
        return rows

    def decode(self, row: torch.Tensor) -> list[str]:
        """The words of one row of ids, <start> and padding dropped."""
        return [self.words[i] for i in row.tolist() if i >= self.ids[UNKNOWN]]

    @property
    def null(self) -> torch.Tensor:
        """The empty caption's ids (length,): ∅ of classifier-free guidance."""
        return self.encode([""])[0]


@dataclass
class TextEncoderConfig:
    vocab_size: int = 46              # the tokenizer's words, <pad>, <start> and <unk>
    length: int = 16                  # tokens per caption, <start> included
    dim: int = 64                     # width of the context tokens the U-Net attends to
    layers: int = 2
    heads: int = 4


class TextEncoder(nn.Module):
    """τ_θ: token and position embeddings, a pre-norm transformer encoder that ignores padding, a final norm."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.words = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.positions = nn.Parameter(torch.randn(cfg.length, cfg.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, tokens: torch.Tensor) -> Context:
        mask = tokens != 0                                                    # (B, L): True at real tokens
        h = self.words(tokens) + self.positions[: tokens.shape[1]]           # (B, L, D)
        return Context(self.norm(self.encoder(h, src_key_padding_mask=~mask)), mask)


@dataclass
class TextToImageConfig:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=3, image_size=32, context_dim=64))
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)


@register
class TextToImage(nn.Module):
    """ε_θ(x_t, t, τ_θ(y)): the common U-Net with cross-attention, reading the jointly trained text encoder."""

    def __init__(self, cfg: TextToImageConfig):
        super().__init__()
        self.cfg = cfg
        self.text = TextEncoder(cfg.text)
        self.unet = UNet(cfg.unet)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W), t (B,), y (B, L) token ids -> the U-Net's prediction (B, 3, H, W)."""
        return self.unet(x, t, context=self.text(y))
