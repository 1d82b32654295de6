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
    Context,
    CrossAttention,
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
    for key in ("image_size", "out_channels", "cond_channels", "context_dim"):  # what an old checkpoint lacked
        del ckpt["model_config"][key]
    rebuilt = build_model(ckpt)
    assert rebuilt.cfg == old
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), ckpt["model"].values()))


# --- cross-attention (Rombach et al. 2022, Eq. 3) ---------------------------------------------------------

def live_cross_attention(channels: int = 8, context_dim: int = 6) -> CrossAttention:
    """A CrossAttention whose zero-initialised output projection is made non-zero, so its output shows."""
    torch.manual_seed(0)
    layer = CrossAttention(channels, context_dim, heads=2).double()
    with torch.no_grad():
        layer.out.weight.normal_()
        layer.out.bias.normal_()
    return layer


def test_cross_attention_with_one_key_is_the_same_linear_map_of_it_at_every_position(one_thread):
    """softmax over one key is 1: every position receives W_O (W_V k + b_V) + b_O, whatever its query."""
    layer = live_cross_attention()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    k = torch.randn(2, 1, 6, dtype=torch.float64)
    with torch.no_grad():
        added = layer(x, context=Context(k, torch.ones(2, 1, dtype=torch.bool))) - x        # (B, C, H, W)
        w_v, b_v = layer.kv.weight[8:], layer.kv.bias[8:]                                  # the V half
        expected = (k[:, 0] @ w_v.T + b_v) @ layer.out.weight[:, :, 0, 0].T + layer.out.bias   # (B, C)
    torch.testing.assert_close(added, expected[:, :, None, None].expand_as(added), rtol=1e-10, atol=1e-10)


def test_cross_attention_ignores_padding_whatever_it_holds(one_thread):
    layer = live_cross_attention()
    x = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    tokens = torch.randn(3, 4, 6, dtype=torch.float64)
    lengths = torch.tensor([1, 3, 4])
    mask = torch.arange(4)[None] < lengths[:, None]                                         # (B, L)
    padded = torch.cat([tokens, 1e3 * torch.randn(3, 5, 6, dtype=torch.float64)], dim=1)  # 5 pad tokens
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        short = layer(x, context=Context(tokens, mask))
        long = layer(x, context=Context(padded, padded_mask))
        each = torch.cat([layer(x[i:i + 1], context=Context(tokens[i:i + 1, :n], mask[i:i + 1, :n]))
                          for i, n in enumerate(lengths.tolist())])                          # no padding at all
        probs = layer.probabilities(x, Context(padded, padded_mask))
    torch.testing.assert_close(long, short, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(short, each, rtol=1e-10, atol=1e-10)
    assert probs.shape == (3, 2, 16, 9)
    assert torch.all(probs[..., 4:] == 0)                                                  # no weight on padding
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 16, dtype=torch.float64))


def test_cross_attention_output_is_its_probabilities_times_the_values(one_thread):
    """The fused F.scaled_dot_product_attention path against softmax(QKᵀ/√d) V written out."""
    layer = live_cross_attention()
    x, tokens = torch.randn(2, 8, 3, 3, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    context = Context(tokens, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    with torch.no_grad():
        v = layer.kv(tokens)[..., 8:].reshape(2, 5, 2, 4).transpose(1, 2)                  # (B, heads, L, hs)
        y = layer.probabilities(x, context) @ v                                             # (B, heads, HW, hs)
        expected = x + layer.out(y.transpose(-1, -2).reshape(2, 8, 3, 3))
        torch.testing.assert_close(layer(x, context=context), expected, rtol=1e-10, atol=1e-10)


def test_a_unet_with_cross_attention_and_no_context_is_the_unet_without_it(one_thread):
    """context=None skips the cross-attention layers: the remaining weights compute what a U-Net built without
    them computes; given a context, the output changes."""
    shape = dict(in_channels=3, channels=8, mults=(1, 2), n_res=1, attn_res=(4,), image_size=8)
    texted = seeded(UNet, UNetConfig(context_dim=6, **shape))
    plain_unet = UNet(UNetConfig(**shape))
    cross = [name + "." for name, m in texted.named_modules() if isinstance(m, CrossAttention)]
    assert len(cross) == 4                                                     # down 1, mid 1, up 2 at side 4
    shared = [p for name, p in texted.named_parameters() if not name.startswith(tuple(cross))]
    assert [p.shape for p in shared] == [p.shape for p in plain_unet.parameters()]  # the same network, in order
    with torch.no_grad():
        for mine, theirs in zip(plain_unet.parameters(), shared):
            mine.copy_(theirs)
    with torch.no_grad():
        for model in (texted, plain_unet):
            model.head[-1].weight.fill_(0.01)
        for m in texted.modules():
            if isinstance(m, CrossAttention):
                m.out.weight.normal_()
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    context = Context(torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(texted(x, t), plain_unet(x, t))
        assert not torch.allclose(texted(x, t, context=context), texted(x, t))
    with pytest.raises(ValueError, match="context_dim=6"):
        texted(x, t, context=Context(torch.randn(2, 3, 5), torch.ones(2, 3, dtype=torch.bool)))


# --- residuals: the hook a ControlNet feeds (day 26) ----------------------------------------------------

def test_residuals_add_to_the_skip_connections_and_the_middle_output(one_thread):
    """residuals=None and all-zero residuals are the plain forward bit for bit. A residual on the stem's skip and
    one on the middle output are what hooks compute that add them where they act: to the middle block's output, and
    to the skip half of the last up block's input (the only layer that reads the stem's skip)."""
    net = seeded(UNet, UNetConfig(channels=8, mults=(1, 2), n_res=1, attn_res=(4,), image_size=8))
    with torch.no_grad():
        for p in net.parameters():  # fresh blocks are identities (zero-initialised): make every layer count
            p.add_(0.2 * torch.randn_like(p))
    shapes = [(8, 8, 8), (8, 8, 8), (8, 4, 4), (16, 4, 4), (16, 4, 4)]  # stem, block, downsample, block; middle
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    zeros = [torch.zeros(2, *s) for s in shapes]
    residuals = [torch.randn(2, *s) if i in (0, 4) else z for i, (s, z) in enumerate(zip(shapes, zeros))]
    with torch.no_grad():
        plain = net(x, t)
        assert torch.equal(net(x, t, residuals=None), plain) and torch.equal(net(x, t, residuals=zeros), plain)
        fed = net(x, t, residuals=residuals)
        hooks = [net.mid[-1].register_forward_hook(lambda m, args, out: out + residuals[4]),
                 net.up[-1].register_forward_pre_hook(
                     lambda m, args: (torch.cat([args[0][:, :-8], args[0][:, -8:] + residuals[0]], 1), *args[1:]))]
        hooked = net(x, t)
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(fed, hooked, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(fed, plain, atol=1e-3)
