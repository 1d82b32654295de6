"""Day 29: the Goertzel decoder reads every clean clip the DTMF generator makes; text's analog bits round-trip; the
joint loss noises each modality at its own time (an oracle that knows the datum has zero loss, a net wrong in one
modality pays exactly that modality's MSE); a condition reaches the network bit for bit at t = 0 through the sampler,
a marginalised modality at t = 1; the tasks cover every direction; a lone modality's histogram counts only readable
samples; the smoke run; and the README's tables."""

import json

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common.paths import DiscreteVP, uniform_grid
from common.predictions import TARGET, Coefficients
from common.samplers import ddim

F64 = torch.float64
modalities, joint, tables = load_day(29, "modalities", "joint", "tables")
PATH = DiscreteVP.named("cosine", 1000)
M = joint.MODALITIES


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", range(5))
def test_the_decoder_reads_every_clean_clip(seed):
    """All ten digits, 200 clips each per seed: random amplitudes and noise."""
    digits = torch.arange(10).repeat(200)
    clips = modalities.dtmf(digits, gen(seed))
    assert clips.shape == (2000, modalities.CLIP) and clips.abs().max() <= 1
    assert torch.equal(modalities.audio_digits(clips), digits)


def test_the_decoder_refuses_noise_and_silence_and_the_star_key():
    assert (modalities.audio_digits(0.3 * torch.randn(50, modalities.CLIP, generator=gen(0))) == -1).all()
    assert (modalities.audio_digits(torch.zeros(3, modalities.CLIP)) == -1).all()
    n = torch.arange(modalities.CLIP, dtype=F64)
    star = 0.4 * torch.sin(2 * torch.pi * 941 / modalities.RATE * n) + 0.4 * torch.sin(2 * torch.pi * 1209 /
                                                                                        modalities.RATE * n)
    assert modalities.audio_digits(star[None].float()).tolist() == [-1]


def test_goertzel_is_the_dft_bin():
    """At a bin frequency k·RATE/N, Goertzel's |X|² equals the FFT's |X_k|²."""
    x = torch.randn(4, 256, generator=gen(1), dtype=F64)
    freqs = tuple(k * modalities.RATE / 256 for k in (3, 40, 100))
    want = torch.fft.fft(x).abs()[:, [3, 40, 100]] ** 2
    torch.testing.assert_close(modalities.goertzel_power(x, freqs), want, rtol=1e-9, atol=1e-9)


def test_text_round_trip():
    digits = torch.arange(10)
    bits = modalities.encode_text(digits)
    assert bits.shape == (10, modalities.LENGTH, len(modalities.ALPHABET)) and set(bits.unique().tolist()) == {-1, 1}
    assert modalities.decode_text(bits) == list(modalities.NAMES)
    assert torch.equal(modalities.text_digits(0.3 * bits + 0.1 * torch.randn(bits.shape, generator=gen(2))), digits)
    wrong = bits.clone()
    wrong[0, 0] = -wrong[0, 0]                                           # "zero" loses its z
    assert modalities.text_digits(wrong)[0] == -1


def one_datum():
    """A one-point data set: its three modalities in float64."""
    d = torch.tensor([7])
    return {"image": torch.rand(1, 1, 28, 28, generator=gen(3), dtype=F64) * 2 - 1,
            "audio": modalities.dtmf(d, gen(4)).double(), "text": modalities.encode_text(d).double()}


def test_the_joint_loss_noises_each_modality_at_its_own_time():
    """For one datum x0 the exact denoiser is known: eps = (x_t − alpha x0) / sigma. A net that computes v from it
    has zero loss; one that is wrong in the audio only pays the audio's MSE; the three times differ."""
    x0 = {m: v.expand(32, *v.shape[1:]) for m, v in one_datum().items()}
    seen = {}

    def oracle(xt, t, wrong=None):
        seen.update(t)
        out = {}
        for m in M:
            c = Coefficients.at(PATH, t[m], xt[m])
            eps = (xt[m] - c.alpha * x0[m]) / c.sigma
            out[m] = TARGET["v"](x0[m], eps, c) + (1.0 if m == wrong else 0.0)
        return out
    losses = joint.joint_losses(oracle, x0, PATH, "v", gen(11))
    assert all((seen[m] > 0).all() for m in M)                       # sigma > 0: the oracle could divide by it
    assert max(float(loss.max()) for loss in losses.values()) < 1e-12  # the loss compares in float32
    assert not torch.equal(seen["image"], seen["audio"]) and not torch.equal(seen["audio"], seen["text"])
    wrong = joint.joint_losses(lambda xt, t: oracle(xt, t, "audio"), x0, PATH, "v", gen(11))
    torch.testing.assert_close(wrong["audio"], torch.ones(32, dtype=F64), rtol=1e-6, atol=1e-6)
    assert float(wrong["image"].max()) < 1e-12


def test_times_include_both_ends():
    t = joint.sample_times(PATH, 200_000, gen(5))
    assert float(t.min()) == 0 and float(t.max()) == 1 and len(t.unique()) == PATH.n_steps + 1


def test_endpoint_mass_puts_p0_at_t0_and_p1_at_t1():
    """t = 0 w.p. p0, 1 w.p. p1, else uniform on the T + 1 levels (which hold each end once more)."""
    n, p0, p1 = 400_000, 0.25, 0.15
    t = joint.sample_times(PATH, n, gen(9), p0, p1)
    level = (1 - p0 - p1) / (PATH.n_steps + 1)                          # the uniform part's mass on one level
    share = {"t=0": float((t == 0).double().mean()), "t=1": float((t == 1).double().mean())}
    assert abs(share["t=0"] - (p0 + level)) < 0.004 and abs(share["t=1"] - (p1 + level)) < 0.004, share
    inner = t[(t > 0) & (t < 1)]
    assert abs(len(inner) / n - (1 - p0 - p1 - 2 * level)) < 0.004
    assert abs(float(inner.mean()) - 0.5) < 0.005 and abs(float(inner.var()) - 1 / 12) < 0.005   # uniform


def test_a_modality_at_t0_adds_no_loss():
    """At t = 0 the input is x_0 itself and the target (v = eps) is unpredictable: those terms score exactly 0,
    all others the MSE of the prediction."""
    x0 = {m: v.expand(64, *v.shape[1:]) for m, v in one_datum().items()}
    seen = {}

    def zeros(xt, t):
        seen.update(t)
        return {m: torch.zeros_like(xt[m]) for m in M}
    losses = joint.joint_losses(zeros, x0, PATH, "v", gen(12), p0=0.5)
    for m in M:
        at0 = seen[m] == 0
        assert 0 < int(at0.sum()) < 64 and (losses[m][at0] == 0).all() and (losses[m][~at0] > 0).all()


@pytest.mark.parametrize("task", joint.TASKS, ids=lambda task: task.name)
def test_a_condition_reaches_the_net_bit_for_bit(task):
    """Through DDIM, at every step: given modalities arrive unchanged at t = 0, marginalised ones as their fixed
    noise at t = 1, generated ones at the sampler's t; the state holds only the generated ones."""
    n, grid = 4, uniform_grid(PATH, 5)
    clean = {m: v.float().expand(n, *v.shape[1:]).clone() for m, v in one_datum().items()}
    noise = {m: torch.randn(clean[m].shape, generator=gen(6)) for m in task.marginal}
    calls = []

    def net(x, t, outputs):
        calls.append(({m: x[m].clone() for m in M}, {m: t[m].clone() for m in M}))
        assert outputs == task.generate
        return {m: 0.5 * x[m] for m in outputs}
    fixed = {m: clean[m] for m in task.given} | noise
    states = list(ddim(joint.task_denoiser(net, task, PATH, "v"), torch.randn(n, task.dim, generator=gen(7)), grid,
                       path=PATH, **fixed))
    assert len(calls) == len(grid) - 1 and states[-1].shape == (n, task.dim)
    for (x, t), step_t in zip(calls, grid[:-1]):
        for m in task.given:
            assert torch.equal(x[m], clean[m]) and (t[m] == 0).all()
        for m in task.marginal:
            assert torch.equal(x[m], noise[m]) and (t[m] == 1).all()
        for m in task.generate:
            assert torch.allclose(t[m].double(), step_t.expand(n))
    assert all(torch.equal(clean[m], fixed[m]) for m in task.given)      # and the sampler left them as they were


def test_the_tasks_are_every_direction():
    names = {task.name for task in joint.TASKS}
    assert len(names) == 10 and "joint" in names
    assert {(t.given, t.generate) for t in joint.TASKS if t.given} == {((a,), (b,)) for a in M for b in M if a != b}


def small_net() -> torch.nn.Module:
    """A small JointNet whose zero-initialised output layers (the U-Net's, so that its blocks start as the
    identity) are drawn at random, so that every input can reach every output."""
    torch.manual_seed(0)
    net = joint.JointNet(joint.JointConfig(width=16, depth=1, heads=2, channels=8)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen(13)))
    return net


def test_the_network_shapes_and_what_each_branch_reads():
    """Every output has its modality's shape; the image (U-Net) reads the text's time and the text's and the
    audio's values through its cross-attention; the text reads the image's and the audio's values."""
    net = small_net()
    x = {m: torch.randn(2, *joint.SHAPES[m], generator=gen(8)) for m in M}
    t = {m: torch.tensor([0.2, 0.7]) for m in M}
    out = net(x, t)
    assert {m: tuple(v.shape[1:]) for m, v in out.items()} == joint.SHAPES
    for changed, reader in (("text", "image"), ("audio", "image"), ("image", "text"), ("audio", "text")):
        moved = net(x | {changed: x[changed] + 1}, t)
        assert not torch.equal(moved[reader], out[reader]), (changed, reader)
    moved = net(x, t | {"text": torch.tensor([1.0, 1.0])})
    assert not torch.equal(moved["image"], out["image"])                  # the image reads the text's time


def test_asking_for_fewer_outputs_changes_none():
    """A sampler that generates only the text skips the U-Net: the outputs it gets are the full call's."""
    net = small_net()
    x = {m: torch.randn(3, *joint.SHAPES[m], generator=gen(14)) for m in M}
    t = {m: torch.rand(3, generator=gen(15)) for m in M}
    full = net(x, t)
    for outputs in (("text",), ("audio",), ("image",), ("audio", "text")):
        part = net(x, t, outputs)
        assert tuple(part) == outputs and all(torch.equal(part[m], full[m]) for m in outputs)


def test_a_lone_modality_histogram_counts_only_readable_samples():
    """A name that reads as no digit is unreadable, and it must not land in the histogram's bin of zero."""
    train = load_day(29, "train")
    names = modalities.encode_text(torch.tensor([3, 3, 7]))
    names[0] = -names[0]                                  # every bit flipped: one letter five times, no name
    row = train.evaluate(joint.Task("text alone", ("text",)), {"text": names}, torch.tensor([3, 3, 7]), None,
                         "mnist", None)
    assert row["readable"]["share"] == round(2 / 3, 4)
    assert row["class_hist"] == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]


def test_smoke_run(tmp_path):
    result = smoke_run(29, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["tasks"]) == {task.name for task in joint.TASKS}
    assert m["real"]["audio"]["share"] == 1 and m["real"]["text"]["share"] == 1 and m["headline"]
    for name in ("samples.npz", "image_grids.png", "spectrograms.png", "joint_samples.png", "real.wav",
                 "text_to_audio.wav", "joint.wav"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day29/results/metrics.json").read_text())
    readme = (ROOT / "day29/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
