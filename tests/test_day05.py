"""Day 05: the posterior q(x_s | x_t, x_0) of common.samplers against Bayes on a 1-D grid; the reverse chain
with the true x_0 against the forward marginals it must retrace; the exact denoisers of common.denoisers
against a brute-force posterior mean, the two-point tanh and Tweedie's formula; the implied-error
bookkeeping; the smoke run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_TIMEOUT, load_day
from scipy import special, stats

from common.denoisers import MixtureDenoiser, effective_count, responsibilities
from common.paths import DiscreteVP, band_times, uniform_grid
from common.predictions import PREDICTIONS, Coefficients, denoiser
from common.samplers import ddpm, posterior
from common.toy2d import GaussianMixture

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


reverse = load_day(5, "reverse")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- the posterior and the reverse chain -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("i_s, i_t", [(10, 11), (499, 500), (250, 750), (999, 1000)])
def test_posterior_is_bayes_on_a_grid(kind, i_s, i_t):
    """q(x_s | x_t, x_0) ∝ q(x_t | x_s) q(x_s | x_0), normalised numerically on a fine 1-D grid."""
    sched = DiscreteVP.named(kind, 1000)
    ab_s, ab_t = sched.alpha_bar[i_s].item(), sched.alpha_bar[i_t].item()
    x0 = 0.6
    xt = math.sqrt(ab_t) * x0 + math.sqrt(1 - ab_t) * 0.7
    prior_mean, prior_std = math.sqrt(ab_s) * x0, math.sqrt(1 - ab_s)
    u = np.linspace(prior_mean - 12 * prior_std, prior_mean + 12 * prior_std, 400_001)  # values of x_s
    log_p = (stats.norm.logpdf(u, prior_mean, prior_std)                                  # q(x_s | x_0)
             + stats.norm.logpdf(xt, math.sqrt(ab_t / ab_s) * u, math.sqrt(1 - ab_t / ab_s)))  # q(x_t | x_s)
    p = np.exp(log_p - log_p.max())
    p /= np.trapezoid(p, u)
    mean = np.trapezoid(u * p, u)
    var = np.trapezoid((u - mean) ** 2 * p, u)
    got_mean, got_var = posterior(sched, torch.tensor(x0, dtype=F64), torch.tensor(xt, dtype=F64),
                                  i_t / 1000, i_s / 1000)
    assert got_mean.item() == pytest.approx(mean, rel=1e-7, abs=1e-10)
    assert got_var.item() == pytest.approx(var, rel=1e-6)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_oracle_chain_retraces_the_forward_marginals(variance):
    """Given the true x_0, each reverse step samples q(x_s | x_t, x_0), so a chain started from q(x_1 | x_0)
    has marginal q(x_t | x_0) = N(√ᾱ_t x_0, 1 − ᾱ_t) at every t and ends exactly at x_0. With β instead
    of β̃ as the variance the chain is too noisy and the variances must miss: the test can fail."""
    sched, n, x0 = DiscreteVP.named("linear", 1000), 40_000, 0.6
    ts = uniform_grid(sched, 20)
    target = torch.full((n, 1), x0, dtype=F64)
    ab1 = sched.alpha_bar[-1]
    x1 = ab1.sqrt() * target + (1 - ab1).sqrt() * torch.randn(n, 1, generator=gen(1), dtype=F64)
    states = list(ddpm(denoiser(lambda xt, t: target, "x0", sched), x1, ts, path=sched, variance=variance,
                       generator=gen(2)))
    z_mean, var_err = [], []
    for t, x in zip(ts[1:-1], states[:-1]):
        ab = sched.alpha_bar_at(t).item()
        z_mean.append(abs(x.mean().item() - math.sqrt(ab) * x0) / math.sqrt((1 - ab) / n))
        var_err.append(abs(x.var().item() / (1 - ab) - 1) / math.sqrt(2 / (n - 1)))  # in standard errors
    torch.testing.assert_close(states[-1], target, rtol=0, atol=1e-12)
    assert max(z_mean) < 5
    if variance == "posterior":
        assert max(var_err) < 5
    else:
        assert max(var_err) > 20


# --- exact denoisers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0.003, 0.1, 0.5, 1.0])
def test_empirical_denoiser_is_the_brute_force_posterior_mean(t):
    sched = DiscreteVP.named("linear", 1000)
    points = torch.randn(6, 1, 2, 2, generator=gen(3), dtype=F64)              # six 2x2 "training images"
    xt = torch.randn(5, 1, 2, 2, generator=gen(4), dtype=F64)
    tt = torch.full((5,), t, dtype=F64)
    got = MixtureDenoiser(points, 0.0, sched)(xt, tt)
    ab = sched.alpha_bar_at(t).item()
    mu = points.flatten(1).numpy()
    expected = []
    for x in xt.flatten(1).numpy():  # Bayes, one query at a time: p(n | x_t) ∝ N(x_t; √ᾱ μ_n, (1 − ᾱ) I)
        log_lik = [stats.multivariate_normal.logpdf(x, math.sqrt(ab) * m, (1 - ab) * np.eye(4)) for m in mu]
        expected.append(special.softmax(log_lik) @ mu)
    assert got.shape == xt.shape and got.dtype == F64
    np.testing.assert_allclose(got.flatten(1).numpy(), np.array(expected), rtol=1e-9, atol=1e-12)


def test_two_point_denoiser_is_tanh():
    """Data ±m with equal weight: E[x_0 | x_t] = m tanh(alpha ⟨x_t, m⟩ / sigma²)."""
    sched = DiscreteVP.named("cosine", 1000)
    m = torch.tensor([0.5, -1.0, 0.25], dtype=F64)
    xt = torch.randn(64, 3, generator=gen(5), dtype=F64)
    t = torch.randint(1, 1001, (64,), generator=gen(6)).double() / 1000
    alpha, sigma = sched.alpha_sigma(t, xt)
    expected = m * torch.tanh(alpha * (xt @ m)[:, None] / sigma**2)
    got = MixtureDenoiser(torch.stack([m, -m]), 0.0, sched)(xt, t)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_mixture_denoiser_is_tweedie():
    """E[x_0 | x_t] = (x_t + sigma² ∇ log p_t(x_t)) / alpha with p_t the noised mixture (common.toy2d)."""
    sched = DiscreteVP.named("linear", 1000)
    gm = GaussianMixture(torch.randn(4, 2, generator=gen(7), dtype=F64) * 2, 0.3)
    denoise = MixtureDenoiser(gm.means, gm.std, sched)
    for t in (0.01, 0.3, 0.9):
        ab = sched.alpha_bar_at(t).item()
        alpha, sigma = math.sqrt(ab), math.sqrt(1 - ab)
        xt = gm.noised(alpha, sigma).sample(200, gen(8))
        tweedie = (xt + sigma**2 * gm.noised(alpha, sigma).score(xt)) / alpha
        torch.testing.assert_close(denoise(xt, torch.full((200,), t, dtype=F64)), tweedie, rtol=1e-8, atol=1e-8)


def test_responsibilities_stay_finite_at_the_first_step():
    """At t = 1/T the logits reach ~1e6: the softmax must still give one-hot weights, not NaN."""
    sched = DiscreteVP.named("linear", 1000)
    points = torch.rand(16, 1, 28, 28, generator=gen(9), dtype=torch.float32) * 2 - 1
    t = torch.full((16,), 1 / 1000)
    alpha, sigma = sched.alpha_sigma(t, points)
    xt = alpha * points + sigma * torch.randn(points.shape, generator=gen(10))
    w = responsibilities(xt, points, 0.0, alpha, sigma)
    torch.testing.assert_close(w, torch.eye(16, dtype=F64))


def test_effective_count_runs_from_all_points_to_one():
    """At t = 1 (alpha ≈ 0.006) x_t says almost nothing about which point it came from: count ≈ N; at
    t = 1/T it says everything: count = 1. In between it falls monotonically along a forward path."""
    sched = DiscreteVP.named("linear", 1000)
    points = torch.rand(32, 1, 8, 8, generator=gen(18), dtype=F64) * 2 - 1
    eps = torch.randn(points.shape, generator=gen(19), dtype=F64)
    counts = []
    for t in (1.0, 0.5, 0.2, 0.05, 0.001):
        tt = torch.full((32,), t, dtype=F64)
        alpha, sigma = sched.alpha_sigma(tt, points)
        counts.append(effective_count(alpha * points + sigma * eps, points, alpha, sigma).median().item())
    assert counts[0] > 0.9 * 32 and counts[-1] == pytest.approx(1, abs=1e-9)
    assert all(a >= b for a, b in zip(counts, counts[1:]))


# --- the error bookkeeping and the small helpers -----------------------------------------------------------

@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_implied_errors(prediction):
    """A perfect model has zero error in both; any model's x_0 error is (sigma / alpha)² times its eps error."""
    sched = DiscreteVP.named("linear", 1000)
    x0 = torch.rand(8, 1, 4, 4, generator=gen(11), dtype=F64) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen(12), dtype=F64)
    t = torch.randint(1, 1001, (8,), generator=gen(13)).double() / 1000
    alpha, sigma = sched.alpha_sigma(t, x0)
    c = Coefficients.at(sched, t, x0)
    truth = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0, "velocity": c.d_alpha * x0 + c.d_sigma * eps,
             "score": -eps / sigma}[prediction]
    e_x0, e_eps = reverse.implied_errors(lambda xt, tt: truth, prediction, sched, x0, t, eps)
    assert e_x0.abs().max() < 1e-6 and e_eps.abs().max() < 1e-10
    e_x0, e_eps = reverse.implied_errors(lambda xt, tt: 0.3 * xt + tt[:, None, None, None], prediction, sched,
                                         x0, t, eps)
    torch.testing.assert_close(e_x0, (sigma / alpha).flatten() ** 2 * e_eps, rtol=1e-8, atol=0)


def test_zero_eps_model_has_the_closed_form_x0_error():
    """eps_hat = 0 means x0_hat = x_t / alpha, so the x_0 error is (sigma / alpha)² mean(eps²), image by image."""
    sched = DiscreteVP.named("cosine", 1000)
    x0 = torch.rand(6, 1, 3, 3, generator=gen(14), dtype=F64)
    eps = torch.randn(x0.shape, generator=gen(15), dtype=F64)
    t = torch.tensor([0.001, 0.1, 0.3, 0.5, 0.8, 0.95], dtype=F64)
    e_x0, _ = reverse.implied_errors(lambda xt, tt: torch.zeros_like(xt), "eps", sched, x0, t, eps)
    ab = sched.alpha_bar_at(t)
    torch.testing.assert_close(e_x0, (1 - ab) / ab * eps.pow(2).flatten(1).mean(1), rtol=1e-10, atol=0)


def test_band_times_stay_in_their_band_on_the_lattice():
    sched = DiscreteVP.named("linear", 1000)
    for band in range(10):
        t = band_times(sched, band, 10, 500, gen(band))
        i = t * 1000
        assert torch.allclose(i, i.round()) and (i >= 1).all()
        assert (t >= band / 10).all() and (t <= (band + 1) / 10 + 1e-12).all()


def test_nearest_is_brute_force():
    q, p = torch.randn(7, 1, 3, 3, generator=gen(16)), torch.randn(11, 1, 3, 3, generator=gen(17))
    dist, idx = reverse.nearest(q, p)
    brute = np.linalg.norm(q.flatten(1).double().numpy()[:, None] - p.flatten(1).double().numpy()[None], axis=2)
    np.testing.assert_array_equal(idx.numpy(), brute.argmin(1))
    np.testing.assert_allclose(dist.numpy(), brute.min(1), rtol=1e-12)


# --- the whole run -------------------------------------------------------------------------------------------

def test_smoke_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny tensors: one thread avoids spinning on a busy box
    subprocess.run([sys.executable, "day05/code/train.py", "--preset", "smoke", "--out", str(tmp_path)],
                   cwd=ROOT, timeout=HANG_TIMEOUT, check=True, env=env)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["preset"] == "smoke" and m["oracle_max_abs_error"] < 1e-5
    nn = m["nn_to_subset"]
    assert nn["exact_samples_median"] < 0.05 * nn["test_images_median"]       # copies, not new digits
    assert 1 <= m["exact_distinct_copies"] <= m["config"]["n_samples"]
    bins = m["config"]["t_bins"]
    for table in (m["x0_mse_per_t"], m["eps_mse_per_t"]):
        assert {"eps-net", "x0-net", "v-net", "mean image"} <= set(table)
        assert all(len(v) == bins and all(math.isfinite(e) for e in v) for v in table.values())
    assert set(m["toy"]) >= {"oracle", "exact_mixture", "exact_points", "mlp", "sw_fresh_vs_fresh"}
    for name in ("forward_vs_reverse.png", "predicted_x0.png", "reverse_samples.png", "reverse.gif", "copies.png",
                 "nn_distances.png", "effective_n.png", "x0_error_per_t.png", "eps_error_per_t.png",
                 "toy_oracle.png", "toy_exact_mixture.png", "toy_exact_points.png", "toy_mlp.png"):
        assert 0 < (tmp_path / name).stat().st_size < 1_000_000, name
