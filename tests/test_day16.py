"""Day 16: the conditional velocity target is the path's derivative (finite differences); OT pairing is the optimal
assignment (brute force) and never lengthens the batch's pairing; with the exact 8-Gaussians marginal velocity,
Euler at many steps reproduces the mixture; the adaptive dopri5 sampler solves a Gaussian's flow exactly; and the
smoke run through the command line."""

import itertools
import json
import math

import pytest
import torch
from conftest import ROOT, load_day

from common.denoisers import MixtureDenoiser
from common.paths import uniform_grid
from common.predictions import TARGET, Coefficients, denoiser
from common.samplers import dopri5, euler, last
from common.toy2d import eight_gaussians, sliced_wasserstein

F64 = torch.float64
flows, toy = load_day(16, "flows", "toy")
PATH = flows.PATH


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_velocity_target_is_the_paths_derivative():
    """(x_{t+h} − x_{t−h}) / 2h of x_t = (1 − t) x0 + t x1 equals the CFM target x1 − x0 that training regresses on."""
    x0, x1 = torch.randn(5, 3, generator=gen(0), dtype=F64), torch.randn(5, 3, generator=gen(1), dtype=F64)
    t, h = torch.rand(5, generator=gen(2), dtype=F64) * 0.9 + 0.05, 1e-6
    fd = (PATH.sample(x0, t + h, x1) - PATH.sample(x0, t - h, x1)) / (2 * h)
    target = TARGET["velocity"](x0, x1, Coefficients.at(PATH, t, x0))
    torch.testing.assert_close(fd, target, rtol=0, atol=1e-8)
    torch.testing.assert_close(target, x1 - x0, rtol=0, atol=1e-15)


def test_ot_pairing_is_the_optimal_assignment():
    """On 6 points the pairing's total squared distance is the minimum over all 720 permutations; on larger
    batches it never exceeds the batch's own pairing, and it only reorders x1."""
    x0, x1 = torch.randn(6, 2, generator=gen(3)), torch.randn(6, 2, generator=gen(4))
    def cost(a, b):
        return (a - b).pow(2).sum().item()
    best = min(cost(x0, x1[list(p)]) for p in itertools.permutations(range(6)))
    assert cost(x0, flows.ot_pairing(x0, x1)) == pytest.approx(best, rel=1e-6)
    for seed in range(5):
        a, b = torch.randn(64, 1, 4, 4, generator=gen(10 + seed)), torch.randn(64, 1, 4, 4, generator=gen(20 + seed))
        paired = flows.ot_pairing(a, b)
        assert cost(a, paired) <= cost(a, b) + 1e-6
        assert torch.equal(paired.flatten(1).sort(0).values, b.flatten(1).sort(0).values)  # a permutation of b


def test_euler_with_the_exact_marginal_velocity_reproduces_the_mixture():
    """The exact E[x0 | x_t] of the 8 Gaussians on the linear path gives the marginal velocity; Euler's method on it,
    from N(0, I) at t = 1, lands on the mixture: the sliced Wasserstein distance is within 1.5× that between two
    real samples, and each component gets its 1/8 of the points."""
    mix = eight_gaussians(F64)
    field = denoiser(MixtureDenoiser(mix.means, mix.std, PATH), "x0", PATH)
    x = last(euler(field, torch.randn(4000, 2, generator=gen(5), dtype=F64), uniform_grid(PATH, 200), path=PATH))
    floor = sliced_wasserstein(mix.sample(4000, gen(6)), mix.sample(4000, gen(7)), generator=gen(8))
    assert sliced_wasserstein(x, mix.sample(4000, gen(9)), generator=gen(8)) < 1.5 * floor
    share = torch.bincount(torch.cdist(x, mix.means).argmin(1), minlength=8).double() / 4000
    assert (share - 1 / 8).abs().max() < 4 * math.sqrt(1 / 8 * 7 / 8 / 4000)


def test_dopri5_solves_a_gaussians_flow():
    """For data N(μ, s² I) the flow carries a standardised point along unchanged: x1 at t = 1 lands on μ + s x1.
    The adaptive sampler with the exact denoiser gets there to its tolerance, and so does Euler at many steps."""
    mu, s = torch.tensor([[1.5, -0.5]], dtype=F64), 0.3
    field = denoiser(MixtureDenoiser(mu, s, PATH), "x0", PATH)
    x1 = torch.randn(100, 2, generator=gen(13), dtype=F64)
    exact = mu + s * x1
    solved = last(dopri5(field, x1, torch.tensor([1.0, 0.0], dtype=F64), path=PATH, rtol=1e-8, atol=1e-8))
    torch.testing.assert_close(solved, exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(last(euler(field, x1, uniform_grid(PATH, 1000), path=PATH)), exact, rtol=0, atol=1e-2)


def test_a_learned_field_is_measured_against_the_exact_one():
    """velocity_error is 0 for the exact field itself (called like a network) and 1 for a field that is 0."""
    exact = toy.velocity_of(toy.exact_denoiser())
    assert toy.velocity_error(lambda x, t: exact(x.double(), t.double()), 500, gen(14)) < 1e-10
    assert toy.velocity_error(lambda x, t: torch.zeros_like(x), 500, gen(14)) == pytest.approx(1.0)


def test_smoke_run(day16_smoke):
    m = json.loads((day16_smoke / "metrics.json").read_text())
    assert set(m["settings"]) == {"euler-2", "heun-2", "dopri5-0.1", "ddpm-3"}
    assert m["settings"]["heun-2"]["nfe"] == 3 and m["recommended"] in m["settings"]
    assert {"icfm", "otcfm", "floor_sw"} <= set(m["toys"]["8gaussians"])
    assert "velocity_error" in m["toys"]["8gaussians"]["icfm"]
    for name in ("samples.npz", "samples.png", "nfe.png", "toy_trajectories.png", "toy_steps.png"):
        assert (day16_smoke / name).is_file(), name


def test_the_lessons_tables_are_the_committed_results():
    """The README's tables are what tables.py prints from results/metrics.json, digit for digit."""
    tables = load_day(16, "tables")
    m = json.loads((ROOT / "day16" / "results" / "metrics.json").read_text())
    readme = (ROOT / "day16" / "README.md").read_text()
    for table in (tables.toys(m), tables.mnist(m), tables.aims(m)):
        assert table in readme
