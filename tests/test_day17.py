"""Day 17: the probability-flow ODE's drift on the exact mixture equals its closed form f x − ½ g² ∇log p_t; the
exact trace and Hutchinson's estimate against a linear field's divergence; the change-of-variables log-density of
the 8 Gaussians matches the closed form; bits/dim and the histogram baseline on cases with known answers; the
solvers' observed orders; and the smoke run through the command line (with day 6's smoke checkpoint)."""

import json
import math

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common.paths import DiscreteVP, VPCosine
from common.toy2d import eight_gaussians

F64 = torch.float64
likelihood, toy, tables = load_day(17, "likelihood", "toy", "tables")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("path", [VPCosine(), DiscreteVP.named("cosine")], ids=lambda p: p.name)
def test_the_pf_ode_drift_on_the_exact_mixture_is_its_closed_form(path):
    """Song et al. 2021, Eq. 13: dx/dt = f(t) x − ½ g(t)² ∇log p_t(x) with f = d log alpha/dt and
    g² = d sigma²/dt − 2 f sigma², the score of the noised mixture in closed form (common.toy2d) — against the
    denoiser form d_alpha x̂0 + d_sigma ε̂ that the samplers use."""
    from common.denoisers import MixtureDenoiser
    from common.predictions import denoiser

    mix = eight_gaussians(F64)
    field = likelihood.drift(denoiser(MixtureDenoiser(mix.means, mix.std, path), "x0", path), path)
    x = 2 * torch.randn(256, 2, generator=gen(0), dtype=F64)
    for t in (0.9, 0.5, 0.2, 0.0505, 0.0123):                     # between a DDPM schedule's levels, as a solver goes
        t = torch.tensor(t, dtype=F64)
        alpha, sigma = path.alpha(t), path.sigma(t)
        f = path.d_alpha(t) / alpha
        g2 = 2 * sigma * path.d_sigma(t) - 2 * f * sigma ** 2
        score = mix.noised(float(alpha), float(sigma)).score(x)
        torch.testing.assert_close(field(t, x), f * x - 0.5 * g2 * score, rtol=1e-9, atol=1e-9)


def test_exact_trace_and_hutchinson_on_a_linear_field():
    """u = A x has ∇·u = tr A everywhere: exactly from the D backward passes, and as the mean of Hutchinson's
    Rademacher estimates (within 4 standard errors of 4,000 probes)."""
    a = torch.randn(3, 3, generator=gen(1), dtype=F64)
    x = torch.randn(4000, 3, generator=gen(2), dtype=F64, requires_grad=True)
    u = x @ a.T
    torch.testing.assert_close(likelihood.exact_divergence(u, x), torch.full((4000,), float(a.trace()), dtype=F64))
    z = likelihood.rademacher(x.shape, gen(3)).double()
    estimates = likelihood.hutchinson(z)(u, x)                         # one probe per row: 4,000 probes
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(estimates.mean()) - float(a.trace())) < 4 * float(estimates.std()) / math.sqrt(4000)


def test_the_change_of_variables_reproduces_the_8_gaussians_density():
    """The exact field and trace, RK4: log p_{t0}(x) from the ODE matches the closed form (the mixture noised to
    t0) to 1e-3 nats at 128 steps, and the error shrinks with the steps."""
    cfg = toy.ToyConfig(identity_steps=(8, 128))
    x = eight_gaussians(F64).noised(float(toy.PATH.alpha(torch.tensor(cfg.t0, dtype=F64))),
                                    float(toy.PATH.sigma(torch.tensor(cfg.t0, dtype=F64)))).sample(300, gen(4))
    rows = toy.identity(cfg, x)
    assert rows[1]["max_abs_err"] < 1e-3
    assert rows[1]["mean_abs_err"] < rows[0]["mean_abs_err"] / 10


def test_a_gaussian_data_log_density_is_exact():
    """Data N(mu, s² I) on the VP-cosine path: x_{t0} ~ N(alpha mu, (alpha² s² + sigma²) I), log-density in closed
    form; the ODE's at 64 RK4 steps agrees to 1e-6."""
    from common.denoisers import MixtureDenoiser
    from common.predictions import denoiser

    path, mu, s, t0 = VPCosine(), torch.tensor([[0.7, -0.4]], dtype=F64), 0.5, 0.01
    field = likelihood.drift(denoiser(MixtureDenoiser(mu, s, path), "x0", path), path)
    alpha, sigma = (float(f(torch.tensor(t0, dtype=F64))) for f in (path.alpha, path.sigma))
    var = alpha ** 2 * s ** 2 + sigma ** 2
    x = alpha * mu + math.sqrt(var) * torch.randn(100, 2, generator=gen(5), dtype=F64)
    exact = -((x - alpha * mu) ** 2).sum(1) / (2 * var) - math.log(2 * math.pi * var)
    log_p, x1 = likelihood.log_density(field, x, torch.linspace(t0, 1, 65, dtype=F64))
    torch.testing.assert_close(log_p, exact, rtol=0, atol=1e-6)


def test_bits_per_dim_and_dequantisation():
    """A uniform density on [-1, 1]^D spreads 1/256 over every level: exactly 8 bits per dimension. Dequantised
    points stay inside their level's bin. The histogram of a constant image costs −log2((N + 1) / (N + 256))."""
    d = 784
    assert float(likelihood.bits_per_dim(torch.tensor([-d * math.log(2)]), d)) == pytest.approx(8.0)
    levels = torch.randint(0, 256, (50, 1, 4, 4), generator=gen(6))
    x = likelihood.dequantise(levels / 127.5 - 1, gen(7))
    assert torch.equal(torch.floor((x + 1) * 128).long(), levels)
    n = 20
    constant = torch.full((n, 1, 2, 2), 1 / 127.5 - 1)                  # every pixel at level 1
    assert likelihood.histogram_bits_per_dim(constant, constant[:3]) == pytest.approx(-math.log2((n + 1) / (n + 256)))


def test_the_solvers_show_their_orders():
    cfg = toy.ToyConfig(n_eval=64, order_steps=(16, 32, 64))
    rows = toy.orders(cfg, gen(8))
    for name, order in (("euler", 1), ("heun", 2), ("rk4", 4)):
        assert abs(rows[name]["order"] - order) < 0.3, (name, rows[name])


def test_smoke_run(tmp_path, day6_smoke):
    result = smoke_run(17, tmp_path, f"--day6_results={day6_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["preset"] == "smoke" and m["recommended"] in m["settings"]
    assert {r["kind"] for r in m["settings"].values()} == {"ode", "sde"}
    assert math.isfinite(m["bits_per_dim"]["bpd"]) and m["bits_per_dim"]["n"] == 4
    for name in ("samples.npz", "samples.png", "nfe.png", "orders.png", "identity.png", "toy_density.png",
                 "ode_vs_sde.png"):
        assert (tmp_path / name).is_file(), name
    for table in (tables.orders, tables.identity, tables.learned, tables.mnist, tables.bits):
        assert table(m).count("\n") >= 2


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day17/results/metrics.json").read_text())
    readme = (ROOT / "day17/README.md").read_text()
    for table in (tables.orders, tables.identity, tables.learned, tables.mnist, tables.bits):
        assert table(m) in readme, table.__name__
