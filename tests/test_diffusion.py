"""DDPM on the shared modules against independent references: the DiscreteVP schedules (common.paths)
re-derived in numpy, the posterior (common.samplers) by Gaussian conditioning, KLs (common.diffusion)
against torch.distributions, the prediction tables (common.predictions) by float64 round trips, the
forward chain by simulation, one DDPM step against diffusers' DDPMScheduler, the whole sampler driven
by the exact score of the 8-Gaussians mixture, and the training loss by replaying its draws."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from common.config import UserError
from common.diffusion import diffusion_loss, gaussian_kl, kl_prior, min_snr_weight
from common.paths import DiscreteVP, make_betas, uniform_grid
from common.predictions import PREDICTIONS, TARGET, TO_PAIR, Coefficients, clipped, denoiser
from common.samplers import ddpm, ddpm_step, posterior
from common.toy2d import eight_gaussians, sliced_wasserstein

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- 1. schedules: closed forms -----------------------------------------------------------------------

def numpy_betas(kind: str, T: int) -> np.ndarray:
    """The four schedules written again from their papers, in numpy float64."""
    if kind == "linear":
        return np.linspace(1e-4, 0.02, T)
    if kind == "quadratic":
        return np.linspace(1e-4 ** 0.5, 0.02 ** 0.5, T) ** 2
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-np.linspace(-6, 6, T))) * (0.02 - 1e-4) + 1e-4
    f = [math.cos((i / T + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(T + 1)]  # Nichol & Dhariwal Eq. 17
    return np.array([min(1 - f[i + 1] / f[i], 0.999) for i in range(T)])


@pytest.mark.parametrize("kind", ["linear", "cosine", "quadratic", "sigmoid"])
@pytest.mark.parametrize("T", [10, 1000])
def test_alpha_bar_is_cumulative_product(kind, T):
    sched = DiscreteVP.named(kind, T)
    expected = np.concatenate([[1.0], np.cumprod(1 - numpy_betas(kind, T))])
    assert sched.alpha_bar.dtype == F64 and sched.n_steps == T
    np.testing.assert_allclose(sched.alpha_bar.numpy(), expected, rtol=1e-12, atol=0)
    assert ((sched.betas > 0) & (sched.betas < 1)).all()
    assert (sched.alpha_bar.diff() < 0).all()  # strictly decreasing
    # alpha_bar_at reads the lattice: t = i / T -> index i, despite float rounding of i / T, both in float64
    # and in the float32 that a network's time (t.to(x_t)) and so an exact oracle's time arrive in
    i = torch.arange(T + 1)
    assert torch.equal(sched.alpha_bar_at(i.double() / T), sched.alpha_bar)
    assert torch.equal(sched.alpha_bar_at(i.float() / T), sched.alpha_bar)


def test_cosine_alpha_bar_matches_closed_form_where_unclipped():
    T, s = 1000, 0.008
    sched = DiscreteVP.named("cosine", T)
    capped = (sched.betas >= 0.999).nonzero()
    first = int(capped[0]) if len(capped) else T  # β_{first+1} is the first clipped one
    assert first == T - 1  # only the very last β hits the 0.999 cap
    t = np.arange(first + 1) / T
    closed = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2 / np.cos(s / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(sched.alpha_bar[: first + 1].numpy(), closed, rtol=1e-10)
    # past the cap: ᾱ_T = 0.001 ᾱ_{T-1} ≈ 2e-9 where the formula gives cos²(π/2) / f(0) ≈ 4e-33
    assert sched.alpha_bar[-1].item() == pytest.approx(0.001 * closed[-1], rel=1e-9)


def test_linear_endpoints_and_unknown_schedule():
    betas = make_betas("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    with pytest.raises(UserError):
        DiscreteVP.named("cosinus")
    with pytest.raises(UserError):
        make_betas("exponential", 10)


# --- 2. posterior q(x_s | x_t, x_0) (common.samplers.posterior) -----------------------------------------

def posterior_by_conditioning(x0: np.ndarray, xt: np.ndarray, ab_s: float, ab_t: float):
    """Write (x_s, x_t) given x_0 as b + A e with e ~ N(0, I_2), then condition the joint Gaussian."""
    a_ts = ab_t / ab_s  # x_t = sqrt(a_ts) x_s + sqrt(1 - a_ts) e2
    A = np.array([[math.sqrt(1 - ab_s), 0.0],
                  [math.sqrt(a_ts) * math.sqrt(1 - ab_s), math.sqrt(1 - a_ts)]])
    cov = A @ A.T
    b_s, b_t = math.sqrt(ab_s) * x0, math.sqrt(a_ts) * math.sqrt(ab_s) * x0
    mean = b_s + cov[0, 1] / cov[1, 1] * (xt - b_t)
    var = cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]
    return mean, var


PAIRS = [(0, 1), (1, 2), (499, 500), (999, 1000),  # adjacent
         (0, 200), (100, 600), (250, 1000), (800, 1000), (20, 40)]  # respaced


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_matches_gaussian_conditioning(kind):
    sched = DiscreteVP.named(kind, 1000)
    x0 = torch.randn(50, generator=gen(1), dtype=F64)
    xt = 2 * torch.randn(50, generator=gen(2), dtype=F64)
    for i_s, i_t in PAIRS:
        ab_s, ab_t = sched.alpha_bar[i_s], sched.alpha_bar[i_t]
        mean, var = posterior(sched, x0, xt, i_t / 1000, i_s / 1000)
        ref_mean, ref_var = posterior_by_conditioning(x0.numpy(), xt.numpy(), ab_s.item(), ab_t.item())
        np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-9, atol=1e-12, err_msg=f"{(i_s, i_t)}")
        assert var.item() == pytest.approx(ref_var, rel=1e-9, abs=1e-15)


def test_adjacent_posterior_matches_ho_et_al():
    sched = DiscreteVP.named("linear", 1000)
    x0 = torch.randn(20, generator=gen(3), dtype=F64)
    xt = torch.randn(20, generator=gen(4), dtype=F64)
    for i in [1, 2, 10, 500, 1000]:
        beta = sched.betas[i - 1]  # β_i, used directly rather than through ᾱ_i / ᾱ_{i-1}
        ab, ab_prev = sched.alpha_bar[i], sched.alpha_bar[i - 1]
        mean, var = posterior(sched, x0, xt, i / 1000, (i - 1) / 1000)
        beta_tilde = (1 - ab_prev) / (1 - ab) * beta  # Eq. 7 of Ho et al.
        mu_tilde = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * xt
        torch.testing.assert_close(var, beta_tilde, rtol=1e-10, atol=1e-15)
        torch.testing.assert_close(mean, mu_tilde, rtol=1e-10, atol=1e-12)


# --- 3. KL terms -----------------------------------------------------------------------------------------

def test_gaussian_kl_matches_torch_distributions():
    g = gen(5)
    m1, m2 = torch.randn(100, generator=g, dtype=F64), torch.randn(100, generator=g, dtype=F64)
    v1, v2 = torch.rand(100, generator=g, dtype=F64) + 0.05, torch.rand(100, generator=g, dtype=F64) * 3 + 0.05
    N = torch.distributions.Normal
    expected = torch.distributions.kl_divergence(N(m1, v1.sqrt()), N(m2, v2.sqrt()))
    torch.testing.assert_close(gaussian_kl(m1, v1, m2, v2), expected, rtol=1e-10, atol=1e-12)
    assert gaussian_kl(m1, v1, m1, v1).abs().max() < 1e-14


def test_kl_prior_closed_form_and_size():
    x0 = torch.rand(16, 3, 8, 8, generator=gen(6), dtype=F64) * 2 - 1  # images in [-1, 1]
    N = torch.distributions.Normal
    for T in [10, 1000]:
        ab = DiscreteVP.named("linear", T).alpha_bar[-1]
        expected = torch.distributions.kl_divergence(N(ab.sqrt() * x0, (1 - ab).sqrt()), N(0.0, 1.0)).sum((1, 2, 3))
        torch.testing.assert_close(kl_prior(DiscreteVP.named("linear", T), x0), expected, rtol=1e-10, atol=1e-15)
    per_dim = kl_prior(DiscreteVP.named("linear", 1000), x0) / x0[0].numel()
    assert per_dim.max() < 1e-4  # ᾱ_1 ≈ 4e-5: x_1 is almost exactly N(0, I)
    per_dim_short = kl_prior(DiscreteVP.named("linear", 10), x0) / x0[0].numel()
    assert per_dim_short.min() > 0.1  # ᾱ_1 ≈ 0.9: ten small βs leave most of the signal


# --- 4. parameterisations: the tables of common.predictions ------------------------------------------------

def random_levels(n: int, seed: int):
    """Random VP levels written as an angle φ: alpha = cos φ, sigma = sin φ, derivatives taken in φ."""
    g = gen(seed)
    alpha = torch.rand(n, 1, generator=g, dtype=F64) * 0.98 + 0.01  # in (0, 1), away from the ends
    x0, eps = torch.randn(n, 4, generator=g, dtype=F64), torch.randn(n, 4, generator=g, dtype=F64)
    sigma = (1 - alpha ** 2).sqrt()
    return x0, eps, Coefficients(alpha, sigma, -sigma, alpha, torch.ones_like(alpha))


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_to_pair_inverts_target(kind):
    x0, eps, c = random_levels(500, 7)
    xt = c.alpha * x0 + c.sigma * eps
    x0_back, eps_back = TO_PAIR[kind](xt, TARGET[kind](x0, eps, c), c)
    assert (x0_back - x0).abs().max() < 1e-12 and (eps_back - eps).abs().max() < 1e-12
    # the other way: any (x_t, out) determines (x0, eps), which give back out and x_t
    out, xt2 = torch.randn(500, 4, generator=gen(9), dtype=F64), torch.randn(500, 4, generator=gen(10), dtype=F64)
    x0_2, eps_2 = TO_PAIR[kind](xt2, out, c)
    assert (TARGET[kind](x0_2, eps_2, c) - out).abs().max() < 1e-12
    assert (c.alpha * x0_2 + c.sigma * eps_2 - xt2).abs().max() < 1e-12


def test_x0_eps_round_trip():
    """ε̂ from an x0 prediction, then x̂0 from that ε̂ as an eps prediction: back to x0 (Eq. 15 of Ho et al.)."""
    x0, eps, c = random_levels(500, 7)
    xt = c.alpha * x0 + c.sigma * eps
    _, eps_back = TO_PAIR["x0"](xt, x0, c)
    assert (eps_back - eps).abs().max() < 1e-12
    assert (TO_PAIR["eps"](xt, eps_back, c)[0] - x0).abs().max() < 1e-12


def test_v_is_velocity_of_the_angle():
    # Salimans & Ho §4: with alpha = cos φ, sigma = sin φ, v = d x_φ / dφ (here by autograd); so v is the
    # velocity target of the path written in φ.
    x0, eps, c = random_levels(50, 11)
    phi = torch.atan2(c.sigma, c.alpha).expand_as(x0).clone().requires_grad_(True)  # (50, 4), one angle per entry
    xt = torch.cos(phi) * x0 + torch.sin(phi) * eps
    (dx_dphi,) = torch.autograd.grad(xt.sum(), phi)
    torch.testing.assert_close(dx_dphi, TARGET["v"](x0, eps, c), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx_dphi, TARGET["velocity"](x0, eps, c), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_denoiser_recovers_the_pair_from_an_exact_prediction(prediction):
    sched = DiscreteVP.named("cosine", 1000)
    g = gen(12)
    x0, eps = torch.randn(32, 3, 4, 4, generator=g, dtype=F64), torch.randn(32, 3, 4, 4, generator=g, dtype=F64)
    i = torch.randint(1, 1001, (32,), generator=g)
    t = i.double() / 1000
    ab = sched.alpha_bar[i].reshape(-1, 1, 1, 1)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    d_alpha, d_sigma = (f(t).reshape(-1, 1, 1, 1) for f in (sched.d_alpha, sched.d_sigma))
    xt = alpha * x0 + sigma * eps
    targets = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0,  # written out, not common's TARGET
               "velocity": d_alpha * x0 + d_sigma * eps, "score": -eps / sigma}
    seen = {}

    def fake(x, t):
        seen["t"] = t
        return targets[prediction]
    got = denoiser(fake, prediction, sched)(xt, t)
    torch.testing.assert_close(got.eps, eps, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got.x0, x0, rtol=1e-10, atol=1e-10)
    assert torch.equal(seen["t"], t)  # the network sees the times it was asked about
    with pytest.raises(UserError):
        denoiser(fake, "epsilon", sched)


# --- 5. forward process -------------------------------------------------------------------------------------

def test_iterated_chain_has_closed_form_marginals():
    sched = DiscreteVP.named("linear", 1000)
    n, x0 = 20_000, torch.tensor([-1.0, 0.3, 2.0], dtype=F64)
    g = gen(13)
    x = x0[:, None].repeat(1, n)  # (3, n): one chain per sample and start value
    checkpoints = {1, 10, 100, 500, 1000}
    for i in range(1, 1001):
        beta = sched.betas[i - 1]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=g, dtype=F64)  # Eq. 2 of Ho
        if i not in checkpoints:
            continue
        ab = sched.alpha_bar_at(i / 1000).item()
        mean, var = math.sqrt(ab) * x0, 1 - ab
        se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / (n - 1))
        assert (x.mean(1) - mean).abs().max() < 5 * se_mean, i
        assert (x.var(1) - var).abs().max() < 5 * se_var, i
        for row, m in zip(x, mean):
            p = stats.kstest(row.numpy(), "norm", args=(m.item(), math.sqrt(var))).pvalue
            assert p > 1e-3, (i, m.item(), p)


def test_sample_by_hand():
    sched = DiscreteVP.named("cosine", 1000)
    g = gen(14)
    x0, eps = torch.randn(6, 3, 4, 4, generator=g, dtype=F64), torch.randn(6, 3, 4, 4, generator=g, dtype=F64)
    idx = [0, 1, 250, 500, 999, 1000]
    ab = sched.alpha_bar.numpy()[idx]
    expected = (np.sqrt(ab)[:, None, None, None] * x0.numpy()
                + np.sqrt(1 - ab)[:, None, None, None] * eps.numpy())
    got = sched.sample(x0, torch.tensor(idx, dtype=F64) / 1000, eps)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert torch.equal(got[0], x0[0])  # t = 0 is data


# --- 6. DDPM against diffusers --------------------------------------------------------------------------------

OURS = {"linear": "linear", "squaredcos_cap_v2": "cosine", "scaled_linear": "quadratic", "sigmoid": "sigmoid"}
VARIANCE = {"fixed_small": "posterior", "fixed_large": "beta"}


def diffusers_ddpm(beta_schedule: str, variance_type: str, clip: bool, T: int = 1000):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, variance_type=variance_type,
                                   clip_sample=clip, prediction_type="epsilon")


@pytest.mark.parametrize("beta_schedule", list(OURS))
def test_betas_match_diffusers(beta_schedule):
    # diffusers builds its schedules in float32 (the cosine one in Python floats, then float32), so
    # agreement is to float32 precision; its float32 cumprod loses ~1e-5 relative where ᾱ ~ 1e-9.
    ref = diffusers_ddpm(beta_schedule, "fixed_small", True)
    ours = DiscreteVP.named(OURS[beta_schedule], 1000)
    torch.testing.assert_close(ours.betas, ref.betas.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(ours.alpha_bar[1:], ref.alphas_cumprod.double(), rtol=5e-5, atol=0)


def eps_denoiser(eps: torch.Tensor, sched: DiscreteVP, clip: bool):
    """A network that always predicts `eps`, as the denoiser DDPM samples with (x̂0 clipped to [-1, 1] if clip)."""
    denoise = denoiser(lambda xt, t: eps, "eps", sched)
    return clipped(denoise, sched) if clip else denoise


def one_step_each(ref, sched, k: int, prev: int, variance: str, clip: bool, seed: int):
    """(ours, diffusers) x_prev from diffusers timestep k; diffusers' k is our t = (k + 1) / T."""
    T = sched.n_steps
    x = 1.5 * torch.randn(64, 2, generator=gen(100 + k), dtype=F64)
    eps = torch.randn(64, 2, generator=gen(200 + k), dtype=F64)
    t, s = torch.tensor([(k + 1) / T, (prev + 1) / T], dtype=F64)
    ours = ddpm_step(eps_denoiser(eps, sched, clip), x, t, s, path=sched, variance=variance, generator=gen(seed))
    theirs = ref.step(eps, k, x, generator=gen(seed)).prev_sample
    return ours, theirs


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_ddpm_step_matches_diffusers(beta_schedule, variance_type, clip):
    ref = diffusers_ddpm(beta_schedule, variance_type, clip)
    sched = DiscreteVP.named(OURS[beta_schedule], 1000)
    # Hand diffusers our float64 ᾱ (the schedules agree to float32, tested above) so that the
    # step arithmetic is compared at float64 precision; both draw N(0, I) once from the generator.
    ref.alphas_cumprod = sched.alpha_bar[1:].clone()
    ref.one = torch.tensor(1.0, dtype=F64)
    for k in [0, 1, 10, 500, 998, 999]:
        ours, theirs = one_step_each(ref, sched, k, k - 1, VARIANCE[variance_type], clip, seed=7)
        assert ours.dtype == theirs.dtype == F64
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10, msg=f"k={k}")
        other_seed, _ = one_step_each(ref, sched, k, k - 1, VARIANCE[variance_type], clip, seed=8)
        assert torch.equal(other_seed, ours) == (k == 0)  # the last step adds no noise, the others do


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_respaced_ddpm_step_matches_diffusers(variance_type):
    # diffusers' set_timesteps(10) steps 900 -> 800 -> ... -> 0 -> "-1" (ᾱ = 1): our 0.901 -> 0.801 ... -> 0.
    ref = diffusers_ddpm("squaredcos_cap_v2", variance_type, True)
    ref.set_timesteps(10)
    sched = DiscreteVP.named("cosine", 1000)
    ref.alphas_cumprod = sched.alpha_bar[1:].clone()
    ref.one = torch.tensor(1.0, dtype=F64)
    ks = ref.timesteps.tolist() + [-1]
    for k, prev in zip(ks[:-1], ks[1:]):
        ours, theirs = one_step_each(ref, sched, k, prev, VARIANCE[variance_type], True, seed=9)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10, msg=f"k={k}")


def test_ddpm_step_matches_diffusers_float32_out_of_the_box():
    # No ᾱ injection: diffusers' own float32 schedule against ours, float32 samples.
    ref = diffusers_ddpm("linear", "fixed_small", True)
    sched = DiscreteVP.named("linear", 1000)
    for k in [0, 10, 500, 999]:
        x = torch.randn(64, 2, generator=gen(k))
        eps = torch.randn(64, 2, generator=gen(k + 1))
        ts = torch.tensor([(k + 1) / 1000, k / 1000], dtype=F64)
        ours = next(ddpm(eps_denoiser(eps, sched, clip=True), x, ts, path=sched, generator=gen(3)))
        theirs = ref.step(eps, k, x, generator=gen(3)).prev_sample
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


# --- 7. sampling with the exact score of a Gaussian mixture ---------------------------------------------------

MIX = eight_gaussians(F64)
N_SAMPLES = 4000


def exact_eps_fn(score_schedule: DiscreteVP, scale: float = 1.0):
    """A network predicting eps(x_t) = −sigma_t ∇log p_t(x_t), p_t the mixture noised with `score_schedule`'s ᾱ_t."""
    def eps_fn(x, t):
        ab = score_schedule.alpha_bar_at(t[0]).item()
        alpha, sigma = math.sqrt(ab), math.sqrt(1 - ab)
        return -sigma * scale * MIX.noised(alpha, sigma).score(x)
    return eps_fn


def sample_mixture(eps_fn, sched: DiscreteVP, variance: str = "beta") -> torch.Tensor:
    x = torch.randn(N_SAMPLES, 2, generator=gen(3), dtype=F64)
    *_, x = ddpm(denoiser(eps_fn, "eps", sched), x, uniform_grid(sched, 200), path=sched, variance=variance,
                 generator=gen(4))
    return x


def within_mode_std(x: torch.Tensor) -> float:
    """Pooled per-coordinate std around the nearest mean (the mixture's is 0.1)."""
    return (torch.cdist(x, MIX.means).min(1).values.pow(2).mean() / 2).sqrt().item()


def sw_threshold(ref: torch.Tensor) -> float:
    # Two independent samples of 4000 are 0.017 to 0.037 apart (three seeds; 0.032 for these):
    # SW on eight separated modes is dominated by the random mode counts. Twice it is 0.063.
    return 2 * sliced_wasserstein(ref, MIX.sample(N_SAMPLES, gen(2)), generator=gen(9))


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_exact_score_sampler_reproduces_mixture(variance):
    sched = DiscreteVP.named("cosine", 1000)
    x = sample_mixture(exact_eps_fn(sched), sched, variance)
    ref = MIX.sample(N_SAMPLES, gen(1))
    assert sliced_wasserstein(x, ref, generator=gen(9)) < sw_threshold(ref)  # measured 0.019 for both
    mode = torch.cdist(x, MIX.means).argmin(1)
    share = torch.bincount(mode, minlength=8) / N_SAMPLES
    assert ((share - 0.125).abs() < 0.03).all(), share  # measured 0.122 to 0.130
    assert abs(x.norm(dim=1).mean().item() - 2.0) < 0.02  # radius of the circle: measured 2.002
    # The within-mode spread is the sharp check (its SE is ~0.001). 200 steps with an exact
    # denoiser: β (upper bound) over-disperses slightly (0.1015), β̃ (lower bound) under-disperses
    # (0.092; both reach 0.100 / 0.098 at 1000 steps), as Bao et al. 2022 (Analytic-DPM) explain.
    lo, hi = (0.095, 0.106) if variance == "beta" else (0.085, 0.100)
    assert lo < within_mode_std(x) < hi


def test_score_from_wrong_schedule_fails():
    # Stepping with cosine but scoring with linear ᾱ: measured SW 0.106 (> 0.063), spread 0.167, radius 1.85.
    sched = DiscreteVP.named("cosine", 1000)
    x = sample_mixture(exact_eps_fn(DiscreteVP.named("linear", 1000)), sched)
    ref = MIX.sample(N_SAMPLES, gen(1))
    assert sliced_wasserstein(x, ref, generator=gen(9)) > sw_threshold(ref)
    assert within_mode_std(x) > 0.13


@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_misscaled_score_fails(scale):
    # SW cannot see these (0.075 and 0.027) but the spread can: measured 0.145 and 0.082.
    sched = DiscreteVP.named("cosine", 1000)
    x = sample_mixture(exact_eps_fn(sched, scale), sched)
    assert not 0.095 < within_mode_std(x) < 0.106


# --- 8. training loss ------------------------------------------------------------------------------------------

def replay_draws(sched: DiscreteVP, x0: torch.Tensor, seed: int):
    """The t and eps diffusion_loss draws from a generator seeded with `seed` (t first, then eps), and
    (alpha, sigma, d_alpha, d_sigma) at t: the first two read off the ᾱ table, the derivatives off the path."""
    g = gen(seed)
    t = torch.randint(1, sched.n_steps + 1, (len(x0),), generator=g).double() / sched.n_steps
    eps = torch.randn(x0.shape, generator=g).to(x0)
    shape = (-1, *[1] * (x0.dim() - 1))
    ab = sched.alpha_bar[(t * sched.n_steps).round().long()].reshape(shape)
    return t, eps, ab.sqrt(), (1 - ab).sqrt(), sched.d_alpha(t).reshape(shape), sched.d_sigma(t).reshape(shape)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_diffusion_loss_of_zero_model_is_mean_square_target(prediction):
    sched = DiscreteVP.named("linear", 1000)
    x0 = torch.rand(8, 3, 4, 4, generator=gen(15), dtype=F64) * 2 - 1
    t, eps, a, s, da, ds = replay_draws(sched, x0, seed=16)
    target = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "velocity": da * x0 + ds * eps,
              "score": -eps / s}[prediction]
    loss, t_out = diffusion_loss(lambda xt, t: torch.zeros_like(xt), x0, sched, prediction, generator=gen(16))
    assert torch.equal(t_out, t)
    torch.testing.assert_close(loss, target.pow(2).mean((1, 2, 3)))


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_diffusion_loss_of_oracle_is_zero(prediction):
    # A model that knows x0 can compute every target from (x_t, t); the other targets are far off.
    sched = DiscreteVP.named("cosine", 1000)
    x0 = torch.rand(8, 3, 4, 4, generator=gen(17), dtype=F64) * 2 - 1
    _, _, a, s, da, ds = replay_draws(sched, x0, seed=18)
    oracles = {"eps": lambda xt: (xt - a * x0) / s, "x0": lambda xt: x0,
               "v": lambda xt: a * (xt - a * x0) / s - s * x0,
               "velocity": lambda xt: da * x0 + ds * (xt - a * x0) / s,
               "score": lambda xt: -(xt - a * x0) / s ** 2}
    for name, oracle in oracles.items():
        loss, _ = diffusion_loss(lambda xt, t, f=oracle: f(xt), x0, sched, prediction, generator=gen(18))
        assert (loss.max() < 1e-10) == (name == prediction), (name, loss.max().item())


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [0.5, 5.0, 1e9])
def test_min_snr_loss_is_clamped_snr_times_x0_error(prediction, gamma):
    # A model whose implied x0 is off by delta, asked in each parameterisation: Min-SNR's weighted loss must be
    # min(SNR, γ) ‖delta‖² whatever the target (Hang et al. Eq. 7), so the three parameterisations agree.
    sched = DiscreteVP.named("cosine", 1000)
    x0 = torch.rand(8, 3, 4, 4, generator=gen(19), dtype=F64) * 2 - 1
    delta = 0.1 * torch.randn(x0.shape, generator=gen(20), dtype=F64)
    _, _, a, s, _, _ = replay_draws(sched, x0, seed=21)
    x0_hat = x0 + delta
    outputs = {"x0": lambda xt: x0_hat, "eps": lambda xt: (xt - a * x0_hat) / s,
               "v": lambda xt: a * (xt - a * x0_hat) / s - s * x0_hat}
    loss, _ = diffusion_loss(lambda xt, t: outputs[prediction](xt), x0, sched, prediction, generator=gen(21),
                             weight=min_snr_weight(prediction, gamma))
    snr = (a / s).pow(2).flatten()
    torch.testing.assert_close(loss, snr.clamp(max=gamma) * delta.pow(2).mean((1, 2, 3)))


def test_min_snr_weight_refuses_other_predictions():
    for prediction in ("velocity", "score"):
        with pytest.raises(UserError):
            min_snr_weight(prediction)


# --- 9. sampling grids -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 50, 999, 1000])
def test_uniform_grid(n):
    sched = DiscreteVP.named("linear", 1000)
    ts = uniform_grid(sched, n)
    assert ts.dtype == F64 and len(ts) == n + 1
    assert ts[0] == 1 and ts[-1] == 0
    assert (ts.diff() < 0).all()
    i = ts * 1000
    assert (i - i.round()).abs().max() < 1e-9  # on the lattice
    if n == 1000:
        assert torch.equal(sched.index(ts), torch.arange(1000, -1, -1))


@pytest.mark.parametrize("n", [0, -3, 1001])
def test_uniform_grid_out_of_range(n):
    with pytest.raises(UserError):
        uniform_grid(DiscreteVP.named("linear", 1000), n)
