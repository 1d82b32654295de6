"""Day 19: the boundary condition holds exactly for any weights; the CD target is one Euler step of the teacher and
the CT target the same noise one level down; the curriculum, the lognormal level weights and the pseudo-Huber
distance against their definitions; with the exact 8-Gaussians ODE as teacher, CD's one-step map approaches the
exact ODE map; the multistep sampler; and the smoke run through the command line (with day 16's smoke flow)."""

import json
import math

import torch
from conftest import ROOT, load_day, smoke_run

from common import consistency
from common.denoisers import MixtureDenoiser
from common.nets import MLP, MLPConfig, UNet, UNetConfig
from common.paths import uniform_grid
from common.predictions import denoiser
from common.samplers import last, rk4
from common.toy2d import eight_gaussians

F64 = torch.float64
tables = load_day(19, "tables")
PATH = consistency.PATH


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_boundary_condition_holds_exactly_for_any_network():
    """f(x, 0) = x bit for bit, for a random U-Net and a random MLP, whatever they output."""
    torch.manual_seed(0)
    for net, shape in ((UNet(UNetConfig(channels=8, n_res=1)), (3, 1, 28, 28)), (MLP(MLPConfig()), (5, 2))):
        x = torch.randn(*shape)
        f = consistency.consistency_fn(net)
        assert torch.equal(f(x, torch.zeros(len(x), dtype=F64)), x)
        assert not torch.allclose(f(x, torch.full((len(x),), 0.5, dtype=F64)), x)    # away from t = 0 it is not


def test_levels_lognormal_weights_and_curriculum():
    ts = consistency.levels(18)
    assert ts[0] == 0 and ts[-1] == 1 and bool((ts[1:] > ts[:-1]).all()) and len(ts) == 19
    p = consistency.lognormal_weights(ts, p_mean=-1.1, p_std=2.0)
    sigma = torch.cat([ts[:-1] / (1 - ts[:-1]), torch.tensor([80.0], dtype=F64)])   # t = 1 stands for σ_max = 80
    normal = torch.distributions.Normal(torch.tensor(-1.1, dtype=F64), torch.tensor(2.0, dtype=F64))
    cdf = torch.cat([torch.zeros(1, dtype=F64), normal.cdf(sigma[1:].log())])
    torch.testing.assert_close(p, cdf.diff() / cdf[-1], rtol=1e-12, atol=1e-15)   # the lognormal's mass, normalised
    # Song & Dhariwal's Eq. 7 with s0 = 10, s1 = 1280, K = 400k: log2(128) + 1 = 8 stages, K' = 50k; N = 10 · 2^stage
    assert [consistency.curriculum(k, 400_000, 10, 1280) for k in (0, 49_999, 50_000, 349_999, 350_000, 399_999)] \
        == [10, 10, 20, 640, 1280, 1280]


def test_pseudo_huber_against_its_definition():
    a, b = torch.randn(4, 3, 5, generator=gen(0)), torch.randn(4, 3, 5, generator=gen(1))
    c = 0.03
    expected = torch.tensor([math.sqrt(float(((a[i] - b[i]) ** 2).sum()) + c * c) - c for i in range(4)])
    torch.testing.assert_close(consistency.pseudo_huber(a, b, c), expected)
    assert float(consistency.pseudo_huber(a, a, c).abs().max()) == 0


class Recorder(torch.nn.Module):
    """A velocity 'network' that records its inputs and returns a fixed linear map of them."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))
        self.calls = []

    def forward(self, x, t):
        self.calls.append((x.detach().clone(), t.detach().clone()))
        return self.w * x


def test_cd_and_ct_compare_the_network_at_adjacent_levels():
    """Rebuild both pairs by hand: CT's lower point is the same noise one level down, CD's one Euler step of the
    teacher's ODE; f = x − t F. CD's loss is the mean squared difference, CT's λ_n times the pseudo-Huber distance
    with λ_n = 1 / (σ_{n+1} − σ_n)."""
    x0 = torch.randn(6, 2, generator=gen(2))
    ts = consistency.levels(5)
    p = torch.full((5,), 0.2, dtype=F64)
    mixture = eight_gaussians(F64)
    teacher = denoiser(MixtureDenoiser(mixture.means, mixture.std, PATH), "x0", PATH)
    for teach in (None, teacher):
        net = Recorder()
        pred, target, lo, hi = consistency.consistency_pair(net, x0, ts, p, gen(3), teach)
        g = gen(3)
        n = torch.multinomial(p.float(), 6, replacement=True, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        t_lo, t_hi = ts[n], ts[n + 1]
        x_hi = (1 - t_hi[:, None]) * x0 + t_hi[:, None] * eps
        if teach is None:
            x_lo = (1 - t_lo[:, None]) * x0 + t_lo[:, None] * eps
        else:   # Euler on the linear path's velocity (x_t − x̂0) / t
            x_lo = x_hi + (t_lo - t_hi)[:, None] * (x_hi - teacher(x_hi, t_hi).x0) / t_hi[:, None]
        (seen_lo, _), (seen_hi, _) = net.calls       # the target (no gradient) is evaluated first
        torch.testing.assert_close(seen_lo, x_lo.float())
        torch.testing.assert_close(seen_hi, x_hi.float())
        torch.testing.assert_close(pred, (x_hi - t_hi[:, None] * 0.3 * x_hi).float())
        torch.testing.assert_close(target, (x_lo - t_lo[:, None] * 0.3 * x_lo).float())
        assert torch.equal(lo, t_lo) and torch.equal(hi, t_hi)

    # the two losses, on the pairs they draw
    p18 = torch.full((18,), 1 / 18, dtype=F64)
    pred, target, _, _ = consistency.consistency_pair(Recorder(), x0, consistency.levels(18), p18, gen(4), teacher)
    cd = consistency.cd_loss(teacher, 18)(Recorder(), x0, None, gen(4))
    torch.testing.assert_close(cd, (pred - target).pow(2).mean())
    ts2 = consistency.levels(2)                                  # the curriculum's N at step 0 of (100, 2, 8)
    pred, target, lo, hi = consistency.consistency_pair(Recorder(), x0, ts2, consistency.lognormal_weights(ts2),
                                                        gen(5))
    ct = consistency.ct_loss(100, 2, 8)(Recorder(), x0, None, gen(5), step=0)

    def sigma(t):                                                # EDM's σ, t = 1 standing for σ_max = 80
        return torch.where(t < 1, t / (1 - t), torch.tensor(80.0, dtype=F64))
    expected = consistency.pseudo_huber(pred, target, 0.00054 * math.sqrt(2)) / (sigma(hi) - sigma(lo))
    torch.testing.assert_close(ct, expected.mean().float())


def test_the_consistency_sampler():
    """One step returns f(x_1, 1); two steps re-noise f's output to mid_t with the generator's noise, then apply f."""
    x1 = torch.randn(8, 2, generator=gen(4))
    net = Recorder()
    denoise = denoiser(net, "velocity", PATH)
    one = last(consistency.consistency(denoise, x1, torch.tensor([1.0, 0.0], dtype=F64)))
    torch.testing.assert_close(one, x1 - 0.3 * x1)
    two = last(consistency.consistency(denoise, x1, torch.tensor([1.0, 0.4, 0.0], dtype=F64), generator=gen(5)))
    x_mid = 0.6 * one + 0.4 * torch.randn(8, 2, generator=gen(5))
    torch.testing.assert_close(two, x_mid - 0.4 * 0.3 * x_mid)


def test_cd_with_the_exact_teacher_approaches_the_exact_ode_map(tmp_path, one_thread):
    """On 8 Gaussians the teacher is the exact field; after CD the one-step map f(ε, 1) is far closer to the exact
    ODE map Φ(ε) (RK4, 200 steps) than the teacher's own one step E[x0 | x_1] (the mixture's mean, ~2 away)."""
    from common.loop import fit
    from common.run import Run
    from common.training import TrainConfig

    mixture = eight_gaussians(F64)
    teacher = denoiser(MixtureDenoiser(mixture.means, mixture.std, PATH), "x0", PATH)
    noise = torch.randn(500, 2, generator=gen(6), dtype=F64)
    phi = last(rk4(teacher, noise, uniform_grid(PATH, 200), path=PATH))
    data = mixture.sample(4096, gen(7)).float()
    cfg = TrainConfig(steps=1500, batch_size=256, lr=2e-4, warmup=50, ema_decay=0.99, bf16=False, sample_every=0,
                      ckpt_every=10_000, log_every=500)
    torch.manual_seed(0)
    run = Run(tmp_path, torch.device("cpu"), "smoke", "toy")
    model = fit(MLP(MLPConfig(hidden=128, layers=3)), consistency.cd_loss(teacher, 18), data, None, cfg, run)[1]
    with torch.no_grad():
        one = consistency.consistency_fn(model)(noise.float(), torch.ones(500, dtype=F64)).double()
    error = float((one - phi).norm(dim=1).mean())
    teacher_one_step = float((teacher(noise, torch.ones(500, dtype=F64)).x0 - phi).norm(dim=1).mean())
    assert teacher_one_step > 1.9 and error < 0.3 * teacher_one_step, (error, teacher_one_step)


def test_smoke_run(tmp_path, day16_smoke):
    result = smoke_run(19, tmp_path, f"--day16_results={day16_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["settings"]) == {"teacher-1", "teacher-2", "cd-1", "cd-2", "ct-1", "ct-2"}
    assert set(m["toy"]) >= {"floor_sw", "exact-euler", "cd", "ct"}
    for name in ("samples.npz", "samples.png", "same_noise.png", "fid_vs_nfe.png", "toy.png"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day19/results/metrics.json").read_text())
    readme = (ROOT / "day19/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
