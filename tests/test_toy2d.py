"""common.toy2d: the mixture's density and score against autograd and quadrature, the noised law
against simulation, the sliced Wasserstein distance against its closed form for a shift, and the
toy samplers' support."""

import math

import pytest
import torch

from common.config import UserError
from common.toy2d import TOYS, GaussianMixture, eight_gaussians, sample_toy, sliced_wasserstein


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_mixture() -> GaussianMixture:
    means = torch.randn(3, 2, generator=gen(1), dtype=torch.float64) * 1.5
    return GaussianMixture(means, 0.7)


def test_score_is_gradient_of_log_prob():
    gm = random_mixture()
    x = torch.randn(64, 2, generator=gen(2), dtype=torch.float64).requires_grad_(True)
    (autograd,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    assert gm.score(x).dtype == torch.float64
    torch.testing.assert_close(gm.score(x.detach()), autograd, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gm", [random_mixture(), eight_gaussians(torch.float64)])
def test_log_prob_integrates_to_one(gm):
    h = 0.02  # grid step, well below the smallest std (0.1)
    ticks = torch.arange(-6, 6, h, dtype=torch.float64)
    grid = torch.cartesian_prod(ticks, ticks)  # (600^2, 2)
    mass = gm.log_prob(grid).exp().sum() * h * h
    assert abs(mass.item() - 1) < 1e-3


def test_log_prob_of_single_gaussian_matches_closed_form():
    gm = GaussianMixture(torch.tensor([[1.0, -2.0]], dtype=torch.float64), 0.5)
    x = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    expected = -((x - gm.means) ** 2).sum(1) / (2 * 0.25) - math.log(2 * math.pi * 0.25)
    torch.testing.assert_close(gm.log_prob(x), expected)


def test_noised_mixture_is_law_of_alpha_x_plus_sigma_eps():
    gm = GaussianMixture(eight_gaussians(torch.float64).means, 0.3)
    alpha, sigma, n = 0.5, 0.1, 8000  # noised std: sqrt(0.5^2 0.3^2 + 0.1^2) = 0.18
    simulated = alpha * gm.sample(n, gen(3)) + sigma * torch.randn(n, 2, generator=gen(4), dtype=torch.float64)
    same = sliced_wasserstein(simulated, gm.noised(alpha, sigma).sample(n, gen(5)), generator=gen(6))
    assert same < 0.02  # sampling noise only
    # Plausible slips in the closed form are each clearly further away.
    slips = {
        "std not scaled by alpha": GaussianMixture(gm.means * alpha, math.sqrt(0.3**2 + sigma**2)),
        "std of the data forgotten": GaussianMixture(gm.means * alpha, sigma),
        "means not scaled": GaussianMixture(gm.means, 0.18),
    }
    for slip, wrong in slips.items():
        assert sliced_wasserstein(simulated, wrong.sample(n, gen(5)), generator=gen(6)) > 4 * same, slip


def test_sliced_wasserstein_of_a_shift_has_closed_form():
    # Shifting by c moves every sorted projection by <c, theta>, so SW_1 = E|<c, theta>| = 2|c|/pi in 2-D.
    a = sample_toy("moons", 500, gen(7)).double()
    c = torch.tensor([0.3, -0.4], dtype=torch.float64)  # |c| = 0.5
    sw = sliced_wasserstein(a, a + c, n_proj=4096, generator=gen(8))
    assert sw == pytest.approx(2 * 0.5 / math.pi, rel=0.02)
    assert sliced_wasserstein(a, a) == 0


def test_sliced_wasserstein_separates_distributions():
    a, b = sample_toy("spirals", 2000, gen(9)), sample_toy("spirals", 2000, gen(10))
    shifted = b + torch.tensor([0.5, 0.0])
    assert sliced_wasserstein(a, b, generator=gen(11)) < sliced_wasserstein(a, shifted, generator=gen(11)) / 3
    with pytest.raises(ValueError):
        sliced_wasserstein(a, b[:10])


@pytest.mark.parametrize("name", TOYS)
def test_toy_samplers_are_seeded_and_in_range(name):
    x = sample_toy(name, 3000, gen(12))
    assert x.shape == (3000, 2) and x.dtype == torch.float32
    assert torch.equal(x, sample_toy(name, 3000, gen(12)))
    assert not torch.equal(x, sample_toy(name, 3000, gen(13)))
    assert x.abs().max() < 3.6 and x.abs().max() > 1.5  # roughly [-3, 3]^2, and not collapsed
    assert x.mean(0).abs().max() < 0.5  # about centred (the swiss roll's mean is (0.42, 0.05))


def test_eight_gaussians_toy_samples_the_mixture():
    x = sample_toy("8gaussians", 4000, gen(14))
    exact = eight_gaussians().sample(4000, gen(15))
    assert sliced_wasserstein(x, exact, generator=gen(16)) < 0.05
    assert torch.allclose(eight_gaussians().means.norm(dim=1), torch.tensor(2.0))


def test_checkerboard_samples_lie_in_black_cells():
    x = sample_toy("checkerboard", 10_000, gen(17)).double()
    cell = torch.floor(x / 1.5).long()  # (n, 2) integer cell coordinates in {-2, ..., 1}
    assert cell.min() == -2 and cell.max() == 1
    assert torch.all((cell.sum(1) % 2) == 0)
    assert len(torch.unique(cell, dim=0)) == 8  # all eight black cells are used


def test_unknown_toy_lists_choices():
    with pytest.raises(UserError, match="moons, 8gaussians, checkerboard, spirals, swissroll"):
        sample_toy("circles", 10)
