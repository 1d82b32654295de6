"""Day 21: the DDGAN's step is the shared Gaussian posterior at G's x̂0, sample by sample over mixed levels, and in
DDPM's sampler; real pairs have the forward process's joint law; R1 against its closed form on a quadratic
discriminator; a NaN loss stops the loop with one line and keeps the last checkpoint; the smoke run through the
command line (with day 6's smoke checkpoint); and a run stopped half-way and resumed ends on the weights and log of
an uninterrupted one."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common import ddgan, gan_loop
from common.checkpoint import load_checkpoint, load_model
from common.paths import uniform_grid
from common.samplers import ddpm_step, posterior

F64 = torch.float64
tables, train = load_day(21, "tables", "train")
PATH = ddgan.PATH


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_posterior_step_is_the_shared_posterior_sample_by_sample():
    """A batch that mixes every step of the grid: each x_s is common.samplers.posterior's mean + sqrt(var) · noise
    for its own pair of levels; at s = 0 the step returns x0 itself."""
    grid = uniform_grid(PATH, 4)
    t, s = ddgan.levels(64, grid, gen(0))
    assert set(t.tolist()) == set(grid[:-1].tolist()) and torch.equal(s, grid[torch.searchsorted(-grid, -t) + 1])
    x0, x_t, noise = (torch.randn(64, 1, 3, 3, generator=gen(i), dtype=F64) for i in (1, 2, 3))
    x_s = ddgan.sample_posterior(PATH, x0, x_t, t, s, noise)
    for i in range(64):
        mean, var = posterior(PATH, x0[i], x_t[i], t[i], s[i])
        torch.testing.assert_close(x_s[i], mean + var.sqrt() * noise[i], rtol=1e-14, atol=1e-14)
    last = s == 0
    torch.testing.assert_close(x_s[last], x0[last], rtol=1e-14, atol=1e-14)


def test_real_pairs_have_the_forward_processs_joint_law():
    """x_t ~ q(x_t | x0), then x_s ~ q(x_s | x_t, x0) is a draw of (x_s, x_t) from q: x_s has mean alpha_s x0 and
    variance sigma_s², and Cov(x_s, x_t) = alpha_{t|s} sigma_s² (x_t = alpha_{t|s} x_s + noise). 200,000 draws in
    float64, within 5 standard errors."""
    t, s = torch.tensor(0.75, dtype=F64), torch.tensor(0.5, dtype=F64)
    x0 = torch.full((200_000, 1), 0.6, dtype=F64)
    _, _, x_t, x_s = ddgan.real_pairs(x0, torch.stack([t, s]), gen(4))
    a_s, s_s, a_t = PATH.alpha(s), PATH.sigma(s), PATH.alpha(t)
    n = len(x0)
    assert abs(x_s.mean() - a_s * 0.6) < 5 * s_s / math.sqrt(n)
    assert abs(x_s.var() / s_s ** 2 - 1) < 5 * math.sqrt(2 / n)
    cov, expected = ((x_s - x_s.mean()) * (x_t - x_t.mean())).mean(), a_t / a_s * s_s ** 2
    se = math.sqrt((s_s ** 2 * x_t.var() + expected ** 2) / n)          # of a covariance's estimate (Gaussian pair)
    assert abs(cov - expected) < 5 * se


class FixedG(torch.nn.Module):
    """A 'generator' whose tanh output is a fixed x̂0, recording the latents it is given."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.cfg, self.out, self.seen = SimpleNamespace(cond_channels=1), torch.atanh(x0), []

    def forward(self, x, t, cond):
        self.seen.append(cond)
        return self.out


def test_ddpms_step_with_the_generator_as_denoiser_is_the_ddgan_step():
    """common.samplers.ddpm_step with gan_denoiser: the posterior at G's x̂0 from t to s, noise from the sampler's
    generator; a fresh z at every call; and x̂0 itself at the last step."""
    x0, x_t = torch.rand(8, 1, 3, 3, generator=gen(5), dtype=F64) - 0.5, torch.randn(8, 1, 3, 3, generator=gen(6),
                                                                                        dtype=F64)
    G = FixedG(x0)
    denoise = ddgan.gan_denoiser(G, gen(7))
    t, s = uniform_grid(PATH, 4)[1:3]
    mean, var = posterior(PATH, x0, x_t, t, s)
    noise = torch.randn(x_t.shape, generator=gen(8), dtype=F64)
    torch.testing.assert_close(ddpm_step(denoise, x_t, t, s, path=PATH, generator=gen(8)), mean + var.sqrt() * noise,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ddpm_step(denoise, x_t, s, torch.tensor(0.0, dtype=F64), path=PATH), x0,
                               rtol=1e-12, atol=1e-12)
    assert G.seen[0].shape == x_t.shape and not torch.equal(G.seen[0], G.seen[1])


def test_r1_is_its_definition_on_a_quadratic_discriminator():
    """D(x) = −½ xᵀ A x + bᵀ x (A symmetric) has ∇D = −A x + b: the penalty is γ/2 E‖−A x + b‖², and it trains
    through (create_graph): its gradient in b is γ E(−A x + b)."""
    m = torch.randn(5, 5, generator=gen(9), dtype=F64)
    a, b = m @ m.T, torch.randn(5, generator=gen(10), dtype=F64, requires_grad=True)
    x = torch.randn(128, 5, generator=gen(11), dtype=F64, requires_grad=True)
    d = -0.5 * ((x @ a) * x).sum(1) + x @ b
    penalty = ddgan.r1_penalty(d, x, gamma=0.3)
    grad = -x.detach() @ a + b.detach()                                         # (128, 5), A symmetric
    torch.testing.assert_close(penalty, 0.15 * grad.pow(2).sum(1).mean(), rtol=1e-12, atol=0)
    penalty.backward()
    torch.testing.assert_close(b.grad, 0.3 * grad.mean(0), rtol=1e-12, atol=1e-12)


def test_a_nan_loss_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """3 good steps checkpointed, then a resume to 6 steps on data that makes every loss NaN: a UserError naming the
    step and the checkpoint, which stays at step 3."""
    from dataclasses import replace

    from common.config import UserError
    from common.run import Run

    cfg, grid = replace(train.PRESETS["smoke"], steps=3), uniform_grid(PATH, 4)
    x = 2 * torch.rand(32, 1, 28, 28, generator=gen(12)) - 1

    def nets():
        torch.manual_seed(0)
        return train.UNet(cfg.unet), train.Discriminator(cfg.disc)
    gan_loop.train_gan(*nets(), x, grid, cfg, Run(tmp_path, torch.device("cpu"), "smoke", "toy"))
    with pytest.raises(UserError, match=r"NaN/inf at step 4; .*\(step 3\)"):
        gan_loop.train_gan(*nets(), torch.full_like(x, math.nan), grid, replace(cfg, steps=6),
                           Run(tmp_path, torch.device("cpu"), "smoke", "toy", resume=True))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, day6_smoke):
    """One uninterrupted smoke run: the smoke test checks it, the resume test compares with it."""
    out = tmp_path_factory.mktemp("day21_smoke")
    result = smoke_run(21, out, f"--day6_results={day6_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def test_smoke_run(smoke):
    m = json.loads((smoke / "metrics.json").read_text())
    assert set(m["settings"]) == {"ddgan-4", "ddim-4", "ddpm-5"} and m["grid"] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert set(m["aim"]) == {"ddim", "ddpm", "ddgan_fid_over_ddim", "ddgan_recall_over_ddpm"}
    assert set(m["z_spread"]) == {"1.00", "0.75", "0.50", "0.25"} and m["cost"]["train_seconds"] > 0
    for name in ("samples.npz", "samples.png", "same_noise.png", "proposals.png", "losses.png", "train_log.csv"):
        assert (smoke / name).is_file(), name
    generator, ckpt = load_model(smoke / "checkpoint.pt", finished=True)          # self-describing: the EMA of G
    assert ckpt["step"] == 6 and generator.cfg.cond_channels == 1 and len(ckpt["log"]) == 6
    for table in tables.ALL:
        assert table(m), table.__name__
    assert tables.mnist(m).count("\n") == 1 + len(m["settings"])


def test_a_run_stopped_half_way_and_resumed_is_the_uninterrupted_run(smoke, tmp_path, day6_smoke):
    """--steps=3, then --resume to the preset's 6: the same G, EMA and D, bit for bit, and the same train_log.csv."""
    for extra in ("--steps=3", "--resume"):
        result = smoke_run(21, tmp_path, f"--day6_results={day6_smoke}", extra)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    a, b = (load_checkpoint(folder / "checkpoint.pt") for folder in (smoke, tmp_path))
    assert a["step"] == b["step"] == 6 and a["log"] == b["log"]
    for key, first, second in (("G", a["model"], b["model"]), ("EMA", a["ema"], b["ema"]),
                               ("D", a["discriminator"]["model"], b["discriminator"]["model"])):
        for (name, v), w in zip(first.items(), second.values()):
            assert torch.equal(v, w), (key, name)
    assert (smoke / "train_log.csv").read_text() == (tmp_path / "train_log.csv").read_text()


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day21/results/metrics.json").read_text())
    readme = (ROOT / "day21/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
