"""common.samplers against independent references: the pre-refactor DDPM sampler (kept below as an oracle)
on fixed noise, DDIM's two special cases (η = 1 is the DDPM step, η = 0 on the straight path is Euler),
the convergence orders of Euler and Heun on an ODE solved in closed form, torchdiffeq's dopri5 on the exact
8-Gaussians probability-flow ODE, and every sampler reproducing the 8-Gaussians mixture from its exact
denoiser."""
import math

import pytest
import torch
from torchdiffeq import odeint

from common.config import UserError
from common.denoisers import MixtureDenoiser
from common.paths import DiscreteVP, Linear, VPCosine, edm_grid, uniform_grid
from common.predictions import Coefficients, clipped, denoiser, velocity
from common.samplers import (
    Counted,
    ddim,
    ddim_step,
    ddpm,
    ddpm_step,
    edm_heun,
    edm_heun_step,
    euler,
    heun,
    last,
    nfe,
    posterior,
    posterior_variance,
    rk4,
    sample_batched,
    transition,
)
from common.toy2d import eight_gaussians, sliced_wasserstein

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")
MIXTURE = eight_gaussians(F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_8g(path):
    """The exact denoiser of the 8-Gaussians mixture on `path`, as a (x̂0, ε̂) denoiser."""
    return denoiser(MixtureDenoiser(MIXTURE.means, MIXTURE.std, path), "x0", path)


# --- the pre-refactor implementation, kept as an oracle -------------------------------------------------
# A short copy of `Schedule.alpha_sigma`, `posterior`, `eps_model` and `ddpm` from common/diffusion.py as
# committed before the move to common.paths / predictions / samplers (`git show 4503943:common/diffusion.py`):
# ᾱ read from the table at round(t·T), all arithmetic in the batch's dtype, one ε adapter per prediction.

def old_alpha_bar_at(alpha_bar, t):
    return alpha_bar[torch.round(torch.as_tensor(t).cpu().double() * (len(alpha_bar) - 1)).long()]


def old_posterior(x0, xt, ab_t, ab_s):
    beta_ts = 1 - ab_t / ab_s
    mean = (ab_s.sqrt() * beta_ts * x0 + (ab_t / ab_s).sqrt() * (1 - ab_s) * xt) / (1 - ab_t)
    return mean, (1 - ab_s) / (1 - ab_t) * beta_ts


def old_eps_model(model, prediction, alpha_bar):
    eps_from = {"eps": lambda xt, out, a, s: out, "x0": lambda xt, x0, a, s: (xt - a * x0) / s,
                "v": lambda xt, v, a, s: s * xt + a * v}[prediction]

    def predict_eps(xt, t):
        ab = old_alpha_bar_at(alpha_bar, t).reshape(-1, *[1] * (xt.dim() - 1))
        return eps_from(xt, model(xt, t.to(xt)), ab.sqrt().to(xt), (1 - ab).sqrt().to(xt))
    return predict_eps


def old_ddpm(eps_fn, x, ts, alpha_bar, variance="posterior", clip_x0=True, generator=None):
    for t, s in zip(ts[:-1], ts[1:]):
        ab_t, ab_s = old_alpha_bar_at(alpha_bar, t).to(x), old_alpha_bar_at(alpha_bar, s).to(x)
        eps = eps_fn(x, t.expand(len(x)))
        x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        mean, var = old_posterior(x0, x, ab_t, ab_s)
        if variance == "beta":
            var = 1 - ab_t / ab_s
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = mean + (var.sqrt() * noise if s > 0 else 0)
        yield x


def toy_network(prediction):
    """A small deterministic 'network' (x, t) -> its prediction, tame enough that samples stay O(1): the ε one
    is near the optimum for data N(0, 0.5²) on a cosine-like path, with a wiggle that vanishes at t = 1."""
    def net(x, t):
        t = t.reshape(-1, *[1] * (x.dim() - 1))
        if prediction == "eps":
            c, s = torch.cos(math.pi / 2 * t), torch.sin(math.pi / 2 * t)
            return x * s / (0.25 * c ** 2 + s ** 2) + 0.1 * (1 - t) * torch.sin(3 * x + 2 * t)
        return 0.8 * torch.tanh(x) + 0.3 * torch.sin(3 * t + x) - 0.2 * t
    return net


DDPM_CASES = {"cosine-1000/25": (DiscreteVP.named("cosine"), 25), "linear-20/20": (DiscreteVP.named("linear", 20), 20)}


@pytest.mark.parametrize("variance", ["posterior", "beta"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("case", list(DDPM_CASES))
def test_ddpm_matches_the_pre_refactor_sampler(case, prediction, variance):
    path, steps = DDPM_CASES[case]
    ts, net = uniform_grid(path, steps), toy_network(prediction)
    for dtype, tol in ((F64, 1e-10), (torch.float32, 1e-4)):
        x1 = torch.randn(6, 2, 3, 3, generator=gen(0), dtype=dtype)
        old = last(old_ddpm(old_eps_model(net, prediction, path.alpha_bar), x1, ts, path.alpha_bar, variance,
                            clip_x0=False, generator=gen(1)))
        new = last(ddpm(denoiser(net, prediction, path), x1, ts, path=path, variance=variance, generator=gen(1)))
        assert new.dtype == dtype and old.abs().max() < 10
        assert (new - old).abs().max() <= tol, (dtype, float((new - old).abs().max()))


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_with_clipping_matches_the_pre_refactor_default(variance):
    """The old sampler clipped x̂0 to [-1, 1] by default; the new one does it with the `clipped` wrapper."""
    path, net = DiscreteVP.named("cosine"), toy_network("eps")
    ts = uniform_grid(path, 25)
    x1 = torch.randn(6, 2, 3, 3, generator=gen(0), dtype=F64)
    old = last(old_ddpm(old_eps_model(net, "eps", path.alpha_bar), x1, ts, path.alpha_bar, variance, True, gen(1)))
    new = last(ddpm(clipped(denoiser(net, "eps", path), path), x1, ts, path=path, variance=variance, generator=gen(1)))
    assert (new - old).abs().max() <= 1e-10


# --- single steps ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [DiscreteVP.named("cosine"), VPCosine(), Linear()], ids=lambda p: p.name)
def test_posterior_is_gaussian_conditioning(path):
    """q(x_s | x_t, x0) from the joint Gaussian of (x_s, x_t) given x0: Cov = alpha_{t|s} sigma_s², Var = sigma_t²."""
    x0, xt = torch.randn(5, 2, generator=gen(2), dtype=F64), torch.randn(5, 2, generator=gen(3), dtype=F64)
    for t, s in ((1.0, 0.9), (0.7, 0.3), (0.05, 0.002)):
        a_t, s_t, a_s, s_s = (float(f(torch.tensor(u, dtype=F64))) for u in (t, s) for f in (path.alpha, path.sigma))
        a_ts = a_t / a_s
        cov, var_t = a_ts * s_s ** 2, s_t ** 2
        t, s = torch.tensor(t, dtype=F64), torch.tensor(s, dtype=F64)
        mean, var = posterior(path, x0, xt, t, s)
        torch.testing.assert_close(mean, a_s * x0 + cov / var_t * (xt - a_t * x0), rtol=1e-12, atol=1e-12)
        assert float(var) == pytest.approx(s_s ** 2 - cov ** 2 / var_t, rel=1e-9, abs=1e-15)
        assert float(posterior_variance(path, t, s)) == float(var)
        assert float(transition(path, t, s)[3]) == pytest.approx(
            s_t ** 2 - a_ts ** 2 * s_s ** 2, rel=1e-12)


@pytest.mark.parametrize("path", [DiscreteVP.named("cosine"), VPCosine()], ids=lambda p: p.name)
def test_ddim_eta1_step_is_the_ddpm_step(path):
    """Song et al. 2021a, Eq. 12 with η = 1: the same Gaussian as Ho's posterior step, and the same noise draw."""
    den = denoiser(toy_network("v"), "v", path)
    x = torch.randn(16, 2, generator=gen(4), dtype=F64)
    for t, s in ((1.0, 0.95), (0.6, 0.4), (0.2, 0.001), (0.1, 0.0)):
        t, s = torch.tensor(t, dtype=F64), torch.tensor(s, dtype=F64)
        a = ddim_step(den, x, t, s, path=path, eta=1.0, generator=gen(5))
        b = ddpm_step(den, x, t, s, path=path, variance="posterior", generator=gen(5))
        assert (a - b).abs().max() <= 1e-12
    c = ddim_step(den, x, t, s, path=path, eta=0.0, generator=gen(5))
    assert (c - ddim_step(den, x, t, s, path=path, eta=0.0, generator=gen(6))).abs().max() == 0   # η = 0: no noise


@pytest.mark.parametrize("grid", ["uniform", "edm"])
def test_ddim_eta0_on_the_straight_path_is_euler(grid):
    """On alpha = 1 − t, sigma = t: x_s = (1 − s) x̂0 + s ε̂ = x_t + (s − t)(ε̂ − x̂0), for any consistent denoiser."""
    path = Linear()
    ts = uniform_grid(path, 16) if grid == "uniform" else edm_grid(path, 10)
    x1 = torch.randn(64, 2, generator=gen(6), dtype=F64)
    for den in (exact_8g(path), denoiser(toy_network("velocity"), "velocity", path)):
        a = list(ddim(den, x1, ts, path=path, eta=0.0))
        b = list(euler(den, x1, ts, path=path))
        assert len(a) == len(b) == len(ts) - 1
        assert max(float((p - q).abs().max()) for p, q in zip(a, b)) <= 1e-12


def test_edm_heun_is_heun_on_x_over_alpha_against_sigma_over_alpha():
    """One step written out in EDM's own coordinates (x̃, σ̄) = (x, sigma) / alpha, where dx̃/dσ̄ = ε̂: Euler to
    σ̄_s, the slope again there, the trapezoid; back to x by alpha_s. Its Euler half is DDIM; to t = 0 it is DDIM."""
    path = DiscreteVP.named("cosine")
    den = exact_8g(path)
    x = torch.randn(64, 2, generator=gen(13), dtype=F64)
    t, s, zero = (torch.tensor(v, dtype=F64) for v in (0.7, 0.4, 0.0))
    a_t, a_s = path.alpha(t), path.alpha(s)
    sig_t, sig_s = path.sigma(t) / a_t, path.sigma(s) / a_s
    d_t = den(x, t.expand(64)).eps
    x_tilde = x / a_t + (sig_s - sig_t) * d_t
    d_s = den(a_s * x_tilde, s.expand(64)).eps
    by_hand = a_s * (x / a_t + (sig_s - sig_t) * (d_t + d_s) / 2)
    torch.testing.assert_close(edm_heun_step(den, x, t, s, path=path), by_hand, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a_s * x_tilde, ddim_step(den, x, t, s, path=path), rtol=1e-10, atol=1e-10)
    assert torch.equal(edm_heun_step(den, x, t, zero, path=path), ddim_step(den, x, t, zero, path=path))


def test_nfe_counts_network_calls():
    path = VPCosine()
    x1 = torch.randn(4, 2, generator=gen(7), dtype=F64)
    per_step = {heun: 2, edm_heun: 2, rk4: 4}
    for sampler in (ddpm, ddim, euler, heun, edm_heun, rk4):
        for ts in (uniform_grid(path, 7, t0=0.99), torch.linspace(0.99, 1e-3, 8, dtype=F64)):
            counting = Counted(exact_8g(path))
            last(sampler(counting, x1, ts, path=path, generator=gen(8)))
            k = per_step.get(sampler, 1)
            assert counting.calls == nfe(sampler, ts) == 7 * k - (k - 1) * int(ts[-1] == 0), sampler


def test_bad_options_are_user_errors():
    path = VPCosine()
    with pytest.raises(UserError, match="variance"):
        last(ddpm(exact_8g(path), torch.zeros(1, 2), uniform_grid(path, 2), path=path, variance="fixed"))
    with pytest.raises(UserError, match="finite sigma/alpha"):
        last(edm_heun(exact_8g(path), torch.zeros(1, 2), uniform_grid(path, 2), path=path))
    with pytest.raises(UserError, match="eta"):
        last(ddim(exact_8g(path), torch.zeros(1, 2), uniform_grid(path, 2), path=path, eta=1.5))


# --- ODE solvers: orders and a reference solver ------------------------------------------------------

ORDER_CASES = {"vp-cosine": (VPCosine(), 1.0, (8, 16, 32, 64, 128)), "linear": (Linear(), 1.0, (8, 16, 32, 64, 128)),
               # DDPM's cosine table from t0 = 0.9 (its last few β, clipped at 0.999, are not smooth at any step
               # size above one level): Heun is 2nd order only because d_alpha at a level averages both sides
               "discrete-cosine": (DiscreteVP.named("cosine"), 0.9, (15, 30, 60))}


@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_euler_and_heun_converge_at_orders_1_and_2(case):
    """x0 ~ N(mu, s² I): the PF-ODE flow is x_t = alpha_t mu + sqrt(alpha_t² s² + sigma_t²) z, so the sample
    reached from x_t0 is mu + s z with z = (x_t0 − alpha_t0 mu) / sqrt(alpha_t0² s² + sigma_t0²)."""
    path, t0, steps = ORDER_CASES[case]
    mu, s = torch.tensor([0.7, -0.4], dtype=F64), 0.5
    den = denoiser(MixtureDenoiser(mu[None], s, path), "x0", path)
    x_start = torch.randn(32, 2, generator=gen(9), dtype=F64)
    a0, s0 = path.alpha(torch.tensor(t0, dtype=F64)), path.sigma(torch.tensor(t0, dtype=F64))
    exact = mu + s * (x_start - a0 * mu) / torch.sqrt(a0 ** 2 * s ** 2 + s0 ** 2)
    n = torch.tensor(steps, dtype=F64)
    for sampler, order in ((euler, 1), (heun, 2)):
        errors = torch.tensor([float((last(sampler(den, x_start, uniform_grid(path, k, t0=t0), path=path)) - exact)
                                     .abs().max()) for k in steps], dtype=F64)
        slope = torch.linalg.lstsq(torch.stack([torch.ones_like(n), n.log()], 1), errors.log()[:, None]).solution[1, 0]
        assert abs(-float(slope) - order) <= 0.25, (sampler.__name__, errors.tolist())
        assert errors[-1] < (0.05 if order == 1 else 2e-3)


def test_rk4_converges_at_order_4():
    """The same Gaussian flow on the VP-cosine path, solved to t = 0.05: RK4's every step is a full step (the last
    step to t = 0 would be Euler's and cap the order at 2). On the linear path this flow's leading error term
    happens to vanish (error ratios near 2⁵·⁸ per halving), so it is no test of the order."""
    path, t0, steps = VPCosine(), 1.0, (8, 16, 32, 64)
    mu, s, t_end = torch.tensor([0.7, -0.4], dtype=F64), 0.5, torch.tensor(0.05, dtype=F64)
    den = denoiser(MixtureDenoiser(mu[None], s, path), "x0", path)
    x_start = torch.randn(32, 2, generator=gen(9), dtype=F64)
    t_start = torch.tensor(t0, dtype=F64)
    radius = [torch.sqrt(path.alpha(t) ** 2 * s ** 2 + path.sigma(t) ** 2) for t in (t_start, t_end)]
    exact = path.alpha(t_end) * mu + radius[1] * (x_start - path.alpha(t_start) * mu) / radius[0]
    errors = torch.tensor([float((last(rk4(den, x_start, torch.linspace(t0, 0.05, k + 1, dtype=F64), path=path))
                                  - exact).abs().max()) for k in steps], dtype=F64)
    n = torch.tensor(steps, dtype=F64)
    slope = torch.linalg.lstsq(torch.stack([torch.ones_like(n), n.log()], 1), errors.log()[:, None]).solution[1, 0]
    assert abs(-float(slope) - 4) <= 0.3, errors.tolist()
    assert errors[-1] < 1e-7


@pytest.mark.parametrize("path", [VPCosine(), Linear()], ids=lambda p: p.name)
def test_euler_and_heun_match_dopri5_on_the_8_gaussians_flow(path):
    den = exact_8g(path)
    x1 = torch.randn(128, 2, generator=gen(10), dtype=F64)

    def field(t, x):                                   # dx/dt = d_alpha x̂0 + d_sigma ε̂ at (x, t)
        return velocity(den(x, t.expand(len(x))), Coefficients.at(path, t, x))
    reference = odeint(field, x1, torch.tensor([1.0, 1e-3], dtype=F64), method="dopri5", rtol=1e-8, atol=1e-8)[-1]
    error = {(sampler, n): float((last(sampler(den, x1, torch.linspace(1, 1e-3, n + 1, dtype=F64), path=path))
                                  - reference).abs().max())
             for sampler in (euler, heun, rk4) for n in (100, 200)}
    assert error[heun, 200] <= 1e-3 and error[euler, 200] <= 1e-2 and error[rk4, 200] <= 1e-5
    assert 1.6 <= error[euler, 100] / error[euler, 200] <= 2.4        # first order against the reference
    assert 3.0 <= error[heun, 100] / error[heun, 200] <= 5.0          # second order
    assert 10 <= error[rk4, 100] / error[rk4, 200] <= 24              # fourth order (16)


# --- every sampler reproduces the mixture --------------------------------------------------------------

N_SAMPLES = 2000


def mixture_report(x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(mass of each mode, pooled within-mode std, fraction farther than 0.5 from every mean)."""
    d = torch.cdist(x, MIXTURE.means)                  # (N, 8)
    k = d.argmin(1)
    mass = torch.bincount(k, minlength=8).double() / len(x)
    spread = float((x - MIXTURE.means[k]).pow(2).sum(1).mean().div(2).sqrt())
    return mass, spread, float((d.min(1).values > 0.5).double().mean())


@pytest.fixture(scope="module")
def floor():
    """The reference sample and the mean sliced-W1 of 8 independent true samples of the same size to it."""
    ref = MIXTURE.sample(N_SAMPLES, gen(100))
    dists = [sliced_wasserstein(MIXTURE.sample(N_SAMPLES, gen(200 + i)), ref, generator=gen(3), n_proj=64)
             for i in range(8)]
    return ref, sum(dists) / len(dists)


SAMPLERS = {"ddpm-posterior": (ddpm, {}), "ddpm-beta": (ddpm, {"variance": "beta"}), "ddim-eta0": (ddim, {}),
            "ddim-eta1": (ddim, {"eta": 1.0}), "euler": (euler, {}), "heun": (heun, {}), "edm-heun": (edm_heun, {}),
            "rk4": (rk4, {})}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_reproduces_the_8_gaussians(name, floor):
    ref, floor_sw = floor
    sampler, kw = SAMPLERS[name]
    path = DiscreteVP.named("cosine")
    x1 = torch.randn(N_SAMPLES, 2, generator=gen(0), dtype=F64)
    x = last(sampler(exact_8g(path), x1, uniform_grid(path, 100), path=path, generator=gen(1), **kw))
    mass, spread, stray = mixture_report(x)
    assert (mass - 1 / 8).abs().max() <= 0.025, mass.tolist()
    assert 0.085 <= spread <= 0.115, spread
    assert stray <= 0.005, stray
    assert sliced_wasserstein(x, ref, generator=gen(3), n_proj=64) <= 2.0 * floor_sw


def test_sample_batched_equals_one_unbatched_run():
    """Deterministic sampler, no autocast: chunking the noise changes nothing but round-off."""
    path = VPCosine()
    noise = torch.randn(50, 2, generator=gen(11))
    ts = uniform_grid(path, 10)
    den = exact_8g(path)
    batched = sample_batched(ddim, den, noise, ts, path=path, batch=7, bf16=False)
    whole = last(ddim(den, noise, ts, path=path))
    assert batched.shape == (50, 2) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, whole, rtol=0, atol=1e-5)
    again = sample_batched(ddpm, den, noise, ts, path=path, batch=7, generator=gen(12))
    assert torch.equal(again, sample_batched(ddpm, den, noise, ts, path=path, batch=7, generator=gen(12)))
