"""Day 04: the chain's moments propagated exactly in float64, the day's chain against its recursion,
the Monte Carlo comparison with the power to reject a wrong closed form, the milestones against a
brute-force search and a small-β approximation, the KL against its per-pixel closed form, the exact
pixel marginal against scipy, the per-t MSE against Monte Carlo, the two KL bounds against
torch.distributions and against the exact KL of a 1-D mixture by quadrature (including the mutual
information that separates the upper bound from it), the colour (CIFAR-10) picture path on fake data,
and the smoke run."""

import csv
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
from torch.distributions import Normal, kl_divergence

from common.diffusion import kl_prior
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


# --- per t: MSE(x_t, x_0) and the bounds on KL(q(x_t) ‖ N(0, I)) ------------------------------------------

def test_mse_to_x0_against_monte_carlo():
    x0 = torch.rand(50, 1, 3, 3, generator=gen(10), dtype=F64) * 2 - 1
    power = x0.pow(2).mean().item()
    for ab in (0.999, 0.6, 0.1):
        eps = torch.randn(4000, *x0.shape, generator=gen(11), dtype=F64)          # many noises per image
        measured = (math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps - x0).pow(2).mean().item()
        assert measured == pytest.approx(forward.mse_to_x0(torch.tensor(ab, dtype=F64), power).item(), rel=0.01)
    ends = forward.mse_to_x0(torch.tensor([1.0, 0.0], dtype=F64), power)
    assert ends.tolist() == pytest.approx([0.0, power + 1])                       # x_0 itself; independent noise


def test_kl_bounds_match_torch_distributions():
    x0 = torch.rand(40, 1, 2, 3, generator=gen(12), dtype=F64) * 2 - 1          # (N, 1, 2, 3): D = 6
    ab = torch.tensor([0.95, 0.5, 0.02], dtype=F64)
    lower, upper = forward.kl_to_prior_bounds(ab, x0)
    flat = x0.flatten(1)
    for k, a in enumerate(ab.tolist()):
        cond = kl_divergence(Normal(math.sqrt(a) * flat, math.sqrt(1 - a)), Normal(0.0, 1.0))   # (N, D)
        assert upper[k].item() == pytest.approx(cond.sum(1).mean().item(), rel=1e-12)
        m = math.sqrt(a) * flat.numpy().mean(0)                                   # the marginal's moments, numpy
        v = a * flat.numpy().var(0) + 1 - a
        fit = kl_divergence(Normal(torch.tensor(m), torch.tensor(np.sqrt(v))), Normal(0.0, 1.0)).sum()
        assert lower[k].item() == pytest.approx(fit.item(), rel=1e-12)
    assert torch.all(lower < upper)


def test_upper_bound_at_t1_is_the_prior_term():
    sched = DiscreteVP.named("linear", 1000)
    x0 = torch.rand(8, 1, 4, 4, generator=gen(13), dtype=F64) * 2 - 1
    _, upper = forward.kl_to_prior_bounds(sched.alpha_bar[-1:], x0)
    assert upper.item() == pytest.approx(kl_prior(sched, x0).mean().item(), rel=1e-10)


@pytest.mark.parametrize("ab", [0.9, 0.5, 0.05])
def test_kl_bounds_bracket_the_exact_kl_of_a_mixture(ab):
    """One pixel, x_0 ∈ {−1, 0.6} with weights 0.7, 0.3: q(x_t) is a two-Gaussian mixture whose KL to N(0, 1)
    and whose mutual information with x_0 are 1-D integrals (scipy.integrate.quad)."""
    values, weights = np.array([-1.0, 0.6]), np.array([0.7, 0.3])
    sd = math.sqrt(1 - ab)

    def log_cond(z, v):                     # log q(x_t = z | x_0 = v); logs keep the far tails finite
        return stats.norm.logpdf(z, math.sqrt(ab) * v, sd)

    def log_q(z):
        return np.logaddexp(*(math.log(w) + log_cond(z, v) for v, w in zip(values, weights)))
    kl = integrate.quad(lambda z: math.exp(log_q(z)) * (log_q(z) - stats.norm.logpdf(z)), -12, 12,
                        epsabs=1e-12)[0]
    mutual = sum(w * integrate.quad(lambda z, v=v: math.exp(log_cond(z, v)) * (log_cond(z, v) - log_q(z)),
                                    -12, 12, epsabs=1e-12)[0] for v, w in zip(values, weights))
    x0 = torch.tensor(np.repeat(values, [7, 3]), dtype=F64)[:, None]        # the data: 7 × (−1), 3 × 0.6
    lower, upper = forward.kl_to_prior_bounds(torch.tensor([ab], dtype=F64), x0)
    assert lower.item() < kl < upper.item()
    assert upper.item() == pytest.approx(kl + mutual, rel=1e-7)               # E KL(q(x_t|x_0) ‖ p) = I + KL


def test_forward_stats_rows():
    sched = DiscreteVP.named("cosine", 100)
    x0 = torch.rand(20, 1, 4, 4, generator=gen(14)) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen(15))
    rows = train.forward_stats(sched, x0, eps, every=30)
    assert [r["step"] for r in rows] == [30, 60, 90, 100] and rows[-1]["t"] == 1.0
    for r in rows:                                            # measured with this one noise draw, directly
        xt = math.sqrt(r["alpha_bar"]) * x0.double() + math.sqrt(1 - r["alpha_bar"]) * eps.double()
        assert r["mse"] == pytest.approx((xt - x0.double()).pow(2).mean().item(), rel=1e-5)
        assert r["kl_lower_nats"] < r["kl_upper_nats"]
    with pytest.raises(train.UserError, match="stats_every"):
        train.forward_stats(sched, x0, eps, every=0)


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
    rows = list(csv.DictReader(open(tmp_path / "forward_stats.csv")))
    assert tuple(rows[0]) == train.STATS_COLUMNS and len(rows) == len(SCHEDULES) * 10   # stats_every = 100
    assert all(float(r["kl_lower_nats"]) < float(r["kl_upper_nats"]) for r in rows)
    for name, summary in m["forward_stats"].items():
        assert summary["kl_upper_nats_at_1"] == pytest.approx(m["schedules"][name]["kl_prior_nats_per_image"],
                                                              rel=1e-9)
        assert summary["max_abs_mse_dev"] < 0.05 and summary["kl_lower_nats_at_1"] < summary["kl_upper_nats_at_1"]
    final = m["histograms"][-1]
    assert final["t"] == 1.0 and abs(final["mean"]) < 0.05 and abs(final["std"] - 1) < 0.05
    for name in ("forward_stats.png", "schedules.png", "chain_vs_closed_form.png", "pixel_histograms.png",
                 "forward_mnist.gif",
                 "trajectories_mnist.png", "trajectories_mnist_schedules.png"):
        assert 0 < (tmp_path / name).stat().st_size < 1_000_000, name


def test_schedule_figure_of_a_short_schedule_whose_signal_never_halves(tmp_path):
    # T = 10 linear steps keep ᾱ above 1/2 throughout: milestones say T + 1 and the figure draws no dot
    schedules = {name: DiscreteVP.named(name, 10) for name in SCHEDULES}
    summary = {name: forward.milestones(s, data_var=1.0) for name, s in schedules.items()}
    assert summary["linear"]["half_power_step"] == 11
    train.plot_schedules(schedules, summary, tmp_path / "schedules.png")
    assert (tmp_path / "schedules.png").stat().st_size > 0
