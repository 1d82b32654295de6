"""common.denoisers against independent references: Bayes weights from torch.distributions densities, the
posterior mean of a 1-D mixture by numerical integration over x0, Tweedie's formula against the closed-form
score of the noised 8-Gaussians mixture (common.toy2d), and the ideal denoiser's limits at small and full
noise."""
import pytest
import torch
from torch.distributions import MultivariateNormal

from common.denoisers import (
    MixtureDenoiser,
    effective_count,
    ideal_denoiser,
    mixture_posterior_mean,
    responsibilities,
)
from common.paths import DiscreteVP, Linear, VPCosine
from common.toy2d import eight_gaussians

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = {"discrete-cosine": DiscreteVP.named("cosine"), "vp-cosine": VPCosine(), "linear": Linear()}


def draw(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("name", list(PATHS))
def test_ideal_denoiser_is_the_bayes_posterior_mean(name):
    """x0 uniform on 5 points in R^3: p(n | x_t) ∝ N(x_t; alpha x_n, sigma² I), densities from torch.distributions."""
    path, data = PATHS[name], draw(5, 3, seed=1)
    xt = draw(7, 3, seed=2)
    for t in (0.05, 0.3, 0.7, 0.95):
        a, s = (float(f(torch.tensor(t, dtype=F64))) for f in (path.alpha, path.sigma))
        log_lik = torch.stack([MultivariateNormal(a * x_n, s ** 2 * torch.eye(3, dtype=F64)).log_prob(xt)
                               for x_n in data], dim=1)                      # (7, 5)
        w = torch.softmax(log_lik, dim=1)
        tt = torch.full((7,), t, dtype=F64)
        torch.testing.assert_close(responsibilities(xt, data, 0.0, *path.alpha_sigma(tt, xt)), w,
                                   rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(ideal_denoiser(data, path)(xt, tt), w @ data, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(PATHS))
def test_mixture_posterior_mean_by_numerical_integration(name):
    """1-D mixture of 3 Gaussians (std 0.3): E[x0 | x_t] = ∫ x0 p(x0) N(x_t; a x0, s²) dx0 / ∫ p(x0) N(...) dx0."""
    path, means, std = PATHS[name], torch.tensor([[-1.5], [0.2], [2.0]], dtype=F64), 0.3
    x0 = torch.linspace(-6, 6, 24001, dtype=F64)                             # quadrature nodes
    prior = torch.exp(-(x0[:, None] - means[:, 0]) ** 2 / (2 * std ** 2)).sum(1)   # unnormalised p(x0)
    xt = torch.linspace(-2.5, 2.5, 11, dtype=F64)[:, None]                      # (11, 1)
    oracle = MixtureDenoiser(means, std, path)
    for t in (0.1, 0.4, 0.8):
        a, s = (float(f(torch.tensor(t, dtype=F64))) for f in (path.alpha, path.sigma))
        joint = prior * torch.exp(-(xt - a * x0) ** 2 / (2 * s ** 2))          # (11, nodes)
        expected = torch.trapezoid(joint * x0, x0, dim=1) / torch.trapezoid(joint, x0, dim=1)
        got = oracle(xt, torch.full((11,), t, dtype=F64))[:, 0]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", list(PATHS))
def test_tweedie_gives_the_exact_score_of_the_noised_mixture(name):
    """(alpha E[x0 | x_t] − x_t) / sigma² = ∇ log p_t(x_t), p_t = eight_gaussians().noised(alpha, sigma)."""
    path, mixture = PATHS[name], eight_gaussians(F64)
    oracle = MixtureDenoiser(mixture.means, mixture.std, path)
    for t in (0.02, 0.2, 0.5, 0.9):
        a, s = (float(f(torch.tensor(t, dtype=F64))) for f in (path.alpha, path.sigma))
        noised = mixture.noised(a, s)
        xt = noised.sample(64, torch.Generator().manual_seed(3))             # typical points of p_t
        xt = torch.cat([xt, draw(16, 2, seed=4) * 3])                        # and arbitrary ones
        tt = torch.full((len(xt),), t, dtype=F64)
        score = (a * oracle(xt, tt) - xt) / s ** 2
        expected = noised.score(xt)
        torch.testing.assert_close(score, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))


def test_posterior_mean_of_one_gaussian_is_linear_gaussian_conditioning():
    """N = 1: x0 ~ N(mu, std² I), x_t = a x0 + s eps are jointly Gaussian: E = mu + Cov/Var · (x_t − a mu)."""
    mu, std, a, s = draw(1, 4, seed=5), 0.7, torch.tensor([0.6], dtype=F64), torch.tensor([0.8], dtype=F64)
    xt = draw(9, 4, seed=6)
    cov, var = a * std ** 2, a ** 2 * std ** 2 + s ** 2                          # Cov(x0, x_t), Var(x_t)
    torch.testing.assert_close(mixture_posterior_mean(xt, mu, std, a, s), mu + cov / var * (xt - a * mu),
                               rtol=1e-13, atol=1e-13)


def test_ideal_denoiser_snaps_to_the_nearest_point_at_small_t_and_averages_at_t1():
    path, data = Linear(), draw(6, 4, seed=7)
    oracle = ideal_denoiser(data, path)
    xt = draw(20, 4, seed=8)                                                 # anywhere, not near the data
    t = torch.full((20,), 1e-3, dtype=F64)
    nearest = torch.cdist(xt, (1 - 1e-3) * data).argmin(1)
    torch.testing.assert_close(oracle(xt, t), data[nearest], rtol=0, atol=1e-9)
    assert torch.allclose(effective_count(xt, data, *path.alpha_sigma(t, xt)), torch.ones(20, dtype=F64))
    ones = torch.ones(20, dtype=F64)                                         # t = 1: alpha = 0, x_t says nothing
    torch.testing.assert_close(oracle(xt, ones), data.mean(0).expand(20, 4), rtol=0, atol=1e-14)
    torch.testing.assert_close(effective_count(xt, data, *path.alpha_sigma(ones, xt)), 6 * ones)


def test_mixture_denoiser_keeps_shape_and_dtype():
    """An image-shaped batch in float32 (what a sampler passes) works and matches the float64 result."""
    data = draw(3, 1, 4, 4, seed=9)
    path = PATHS["discrete-cosine"]
    xt = draw(5, 1, 4, 4, seed=10)
    t = torch.full((5,), 0.5, dtype=F64)
    out64 = ideal_denoiser(data, path)(xt, t)
    out32 = ideal_denoiser(data, path)(xt.float(), t)
    assert out64.shape == xt.shape and out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-6)
    lo, hi = data.min(0).values, data.max(0).values       # std = 0: a convex combination of the data points
    assert ((out64 >= lo - 1e-12) & (out64 <= hi + 1e-12)).all()
