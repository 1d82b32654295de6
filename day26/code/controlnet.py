"""ControlNet: a trainable copy of a frozen U-Net's encoder that steers it through zero convolutions.

For a frozen block F(·; Θ), a trainable copy F(·; Θc) initialised to Θc = Θ and 1 × 1 convolutions Z whose weights
and biases start at zero, Zhang et al. (2023, Eq. 2) compute

    y_c = F(x; Θ) + Z(F(x + Z(c; Θz1); Θc); Θz2).

On the U-Net: the copy spans the time embedding, the input convolution, the down path and the middle block; each
of its feature maps passes through a zero conv and is added to the frozen U-Net's skip connection at the same
place, the last to the middle block's output (common.nets.UNet's `residuals`). A small condition encoder maps the
control image c to the first feature width and enters, through a zero conv too, where the copy's input conv ends.
At initialisation every zero conv outputs exactly 0, so the combined model *is* the base model; yet
∂L/∂W = (∂L/∂y) hᵀ ≠ 0 for a zero conv y = W h + b with input h ≠ 0, so the zero convs move at the first step, and
after it the gradient reaches the copy through Wᵀ ≠ 0.

    net = ControlNet.from_base(base)                          # the copy starts as the base's encoder
    model = controlled(base, {"edges": net}, scale=1.0)       # a network (x_t, t, edges=c) -> the base's output

Several ControlNets at once add their residuals (Multi-ControlNet); a control scale s multiplies them all (s = 0
is the base model).

Reference: Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models",
arXiv:2302.05543 (§3.1–3.2, Fig. 2–3; multiple conditions and the control strength, §4).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from common.nets import UNet, UNetConfig, register

Tensor = torch.Tensor


def zero_conv(channels: int) -> nn.Conv2d:
    """A 1 × 1 convolution with weight and bias zero: outputs 0 until it is trained (Zhang et al., §3.1)."""
    conv = nn.Conv2d(channels, channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def width(layer: nn.Module) -> int:
    """The channels a down-path layer outputs: those of its last convolution (a residual block's, an attention
    layer's output projection, or a downsampling conv's)."""
    return [m for m in layer.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


@dataclass
class ControlNetConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)   # the base U-Net's config: the copy is its encoder
    hint_channels: int = 1                                  # channels of the control image
    hint_width: int = 16                                    # hidden width of the condition encoder


@register
class ControlNet(nn.Module):
    """The trainable copy, the condition encoder and the zero convs; returns the residuals for the frozen U-Net."""

    def __init__(self, cfg: ControlNetConfig):
        super().__init__()
        self.cfg = cfg
        unet = UNet(cfg.unet)                                # its encoder's layers; the decoder is left behind
        self.embed, self.stem, self.down, self.mid = unet.embed, unet.stem, unet.down, unet.mid
        ch, hidden = cfg.unet.channels, cfg.hint_width
        self.hint = nn.Sequential(                           # E_c: the control image -> the first feature width
            nn.Conv2d(cfg.hint_channels, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, ch, 3, padding=1), zero_conv(ch))            # Z(c; Θz1)
        widths = [ch, *(width(layer) for layer in self.down), width(self.mid)]
        self.zero = nn.ModuleList(zero_conv(w) for w in widths)           # Z(·; Θz2), one per skip and the middle

    @classmethod
    def from_base(cls, base: UNet, hint_width: int = 16) -> ControlNet:
        """A ControlNet for `base` whose copy starts from the base's weights (Θc = Θ)."""
        net = cls(ControlNetConfig(base.cfg, hint_width=hint_width)).to(next(base.parameters()).device)
        for name in ("embed", "stem", "down", "mid"):
            getattr(net, name).load_state_dict(getattr(base, name).state_dict())
        return net

    def forward(self, x: Tensor, t: Tensor, control: Tensor) -> list[Tensor]:
        """x (B, C, H, W), t (B,), control (B, hint_channels, H, W) -> one residual per skip of the base U-Net,
        then one for its middle output, each (B, width, side, side), as UNet.forward's `residuals` takes them."""
        emb = self.embed(t)
        h = self.stem(x) + self.hint(control)                # x + Z(c): the control enters the copy (Eq. 2)
        features = [h]
        for layer in self.down:
            h = layer(h, emb)
            features.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        features.append(h)
        return [zero(f) for zero, f in zip(self.zero, features)]


def controlled(base: UNet, nets: dict[str, Callable], scale: float = 1.0) -> Callable[..., Tensor]:
    """The base steered by ControlNets, as a network (x_t, t, **controls) -> base output: each control named by
    its net's key, residuals = s · Σ_k net_k(x_t, t, c_k) (Multi-ControlNet sums them). s = 0 is the base itself."""
    def model(x: Tensor, t: Tensor, **controls: Tensor) -> Tensor:
        if scale == 0:
            return base(x, t)
        per_net = [nets[name](x, t, c) for name, c in controls.items()]
        return base(x, t, residuals=[scale * sum(r) for r in zip(*per_net)])
    return model
