"""Day 18: reflow pairs are deterministic given the noise and are the flow's map; the straightness of an exactly
straight coupling is zero, and that of the 1-rectified flow of Gaussian data is its closed-form integral; the
one-step map and its distillation loss; and the smoke run through the command line (with day 16's smoke flow)."""

import json
import math

import torch
from conftest import ROOT, load_day, smoke_run

from common import reflow
from common.denoisers import MixtureDenoiser
from common.metrics import straightness
from common.paths import uniform_grid
from common.predictions import denoiser
from common.samplers import euler, heun

F64 = torch.float64
tables = load_day(18, "tables")
PATH = reflow.PATH
MU, S = torch.tensor([0.7, -0.4], dtype=F64), 0.5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_1rf():
    """The exact 1-rectified flow of data N(mu, s² I): E[x0 | x_t] on the linear path, as a denoiser."""
    return denoiser(MixtureDenoiser(MU[None], S, PATH), "x0", PATH)


def rectified_gaussian(x, t):
    """The velocity of the straight coupling x0 = mu + s x1 (the Gaussian 1-RF's map): along
    x_t = (1 − t)(mu + s x1) + t x1 every path is a line travelled at the constant speed x1 − x0."""
    t = t.reshape(-1, 1)
    x1 = (x - (1 - t) * MU) / ((1 - t) * S + t)
    return x1 - (MU + S * x1)


def test_reflow_pairs_are_deterministic_and_the_flows_map():
    """The same noise gives bit-identical pairs; for Gaussian data they are the known map x0 = mu + s x1."""
    noise = torch.randn(256, 2, generator=gen(0), dtype=F64)
    a = reflow.reflow_pairs(gaussian_1rf(), noise, 100, bf16=False)
    b = reflow.reflow_pairs(gaussian_1rf(), noise.clone(), 100, bf16=False)
    assert torch.equal(a, b)
    torch.testing.assert_close(a.double(), MU + S * noise, rtol=0, atol=1e-3)


def test_straightness_of_an_exactly_straight_coupling_is_zero():
    """The rectified Gaussian coupling's paths are straight: S = 0 up to round-off. The 1-RF's paths are not: for
    x_t = (1 − t) mu + r_t z, r_t = sqrt((1 − t)² s² + t²), S = D ∫ (1 − s − r'_t)² dt, here by quadrature."""
    x1 = torch.randn(500, 2, generator=gen(1), dtype=F64)
    ts = uniform_grid(PATH, 1000)
    straight = [x1, *euler(denoiser(rectified_gaussian, "velocity", PATH), x1, ts, path=PATH)]
    assert straightness(straight, ts) < 1e-20
    curved = [x1, *heun(gaussian_1rf(), x1, ts, path=PATH)]         # 2nd order: the states' error is ~1e-6
    t = torch.linspace(0, 1, 200_001, dtype=F64)
    dr = ((1 - t) * -S ** 2 + t) / torch.sqrt((1 - t) ** 2 * S ** 2 + t ** 2)           # r'_t
    z2 = x1.pow(2).sum(1).mean()                                                          # E ‖z‖², z = x1
    expected = float(z2 * torch.trapezoid((1 - S - dr) ** 2, t))
    assert abs(straightness(curved, ts) - expected) < 1e-4 * expected and expected > 0.05


def test_the_one_step_map_and_its_distillation_loss():
    """one_step is x1 − u(x1, 1); a network whose velocity at t = 1 is x1 − Φ(x1) has zero distillation loss and
    its one step is Φ."""
    x1 = torch.randn(64, 2, generator=gen(2))
    target = MU.float() + S * x1                                       # Φ(x1) of the Gaussian flow

    def net(x, t):
        return x - (MU.float() + S * x)
    assert float(reflow.distill_loss(net, target, x1, None)) < 1e-12
    torch.testing.assert_close(reflow.one_step(denoiser(net, "velocity", PATH), x1), target)
    assert math.isclose(reflow.coupling_cost(target, x1), float((x1 - target).pow(2).sum(1).mean()), rel_tol=1e-6)


def test_smoke_run(tmp_path, day16_smoke):
    result = smoke_run(18, tmp_path, f"--day16_results={day16_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["settings"]) == {"1-rf-1", "1-rf-2", "2-rf-1", "2-rf-2", "distilled-1"}
    assert set(m["toy"]["moons"]) == {"floor_sw", "1-rf", "2-rf"} and set(m["flows"]) == {"1-rf", "2-rf"}
    for name in ("samples.npz", "samples_2rf_2step.npz", "samples.png", "same_noise.png", "fid_vs_nfe.png",
                 "toy_trajectories.png"):
        assert (tmp_path / name).is_file(), name
    for table in (tables.toys, tables.mnist, tables.flows, tables.costs, tables.aims):
        assert table(m).count("\n") >= 1


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day18/results/metrics.json").read_text())
    readme = (ROOT / "day18/README.md").read_text()
    for table in (tables.toys, tables.mnist, tables.flows, tables.costs, tables.aims):
        assert table(m) in readme, table.__name__


def test_the_2d_rounds_do_not_depend_on_the_global_random_state(tmp_path):
    """Every weight a round starts from is seeded: two runs after different global draws measure the same flows."""
    from common.run import Run

    toy = load_day(18, "toy")
    cfg = toy.ToyConfig(toys=("moons",), rounds=2, steps=5, batch_size=32, warmup=1, ckpt_every=5, log_every=5,
                        n_train=64, n_pairs=64, pair_steps=2, n_eval=32, euler_steps=(1,), fine_steps=4)
    rows = []
    for i in range(2):
        torch.manual_seed(100 + i)
        run = Run(tmp_path / str(i), torch.device("cpu"), "smoke", "toy")
        rows.append(toy.rectify("moons", cfg, run, 0, gen(0))[0])
    assert rows[0] == rows[1]
