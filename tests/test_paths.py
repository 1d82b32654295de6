"""common.paths against independent references: derivatives by central finite differences in float64,
the log-SNR inverse by round trips, DDPM's ᾱ table by a plain Python product, today's (pre-refactor)
`Schedule.alpha_sigma` and `Schedule.timesteps` formulas written out, and EDM's ρ-spacing re-derived
from sigma / alpha."""
import math

import pytest
import torch

from common.config import UserError
from common.paths import (
    VE,
    DiscreteVP,
    Linear,
    VPCosine,
    edm_grid,
    make_betas,
    quadratic_grid,
    uniform_grid,
)

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")

CONTINUOUS = {"vp-cosine": VPCosine(), "linear": Linear(), "ve": VE()}
DISCRETE = {kind: DiscreteVP.named(kind) for kind in ("linear", "cosine", "quadratic", "sigmoid")}
ALL = {**CONTINUOUS, **{f"discrete-{k}": p for k, p in DISCRETE.items()}}


def python_alpha_bar(kind: str, T: int = 1000) -> torch.Tensor:
    """ᾱ_0..ᾱ_T as a left-to-right product of Python floats (ᾱ_0 = 1), not torch.cumprod."""
    out = [1.0]
    for beta in make_betas(kind, T).tolist():
        out.append(out[-1] * (1 - beta))
    return torch.tensor(out, dtype=F64)


# --- derivatives -------------------------------------------------------------------------------------

def central_difference(f, t: torch.Tensor, h: float) -> torch.Tensor:
    return (f(t + h) - f(t - h)) / (2 * h)


@pytest.mark.parametrize("name", list(CONTINUOUS))
def test_derivatives_match_finite_differences_continuous(name):
    path = CONTINUOUS[name]
    t = torch.linspace(0.05, 0.95, 13, dtype=F64)
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        fd = central_difference(f, t, 1e-6)
        torch.testing.assert_close(df(t), fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", list(DISCRETE))
def test_derivatives_match_finite_differences_inside_steps(kind):
    """Inside a step ((i, i+1) / T, away from the kinks at the levels) log ᾱ is linear: smooth there."""
    path = DISCRETE[kind]
    T = path.n_steps
    i = torch.tensor([0, 1, 17, 250, 500, 777, 990, 998], dtype=F64)
    for u in (0.25, 0.5, 0.75):
        t = (i + u) / T
        for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
            fd = central_difference(f, t, 1e-4 / T)   # 1e-4 of a step: well inside the cell
            torch.testing.assert_close(df(t), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_discrete_derivatives_at_levels_are_the_mean_of_both_sides(kind):
    """At a level the rate jumps; the derivative there is the mean of the two one-sided derivatives (2nd-order
    one-sided differences); the endpoints t = 0 and 1 have one side only."""
    path, T, h = DISCRETE[kind], 1000, 2e-4 / 1000   # 2e-4 of a step: past the levels' float32 tolerance (1e-4)
    right = lambda f, t: (-3 * f(t) + 4 * f(t + h) - f(t + 2 * h)) / (2 * h)
    left = lambda f, t: (3 * f(t) - 4 * f(t - h) + f(t - 2 * h)) / (2 * h)
    t = torch.tensor([1, 2, 250, 600, 997, 998, 999], dtype=F64) / T
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        torch.testing.assert_close(df(t), (left(f, t) + right(f, t)) / 2, rtol=1e-6, atol=1e-9)
        assert (left(f, t) - right(f, t)).abs().max() > 1e-3 * df(t).abs().max()    # there is a jump to average
    zero, one = torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)
    torch.testing.assert_close(path.d_alpha(zero), right(path.alpha, zero), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(path.d_alpha(one), left(path.alpha, one), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_discrete_log_alpha_bar_is_linear_between_levels(kind):
    path, table = DISCRETE[kind], python_alpha_bar(kind)
    i = torch.arange(0, 1000, 37)
    t = lambda u: (i.double() + u) / 1000
    for u in (0.1, 0.5, 0.9):
        expected = torch.exp((1 - u) * table[i].log() + u * table[i + 1].log())
        torch.testing.assert_close(path.alpha_bar_at(t(u)), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(ALL))
def test_variance_preserving_flag_and_norm2(name):
    path = ALL[name]
    t = torch.linspace(0.01, 0.99, 11, dtype=F64)
    norm2 = path.alpha(t) ** 2 + path.sigma(t) ** 2
    if path.variance_preserving:
        torch.testing.assert_close(norm2, torch.ones_like(t), rtol=0, atol=1e-14)
    else:
        assert (norm2 - 1).abs().max() > 0.1          # Linear and VE are far from VP
    torch.testing.assert_close(path.norm2(t), norm2, rtol=1e-14, atol=0)


def test_continuous_closed_forms_and_endpoints():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    torch.testing.assert_close(Linear().alpha(t), 1 - t)
    torch.testing.assert_close(VPCosine().sigma(t), torch.sin(math.pi * t / 2))
    ve = VE(0.002, 80.0)
    torch.testing.assert_close(ve.sigma(t), torch.tensor([0.002, 0.002 * 40000 ** 0.3, 80.0], dtype=F64))
    with pytest.raises(UserError):
        VE(1.0, 0.5)


# --- log-SNR and its inverse -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ALL))
def test_log_snr_round_trips(name):
    path = ALL[name]
    t = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.98 + 0.01
    lam = path.log_snr(t)
    torch.testing.assert_close(lam, 2 * (path.alpha(t) / path.sigma(t)).log(), rtol=1e-12, atol=1e-12)
    assert (lam.diff()[t.diff() > 0] < 0).all() and (lam.diff()[t.diff() < 0] > 0).all()   # decreasing in t
    torch.testing.assert_close(path.t_from_log_snr(lam), t, rtol=0, atol=1e-10)
    lam_grid = torch.linspace(float(lam.min()), float(lam.max()), 50, dtype=F64)
    torch.testing.assert_close(path.log_snr(path.t_from_log_snr(lam_grid)), lam_grid, rtol=0, atol=1e-9)


# --- DDPM's table, bit for bit -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(DISCRETE))
def test_discrete_values_at_levels_are_the_table_bit_for_bit(kind):
    path, table = DISCRETE[kind], python_alpha_bar(kind)
    t = torch.arange(1001, dtype=F64) / 1000
    assert torch.equal(path.alpha_bar_at(t), table)
    assert torch.equal(path.alpha(t), table.sqrt()) and torch.equal(path.sigma(t), (1 - table).sqrt())
    assert torch.equal(path.index(t), torch.arange(1001))


def old_alpha_sigma(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor):
    """Today's (pre-refactor) Schedule.alpha_sigma: read ᾱ at round(t·T), sqrt in float64, then cast."""
    ab = table[torch.round(t.double() * (len(table) - 1)).long()].reshape(-1, *[1] * (like.dim() - 1))
    return ab.sqrt().to(like), (1 - ab).sqrt().to(like)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_discrete_alpha_sigma_equals_old_schedule(dtype):
    path, table = DISCRETE["cosine"], python_alpha_bar("cosine")
    t = torch.arange(1001, dtype=F64) / 1000
    like = torch.zeros(1001, 3, 2, 2, dtype=dtype)
    for new, old in zip(path.alpha_sigma(t, like), old_alpha_sigma(table, t, like)):
        assert new.dtype == dtype and new.shape == (1001, 1, 1, 1)
        assert torch.equal(new, old)


# --- grids -------------------------------------------------------------------------------------------

def test_uniform_grid_is_old_timesteps_for_every_step_count():
    """Today's Schedule.timesteps(n) = round(linspace(T, 0, n + 1)) / T, for every n in 1..T."""
    path = DISCRETE["linear"]
    for n in range(1, 1001):
        expected = torch.linspace(1000, 0, n + 1, dtype=F64).round() / 1000
        assert torch.equal(uniform_grid(path, n), expected), n
    with pytest.raises(UserError, match="at most 1000"):
        uniform_grid(path, 1001)
    with pytest.raises(UserError):
        uniform_grid(path, 0)


@pytest.mark.parametrize("name", list(ALL))
def test_grids_run_from_t0_to_zero(name):
    path = ALL[name]
    for grid in (uniform_grid, quadratic_grid, edm_grid):
        for t0 in (1.0, 0.6):
            ts = grid(path, 12, t0=t0)
            assert ts.dtype == F64 and len(ts) == 13
            assert ts[0] == t0 and ts[-1] == 0 and (ts.diff() < 0).all(), (grid.__name__, t0)
    torch.testing.assert_close(uniform_grid(CONTINUOUS["linear"], 4), torch.tensor([1, .75, .5, .25, 0], dtype=F64))
    torch.testing.assert_close(quadratic_grid(CONTINUOUS["linear"], 4),
                               torch.tensor([1, 9 / 16, 4 / 16, 1 / 16, 0], dtype=F64))


@pytest.mark.parametrize("name", list(CONTINUOUS))
@pytest.mark.parametrize("t0", [1.0, 0.5])
def test_edm_grid_is_rho_spaced_in_sigma_over_alpha(name, t0):
    """Eq. 5 of Karras et al.: s_i^(1/ρ) linear in i from s_max to s_min, with s = sigma / alpha read off
    the path directly (no log-SNR), s_max capped at 80."""
    path, n, rho, t_min = CONTINUOUS[name], 10, 7.0, 1e-3
    ts = edm_grid(path, n, t0=t0, t_min=t_min, rho=rho)
    s = lambda t: float(path.sigma(torch.tensor(t, dtype=F64)) / path.alpha(torch.tensor(t, dtype=F64)))
    s_max, s_min = min(s(t0), 80.0), s(t_min)
    expected = [(s_max ** (1 / rho) + i / (n - 1) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
                for i in range(n)]
    got = (path.sigma(ts[:-1]) / path.alpha(ts[:-1])).tolist()
    first = 0 if s(t0) <= 80 else 1          # alpha(1) = 0: the grid starts at t0 itself, not at s = 80
    assert got[first:] == pytest.approx(expected[first:], rel=1e-9)
    assert ts[0] == t0 and ts[-1] == 0 and (ts.diff() < 0).all()
    assert ts[-2].item() == pytest.approx(t_min, rel=1e-9)


def test_edm_grid_on_ddpm_levels():
    path = DISCRETE["cosine"]
    ts = edm_grid(path, 18)
    levels = ts * 1000
    assert torch.equal(levels, levels.round()) and ts[0] == 1 and ts[-1] == 0 and (ts.diff() < 0).all()
    assert ts[-2] == 1 / 1000                   # t_min = 1e-3 is the first level
    with pytest.raises(UserError):
        edm_grid(path, 2000)
