"""The diffusion transformer (common.dit): a fresh adaLN-Zero block is exactly the identity and a fresh DiT outputs
exactly zero; patchify and unpatchify are inverse and agree with the convolutional patch embedding; the position
table is the sin-cos formula; the label reaches the output once training has moved the zero-initialised layers;
the configuration refuses what cannot be built; a checkpoint rebuilds the network."""
import math

import pytest
import torch

from common.checkpoint import build_model, describe, load_model, save_checkpoint
from common.config import UserError, validate
from common.diffusion import diffusion_loss
from common.dit import CONDITIONINGS, AdaLNZeroBlock, DiT, DiTConfig, patchify, sincos_2d, unpatchify
from common.nets import MODELS
from common.paths import Linear


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small(conditioning: str = "adaln-zero", **kw) -> DiT:
    torch.manual_seed(0)
    return DiT(DiTConfig(width=16, depth=2, heads=2, num_classes=10, conditioning=conditioning, **kw))


def wake(model: DiT) -> DiT:
    """The DiT with every zero-initialised weight redrawn, so that each layer's contribution shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.any():
                p.normal_(0, 0.2, generator=gen(len(name)))
    return model


def batch(n: int = 4, channels: int = 1, side: int = 28):
    return torch.randn(n, channels, side, side, generator=gen(1)), torch.rand(n, generator=gen(2)), torch.arange(n)


def test_a_fresh_adaln_zero_block_is_exactly_the_identity(one_thread):
    """The gates α1 = α2 = 0 at initialisation: h + 0 · branch is h bit for bit, whatever h and c are. With the
    regression's weights non-zero the block does change h (so the check is not vacuous)."""
    block = AdaLNZeroBlock(16, 2, 4.0)
    h, c = torch.randn(3, 9, 16, generator=gen(3)), torch.randn(3, 16, generator=gen(4))
    assert torch.equal(block(h, c), h)
    with torch.no_grad():
        block.ada.weight.normal_(generator=gen(5))
    assert not torch.allclose(block(h, c), h)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_a_fresh_dit_outputs_exactly_zero_of_the_right_shape(conditioning, one_thread):
    x, t, y = batch()
    out = small(conditioning)(x, t, y)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))
    model = wake(small(conditioning))
    assert model(x, t, y).shape == x.shape and model(x, t).shape == x.shape     # y = None: the null class
    rgb = wake(DiT(DiTConfig(image_size=32, in_channels=3, patch=8, width=16, depth=1, heads=2,
                             conditioning=conditioning)))
    x3 = torch.randn(2, 3, 32, 32, generator=gen(6))
    assert rgb(x3, torch.rand(2)).shape == (2, 3, 32, 32)


def test_patchify_and_unpatchify_are_inverse_and_agree_with_the_patch_embedding(one_thread):
    """Token i·(H/p) + j is the patch at rows i·p.., columns j·p.., flattened as (row, column, channel); the
    stride-p convolution is the linear map of those vectors (its weight reordered to the same layout)."""
    x = torch.randn(2, 3, 12, 12, generator=gen(7), dtype=torch.float64)
    tokens = patchify(x, 4)                                                        # (2, 9, 48)
    assert tokens.shape == (2, 9, 48)
    assert torch.equal(unpatchify(tokens, 4, 3, 12), x)
    assert torch.equal(patchify(unpatchify(tokens, 4, 3, 12), 4), tokens)
    assert torch.equal(tokens[:, 1 * 3 + 2], x[:, :, 4:8, 8:12].permute(0, 2, 3, 1).flatten(1))   # row 1, column 2
    conv = torch.nn.Conv2d(3, 5, 4, stride=4).double()
    weight = conv.weight.permute(0, 2, 3, 1).reshape(5, -1)                        # (D, p·p·C), (row, col, chan)
    torch.testing.assert_close(conv(x).flatten(2).transpose(1, 2), tokens @ weight.T + conv.bias,
                               rtol=1e-12, atol=1e-12)


def test_the_position_table_is_the_sin_cos_formula():
    """Entries of the MAE/DiT table: for token (i, j) and ω_k = 10000^(−k / (D/4)), sin and cos of j ω_k, then of
    i ω_k; fixed (a buffer, not a parameter, and not saved in checkpoints)."""
    side, dim = 7, 16
    table = sincos_2d(side, dim)
    assert table.shape == (side * side, dim)
    for i, j, k in ((0, 0, 0), (2, 5, 1), (6, 3, 3), (4, 1, 2)):
        w = 10_000 ** (-k / (dim // 4))
        row = table[i * side + j]
        expected = [math.sin(j * w), math.cos(j * w), math.sin(i * w), math.cos(i * w)]
        got = [row[k], row[dim // 4 + k], row[dim // 2 + k], row[3 * dim // 4 + k]]
        assert [float(g) for g in got] == pytest.approx(expected, abs=1e-6)
    model = small()
    assert torch.equal(model.pos, sincos_2d(7, 16))
    assert "pos" not in dict(model.named_parameters()) and "pos" not in model.state_dict()


def train_steps(model: DiT, n: int) -> DiT:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x0 = torch.randn(8, 1, 28, 28, generator=gen(8))
    for step in range(n):
        loss = diffusion_loss(model, x0, Linear(), "velocity", gen(100 + step), y=torch.arange(8))[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_the_label_reaches_the_output_once_training_moves_the_zero_layers(conditioning, one_thread):
    """The final projection is 0, so the first step's gradient reaches nothing below it: under adaLN-Zero the
    output after one step is the same for every label (the blocks are still the identity and c enters only
    through them and the final modulation), while the token conditionings already carry it; after a second
    step every conditioning answers the label."""
    x, t = batch(2)[:2]
    def outputs(model):
        with torch.no_grad():
            return model(x, t, torch.tensor([3, 3])), model(x, t, torch.tensor([7, 7]))
    a, b = outputs(train_steps(small(conditioning), 1))
    assert torch.equal(a, b) == (conditioning == "adaln-zero")
    a, b = outputs(train_steps(small(conditioning), 2))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("change, key", [(dict(patch=5), "patch"), (dict(width=20), "width"),
                                          (dict(heads=3), "heads"), (dict(conditioning="adaln"), "conditioning"),
                                          (dict(depth=0), "depth")])
def test_the_config_refuses_what_cannot_be_built(change, key):
    validate(DiTConfig())
    with pytest.raises(UserError, match=f"--{key}="):
        validate(DiTConfig(**change))


def test_a_checkpoint_rebuilds_the_dit(tmp_path, one_thread):
    """describe + weights -> common.checkpoint rebuilds the same network through the registry, from a dict and from
    a file (load_model)."""
    assert MODELS["DiT"] == (DiT, DiTConfig)
    model = wake(small("cross-attention", patch=7, mlp_ratio=2.5))
    ckpt = {**describe(model), "model": model.state_dict(), "step": 1, "config": {"steps": 1}}
    save_checkpoint(tmp_path / "checkpoint.pt", ckpt)
    x, t, y = batch(2)
    for rebuilt in (build_model(ckpt), load_model(tmp_path / "checkpoint.pt")[0]):
        assert rebuilt.cfg == model.cfg and isinstance(rebuilt.cfg.mlp_ratio, float)
        assert torch.equal(rebuilt(x, t, y), model(x, t, y))
