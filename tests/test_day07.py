"""Day 07: the guess x̂_0 the day records is exact under an exact denoiser; with σ² = β̃ an ancestral chain on
any respaced grid keeps the forward marginals q(x_s | x_0) of a one-point dataset, while σ² = β inflates their
variance by the amount its recursion predicts; a fixed seed gives bitwise identical samples; and the smoke run, on
the session's day 6 smoke run and its kept checkpoints."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import smoke_run

from common.config import UserError
from common.nets import UNet, UNetConfig
from common.paths import DiscreteVP, uniform_grid
from common.predictions import clipped, denoiser
from common.samplers import ddpm, last

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


def load_day7():
    spec = importlib.util.spec_from_file_location("day07_train", ROOT / "day07" / "code" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["day07_train"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


day7 = load_day7()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors only: on a shared 2-core machine a second thread just spins."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def point_denoiser(schedule: DiscreteVP, x_star: torch.Tensor):
    """The exact ε-predictor of a dataset holding the single image x_star, ε = (x_t − α_t x*) / σ_t, as the
    denoiser day 7 samples with (x̂_0 clipped to [-1, 1], as common.checkpoint.load_ddpm hands it over)."""
    def eps_fn(xt, t):
        alpha, sigma = schedule.alpha_sigma(t, xt)
        return (xt - alpha * x_star) / sigma
    return clipped(denoiser(eps_fn, "eps", schedule), schedule)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_recorded_guess_is_the_data_under_an_exact_denoiser(kind):
    schedule = DiscreteVP.named(kind, 1000)
    x_star = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 1.8 - 0.9
    guesses = []
    fn = day7.recording_x0(point_denoiser(schedule, x_star), guesses)
    x1 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    final = last(ddpm(fn, x1, uniform_grid(schedule, 25), path=schedule, generator=torch.Generator().manual_seed(2)))
    assert len(guesses) == 25
    for g in guesses:  # Eq. 15 of Ho et al. inverts Eq. 4 exactly when ε is the true noise
        torch.testing.assert_close(g.double(), x_star.expand(3, -1, -1, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(final, x_star.expand(3, -1, -1, -1), rtol=0, atol=1e-12)


def beta_variance_recursion(ab: list[float]) -> list[float]:
    """Var(x_s) of the σ² = β chain for a one-point dataset, by Gaussian algebra along a grid of ᾱ values.

    Given the true x_0, x_s = (mean coefficient) x_t + const + noise, with the coefficient of x_t in the
    posterior mean √(ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t) (Eq. 7 of Ho et al.) and noise variance 1 − ᾱ_t/ᾱ_s.
    """
    var, out = 1.0, []
    for ab_t, ab_s in zip(ab[:-1], ab[1:]):
        c = math.sqrt(ab_t / ab_s) * (1 - ab_s) / (1 - ab_t)
        var = c * c * var + (1 - ab_t / ab_s)
        out.append(var)
    return out


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_variance_choice_on_a_respaced_grid(variance):
    """σ² = β̃ leaves x_s ~ N(√ᾱ_s x*, 1 − ᾱ_s) exactly (Eq. 7 is the true posterior); σ² = β adds more."""
    schedule = DiscreteVP.named("linear", 1000)
    x_star = torch.full((1, 1, 1, 1), 0.5, dtype=F64)
    ts = uniform_grid(schedule, 7)
    x1 = torch.randn(40_000, 1, 1, 1, generator=torch.Generator().manual_seed(3), dtype=F64)
    states = list(ddpm(point_denoiser(schedule, x_star), x1, ts, path=schedule, variance=variance,
                       generator=torch.Generator().manual_seed(4)))
    ab = [schedule.alpha_bar_at(t).item() for t in ts]
    expected = [1 - a for a in ab[1:]] if variance == "posterior" else beta_variance_recursion(ab)
    for x, a, var in zip(states[:-1], ab[1:-1], expected[:-1]):
        assert x.mean().item() == pytest.approx(math.sqrt(a) * 0.5, abs=4 * math.sqrt(var / len(x1)))
        assert x.var().item() == pytest.approx(var, rel=4 * math.sqrt(2 / len(x1)))
    if variance == "beta":
        assert all(v > 1 - a for v, a in zip(expected[:-1], ab[1:-1]))  # noisier than q(x_s | x_0) ...
        assert expected[-2] > 2 * (1 - ab[-2])                         # ... by a factor > 2 before the last step


def test_one_step_of_each_variance_in_closed_form():
    """From Var(x_t) = 1 − ᾱ_t, σ² = β̃ gives back 1 − ᾱ_s; σ² = β gives that plus β − β̃."""
    ab_t, ab_s = 4e-5, 0.3
    beta = 1 - ab_t / ab_s
    beta_tilde = (1 - ab_s) / (1 - ab_t) * beta
    c2 = ab_t / ab_s * (1 - ab_s) ** 2 / (1 - ab_t) ** 2
    assert c2 * (1 - ab_t) + beta_tilde == pytest.approx(1 - ab_s, rel=1e-12)  # β̃ keeps the marginal
    var = beta_variance_recursion([ab_t, ab_s])[0] - c2 * ab_t  # the recursion starts from Var(x_1) = 1
    assert var == pytest.approx(1 - ab_s + beta - beta_tilde, rel=1e-12)


@pytest.mark.parametrize("steps", [1000, 25])
def test_variance_ratio_is_posterior_variance_over_beta(steps):
    schedule = DiscreteVP.named("cosine", 1000)
    ts, ratio = day7.variance_ratio(schedule, steps)
    i = [round(t * 1000) for t in ts] + [0]                            # lattice indices of the grid, 1000 -> 0
    for k, (t_idx, s_idx) in enumerate(zip(i[:-1], i[1:])):
        ab_t, ab_s = schedule.alpha_bar[t_idx].item(), schedule.alpha_bar[s_idx].item()
        beta = 1 - ab_t / ab_s                                       # β_{t|s} of the respaced chain
        beta_tilde = (1 - ab_s) / (1 - ab_t) * beta                  # Eq. 7 of Ho et al.
        assert ratio[k] == pytest.approx(beta_tilde / beta, rel=1e-9)
    assert ratio[-1] == 0 and 0 < min(ratio[:-1]) and max(ratio) <= 1   # β̃ ≤ β, and no noise on the last step


def test_same_seed_gives_bitwise_identical_samples():
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=8, n_res=1)).eval()
    schedule = DiscreteVP.named("cosine", 1000)
    denoise = clipped(denoiser(model, "v", schedule), schedule)
    x1 = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    cfg = day7.Config(batch=2)
    a, b, c = (day7.draw(denoise, schedule, x1, 4, "posterior", s, cfg, torch.device("cpu")) for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3  # the same x_1 with other sampler noise is another sample


# --- the whole run -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke(tmp_path_factory, day6_smoke):
    """On the session's day 6 smoke run (conftest); making a missing one is common.run.earlier_checkpoint's test."""
    out = tmp_path_factory.mktemp("day07")
    result = smoke_run(7, out, f"--day6_results={day6_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out, result.stdout


def test_smoke_run(smoke):
    out, stdout = smoke
    assert "checkpoint at" not in stdout  # day 6's came from the session's smoke run: nothing trained here
    m = json.loads((out / "metrics.json").read_text())
    assert m["preset"] == "smoke" and m["model"]["preset"] == "smoke"
    assert set(m["settings"]) == {"posterior-20", "posterior-5", "beta-20", "beta-5"}
    assert m["n_common"] == 16  # nfe_budget=320 allows 16 samples of 20 steps, the 5-step ones stop at n_eval=32
    for s in m["settings"].values():
        assert s["n"] == {20: 16, 5: 32}[s["steps"]] and s["at_n_common"]["n"] == 16
        for score in (s, s["at_n_common"]):
            assert math.isfinite(score["fid"]) and score["fid_ci95"][0] <= score["fid"] <= score["fid_ci95"][1]
        assert s["seconds_per_sample"] > 0 and 0 <= s["confident_frac"] <= 1
    assert m["npz"]["n"] == 48 and m["npz"]["setting"] == "posterior-5"
    assert m["determinism"]["bitwise_equal_same_seed"] and m["determinism"]["max_abs_diff_same_seed"] == 0
    assert m["determinism"]["mean_abs_diff_other_seed"] > 0
    assert set(m["beta_vs_posterior_mean_abs_diff"]) == {"20 steps", "5 steps"}
    assert [c["step"] for c in m["checkpoints"].values()] == [10, 20, 30]
    for name in ("samples_by_setting.png", "fid_vs_steps.png", "variance_ratio.png", "trajectory.png", "trajectory.gif",
                 "x0_guess_error.png", "fixed_noise.png", "checkpoints.png", "samples.npz"):
        assert 0 < (out / name).stat().st_size < 1_000_000, name


def test_an_unfinished_day6_checkpoint_is_refused(day6_smoke):
    with pytest.raises(UserError, match="still training"):
        day7.load_ddpm(day6_smoke / "checkpoint_step000010.pt", torch.device("cpu"))
