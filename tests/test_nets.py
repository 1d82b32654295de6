"""The U-Net's configuration: defaults build today's network bit for bit; image size, output and condition
channels and attention placement do what UNetConfig says; the registry rebuilds any model from a checkpoint."""
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from common.checkpoint import build_model, describe
from common.nets import (
    MODELS,
    Attention,
    Downsample,
    ResBlock,
    Sequential2,
    TimeEmbedding,
    UNet,
    UNetConfig,
    Upsample,
    norm,
    register,
)


class OldUNet(nn.Module):
    """The U-Net as common/nets.py built it before UNetConfig held image_size, out_channels and cond_channels
    (verbatim, image_size an argument): the oracle that the defaults still build the same network."""

    def __init__(self, cfg: UNetConfig, image_size: int = 28):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.embed = TimeEmbedding(ch, cfg.num_classes)
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down, skips, size = nn.ModuleList(), [ch], image_size
        for level, mult in enumerate(cfg.mults):
            for _ in range(cfg.n_res):
                self.down.append(self._block(ch, cfg.channels * mult, emb_dim, size))
                ch = cfg.channels * mult
                skips.append(ch)
            if level < len(cfg.mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                size = (size + 1) // 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, cfg.dropout), Attention(ch),
                                  ResBlock(ch, ch, emb_dim, cfg.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.mults))):
            for _ in range(cfg.n_res + 1):
                self.up.append(self._block(ch + skips.pop(), cfg.channels * mult, emb_dim, size))
                ch = cfg.channels * mult
            if level > 0:
                size = size * 2
                self.up.append(Upsample(ch))
        self.head = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.in_channels, 3, padding=1))

    def _block(self, c_in, c_out, emb_dim, size):
        block = ResBlock(c_in, c_out, emb_dim, self.cfg.dropout)
        return Sequential2(block, Attention(c_out)) if size in self.cfg.attn_res else block

    def forward(self, x, t, y=None):
        emb = self.embed(t, y)
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h, emb, size=hs[-1].shape[-2:])
            else:
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
        return self.head(h)


def seeded(build, cfg):
    torch.manual_seed(0)
    return build(cfg)


@pytest.mark.parametrize("cfg", [UNetConfig(), UNetConfig(channels=16, n_res=1),
                                 UNetConfig(channels=64, attn_res=(7, 14), num_classes=10),
                                 UNetConfig(channels=8, mults=(1, 2), n_res=1, attn_res=())])
def test_defaults_build_the_old_unet_bit_for_bit(cfg, one_thread):
    new, old = seeded(UNet, cfg), seeded(OldUNet, cfg)
    new_state, old_state = new.state_dict(), old.state_dict()
    assert list(new_state) == list(old_state)                       # same parameters, same order
    for name, tensor in old_state.items():
        assert torch.equal(new_state[name], tensor), name           # same init under the same seed
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    with torch.no_grad():
        new.head[-1].weight.normal_()                                # a zero-initialised head would hide the body
        old.head[-1].weight.copy_(new.head[-1].weight)
        assert torch.equal(new(x, t), old(x, t))


def attention_sides(model: UNet, size: int, in_channels: int) -> list[int]:
    """The side of every feature map an Attention layer sees, in call order (a forward hook records them)."""
    sides = []
    hooks = [m.register_forward_hook(lambda m, inp, out: sides.append(inp[0].shape[-1]))
             for m in model.modules() if isinstance(m, Attention)]
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size), torch.rand(2))
    for h in hooks:
        h.remove()
    assert out.shape == (2, model.cfg.out_channels or in_channels, size, size)
    return sides


@pytest.mark.parametrize("cfg, expected", [
    # 32x32 (CIFAR): levels 32, 16, 8, 4; attention at 16 on the way down (2 blocks) and up (3 blocks), mid at 4
    (UNetConfig(in_channels=3, channels=8, mults=(1, 2, 2, 2), attn_res=(16,), image_size=32),
     [16] * 2 + [4] + [16] * 3),
    # 16x16 latents (4 channels): levels 16, 8, 4; attention at 8 and 4
    (UNetConfig(in_channels=4, channels=8, mults=(1, 2, 2), n_res=1, attn_res=(8, 4), image_size=16),
     [8, 4, 4, 4, 4, 8, 8]),
    # an odd side: levels 30, 15, 8; the way up must meet 15 again (doubling 8 would give 16)
    (UNetConfig(channels=8, n_res=1, attn_res=(15,), image_size=30), [15, 8, 15, 15]),
])
def test_attention_sits_at_the_configured_sides_for_any_image_size(cfg, expected, one_thread):
    assert attention_sides(UNet(cfg), cfg.image_size, cfg.in_channels) == expected


def test_out_channels_zero_means_as_many_as_in(one_thread):
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    assert UNet(UNetConfig(in_channels=3, channels=8, mults=(1,), attn_res=(), image_size=8))(x, t).shape[1] == 3
    assert UNet(UNetConfig(in_channels=3, channels=8, mults=(1,), attn_res=(), image_size=8, out_channels=6))(
        x, t).shape[1] == 6


def test_cond_is_concatenated_to_x_on_the_channel_axis(one_thread):
    """A U-Net with cond_channels=2 is, weight for weight, a 3-channel-input U-Net fed torch.cat([x, cond])."""
    shape = dict(channels=8, mults=(1, 2), n_res=1, attn_res=(4,), image_size=8)
    conditioned = seeded(UNet, UNetConfig(in_channels=1, cond_channels=2, **shape))
    wide = seeded(UNet, UNetConfig(in_channels=3, out_channels=1, **shape))
    wide.load_state_dict(conditioned.state_dict())
    with torch.no_grad():
        for model in (conditioned, wide):
            model.head[-1].weight.fill_(0.01)
    x, cond, t = torch.randn(2, 1, 8, 8), torch.randn(2, 2, 8, 8), torch.rand(2)
    assert torch.equal(conditioned(x, t, cond=cond), wide(torch.cat([x, cond], dim=1), t))
    with pytest.raises(ValueError, match="cond_channels=2"):
        conditioned(x, t)


# --- the registry ---------------------------------------------------------------------------------------

@dataclass
class PairConfig:
    """A day's model whose config nests a UNetConfig and holds a tuple of its own."""
    unet: UNetConfig = field(default_factory=UNetConfig)
    scales: tuple[float, ...] = (1.0,)


@register
class Pair(nn.Module):
    def __init__(self, cfg: PairConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = UNet(cfg.unet)
        self.scales = nn.Parameter(torch.tensor(cfg.scales))

    def forward(self, x, t, y=None):
        return self.unet(x, t) * self.scales.sum()


def as_checkpoint(model: nn.Module) -> dict:
    return {**describe(model), "model": model.state_dict()}


def test_registered_models_rebuild_from_a_checkpoint_with_nested_and_tuple_fields(one_thread):
    assert MODELS["UNet"] == (UNet, UNetConfig) and MODELS["Pair"] == (Pair, PairConfig)
    cfg = PairConfig(UNetConfig(in_channels=3, channels=8, mults=(1, 2), attn_res=(16,), image_size=32,
                                out_channels=6, cond_channels=0), scales=(0.5, 2.0))
    model = Pair(cfg)
    ckpt = as_checkpoint(model)
    assert ckpt["model_config"]["unet"]["mults"] == [1, 2]         # plain data: what a checkpoint holds
    rebuilt = build_model(ckpt)
    assert rebuilt.cfg == cfg                                        # tuples are tuples again, the UNetConfig too
    x, t = torch.randn(1, 3, 32, 32), torch.rand(1)
    assert torch.equal(rebuilt(x, t), model(x, t))


def test_a_checkpoint_from_before_the_new_fields_still_rebuilds(one_thread):
    old = UNetConfig(channels=8, n_res=1)
    ckpt = {**as_checkpoint(seeded(OldUNet, old)), "model_class": "UNet"}  # the old class's name
    for key in ("image_size", "out_channels", "cond_channels"):      # what an old checkpoint did not record
        del ckpt["model_config"][key]
    rebuilt = build_model(ckpt)
    assert rebuilt.cfg == old
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), ckpt["model"].values()))
