"""Day 04: the chain's moments propagated exactly in float64, the day's chain against its recursion,
the Monte Carlo comparison with the power to reject a wrong closed form, the milestones against a
brute-force search and a small-β approximation, the KL against its per-pixel closed form, the exact
pixel marginal against scipy, the colour (CIFAR-10) picture path on fake data, and the smoke run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_TIMEOUT, load_day
from scipy import integrate, stats

from common.paths import SCHEDULES, DiscreteVP

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "day04" / "code"
F64 = torch.float64


forward, train = load_day(4, "forward", "train")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the chain ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", SCHEDULES)
def test_chain_moments_telescope_to_the_closed_form(kind):
    """Mean and variance of x_i = √(1−β_i) x_{i−1} + √β_i ε, propagated step by step in numpy."""
    sched = DiscreteVP.named(kind, 1000)
    x0 = np.array([-1.0, 0.25, 1.0])
    mean, var = x0.copy(), 0.0
    for i, beta in enumerate(sched.betas.numpy(), start=1):
        mean, var = math.sqrt(1 - beta) * mean, (1 - beta) * var + beta
        ab = sched.alpha_bar[i].item()
        np.testing.assert_allclose(mean, math.sqrt(ab) * x0, rtol=1e-12, atol=1e-15)
        assert var == pytest.approx(1 - ab, rel=1e-12, abs=1e-15)


def test_forward_chain_is_the_recursion():
    sched = DiscreteVP.named("cosine", 5)
    x0 = torch.randn(2, 3, generator=gen(1), dtype=F64)
    states = list(forward.forward_chain(sched, x0, gen(2)))
    g, x = gen(2), x0
    for beta, state in zip(sched.betas, states):
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=g, dtype=F64)
        torch.testing.assert_close(state, x, rtol=1e-14, atol=1e-14)
    assert len(states) == 5 and torch.equal(x0, x0.clone())  # x0 itself is left untouched


def test_monte_carlo_check_accepts_the_truth_and_rejects_a_wrong_closed_form():
    sched = DiscreteVP.named("linear", 100)
    x0 = torch.rand(2, 500, generator=gen(3)) * 2 - 1  # 1000 independent pixel chains ...
    right = forward.chain_vs_closed_form(sched, x0, copies=400, every=10, generator=gen(4))  # ... 400 times
    assert right["steps"] == list(range(10, 101, 10))
    # z is standard normal; the RMS over 1000 independent chains (correlated in t) is 1 ± ~0.03.
    assert right["rms_z_mean"] == pytest.approx(1, abs=0.1)
    assert right["rms_z_var"] == pytest.approx(1, abs=0.1)
    assert max(right["max_abs_z_mean"], right["max_abs_z_var"]) < 6
    wrong = DiscreteVP(sched.betas)
    wrong.alpha_bar = wrong.alpha_bar ** 2  # the classic slip: x_t = ᾱ x_0 + (1 − ᾱ) ε, roots forgotten
    bad = forward.chain_vs_closed_form(wrong, x0, copies=400, every=10, generator=gen(4))
    assert bad["rms_z_mean"] > 2 and bad["rms_z_var"] > 3


# --- schedules: milestones and the prior KL ------------------------------------------------------------

@pytest.mark.parametrize("kind", SCHEDULES)
def test_milestones_match_a_brute_force_search(kind):
    sched = DiscreteVP.named(kind, 1000)
    ab = sched.alpha_bar.numpy()
    brute = {level: next(i for i in range(1, 1001) if ab[i] <= level) for level in (0.5, 0.25)}
    m = forward.milestones(sched, data_var=1.0)
    assert (m["half_power_step"], m["half_amplitude_step"]) == (brute[0.5], brute[0.25])
    assert m["data_snr_0db_step"] == m["half_power_step"]  # unit-variance data: SNR 0 dB ⟺ ᾱ = 1/2
    snr = sched.snr_db().numpy()
    assert snr[m["half_power_step"] - 1] <= 0 < snr[m["half_power_step"] - 2]
    assert forward.milestones(sched, data_var=0.4)["data_snr_0db_step"] < m["half_power_step"]


def test_linear_half_power_step_from_the_small_beta_approximation():
    """log ᾱ_i ≈ −Σ_{j≤i} β_j = −(i β_1 + (β_T − β_1) i (i − 1) / (2 (T − 1))); solve it for ln 2."""
    T, b1, bT = 1000, 1e-4, 0.02
    c = (bT - b1) / (2 * (T - 1))
    i = (-(b1 - c) + math.sqrt((b1 - c) ** 2 + 4 * c * math.log(2))) / (2 * c)
    got = forward.milestones(DiscreteVP.named("linear", T), 1.0)["half_power_step"]
    assert abs(got - i) < 3  # log(1 − β) ≈ −β − β²/2: the neglected term moves i by about one step


def test_prior_kl_matches_the_per_pixel_closed_form():
    sched = DiscreteVP.named("quadratic", 1000)  # the schedule that ends furthest from N(0, I)
    x = torch.rand(5, 1, 4, 4, generator=gen(5), dtype=F64) * 2 - 1
    summary = train.schedule_summary(sched, x, data_var=0.5)
    ab = sched.alpha_bar[-1].item()
    per_dim = 0.5 * (ab * (x.numpy() ** 2).mean() + (1 - ab) - 1 - math.log(1 - ab))
    assert summary["kl_prior_nats_per_dim"] == pytest.approx(per_dim, rel=1e-10)
    assert summary["kl_prior_nats_per_image"] == pytest.approx(16 * per_dim, rel=1e-10)
    assert summary["half_power_t"] == summary["half_power_step"] / 1000


def test_marginal_density_is_the_gaussian_mixture():
    levels = torch.tensor([-1.0, 0.0, 0.6], dtype=F64)
    weights = torch.tensor([0.7, 0.1, 0.2], dtype=F64)
    ab = 0.3
    grid = torch.linspace(-5, 5, 11, dtype=F64)
    expected = sum(w * stats.norm.pdf(grid.numpy(), math.sqrt(ab) * v, math.sqrt(1 - ab))
                   for v, w in zip(levels.tolist(), weights.tolist()))
    np.testing.assert_allclose(forward.marginal_density(grid, levels, weights, ab).numpy(), expected, rtol=1e-12)
    mass = integrate.quad(lambda z: forward.marginal_density(torch.tensor([z], dtype=F64), levels, weights, ab).item(),
                          -12, 12)[0]
    assert mass == pytest.approx(1, abs=1e-9)


# --- pictures and the whole run ----------------------------------------------------------------------------

def test_colour_pictures(tmp_path):
    """The CIFAR-10 path (not exercised offline) on fake 3-channel images."""
    cfg = train.PRESETS["smoke"]
    x = torch.rand(6, 3, 8, 8, generator=gen(6)) * 2 - 1
    schedules = {k: DiscreteVP.named(k, cfg.n_steps) for k in cfg.schedules}
    train.save_trajectories(x, torch.randn(x.shape, generator=gen(7)), schedules, cfg, tmp_path, "fake")
    for name in ("trajectories_fake_schedules.png", "trajectories_fake.png", "forward_fake.gif"):
        assert (tmp_path / name).stat().st_size > 0


def test_smoke_run(tmp_path):
    subprocess.run([sys.executable, "day04/code/train.py", "--preset", "smoke", "--out", str(tmp_path)],
                   cwd=ROOT, timeout=HANG_TIMEOUT, check=True)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["preset"] == "smoke" and set(m["schedules"]) == set(SCHEDULES)
    assert m["cifar10"] in ("not available", "used")
    for s in m["schedules"].values():
        assert 0 < s["half_power_step"] < s["half_amplitude_step"] <= 1000
        assert math.isfinite(s["kl_prior_nats_per_image"]) and s["kl_prior_nats_per_dim"] >= 0
    for c in m["chain"].values():
        assert 0.8 < c["rms_z_mean"] < 1.2 and 0.8 < c["rms_z_var"] < 1.2
    final = m["histograms"][-1]
    assert final["t"] == 1.0 and abs(final["mean"]) < 0.05 and abs(final["std"] - 1) < 0.05
    for name in ("schedules.png", "chain_vs_closed_form.png", "pixel_histograms.png", "forward_mnist.gif",
                 "trajectories_mnist.png", "trajectories_mnist_schedules.png"):
        assert 0 < (tmp_path / name).stat().st_size < 1_000_000, name
