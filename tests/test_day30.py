"""Day 30: the FLOP accounting (a known net by hand, a family's step = the sum of its counted parts, the budget stops
at the first step that reaches it), the seed statistics against scipy, the shared backbone, the reuse of the B/2
teacher, and the smoke runs of the experiment and of the learner's template through the command line."""

import json
import subprocess
import sys

import torch
from conftest import HANG_TIMEOUT, ROOT, load_day, smoke_run
from scipy import stats

from common.consistency import cd_loss
from common.flops import flops_with_grad
from common.nets import UNet, UNetConfig
from common.predictions import denoiser
from common.reflow import PATH as FLOW

budget, tables, train = load_day(30, "budget", "tables", "train")


def test_a_small_net_counts_by_hand():
    """Linear(a→b), tanh, Linear(b→c) on n images: forward 2n(ab + bc); a training step adds the weights' gradients
    of both layers and the hidden layer's input gradient: 2n(2ab + 3bc) in all, the data needing no gradient."""
    a, b, c, n = 3, 4, 2, 5
    net = torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.Tanh(), torch.nn.Linear(b, c))

    class Timed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return self.net(x)
    x = torch.randn(n, a)
    assert budget.forward_flops(Timed(), x) == 2 * (a * b + b * c)
    step = budget.step_flops(Timed(), lambda m, x0, y, g: m(x0, None).pow(2).sum(), x)
    assert step == 2 * (2 * a * b + 3 * b * c)
    assert flops_with_grad(lambda: net(x).sum().backward()) == n * step


def test_a_cd_step_costs_the_student_plus_two_forwards():
    """CD's counted step = the student's forward and backward + the teacher's Euler step + the target's forward."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=8, n_res=1, mults=(1, 2), attn_res=()))
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    plain = budget.step_flops(net, lambda m, x0, y, g: m(x0, torch.full((len(x0),), 0.5)).pow(2).mean(), x)
    fwd = budget.forward_flops(net, x)
    cd = budget.step_flops(net, cd_loss(denoiser(net, "velocity", FLOW), 4), x)
    assert cd == plain + 2 * fwd and plain > 2 * fwd


def test_the_budget_stops_at_the_first_step_that_reaches_it():
    assert budget.steps_to_reach(9, lambda k: 3) == 3
    assert budget.steps_to_reach(10, lambda k: 3) == 4
    lazy = lambda k: 5 if k % 4 == 0 else 2                     # R1 every 4th step, as DDGAN's
    steps = budget.steps_to_reach(20, lazy)
    assert budget.spent(steps, lazy) >= 20 > budget.spent(steps - 1, lazy)


def test_intervals_match_scipy():
    values = [3.1, 4.7, 2.2]
    got = budget.t_interval(values)
    lo, hi = stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=stats.sem(values))
    assert abs(got["ci95"][0] - lo) < 1e-9 and abs(got["ci95"][1] - hi) < 1e-9
    assert abs(stats.t.ppf(0.975, 2) - 4.303) < 1e-3
    a, b = [5.0, 6.5, 4.1], [4.0, 6.0, 4.4]
    diff = budget.paired_difference(a, b)
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert abs(diff["ci95"][0] - ref.low) < 1e-9 and abs(diff["ci95"][1] - ref.high) < 1e-9


def test_every_family_shares_the_backbone():
    families = load_day(30, "families")
    cfg = train.PRESETS["cpu"]
    nets = {f: families.backbone(cfg, f) for f in ("ddpm", "flow", "reflow", "cd", "pd", "ddgan")}
    assert cfg.unet == UNetConfig(channels=16, n_res=1, mults=(1, 2, 2), attn_res=(7,))
    assert all(n == cfg.unet for f, n in nets.items() if f != "ddgan")
    assert nets["ddgan"].cond_channels == 1 and nets["ddgan"].channels == cfg.unet.channels


def test_smoke_run(tmp_path):
    result = smoke_run(30, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    half = m["config"]["budget_steps"] // 2
    runs = {r["family"]: r for r in m["runs"]}
    assert set(runs) == {"DDPM", "flow", "reflow", "CD", "PD", "DDGAN"}
    for family in ("reflow", "CD"):                             # the flow's B/2 state, kept, reused
        assert runs[family]["teacher"] == f"checkpoint_step{half:06d}.pt" and runs[family]["teacher_step"] == half
    assert (tmp_path / "flow-s0" / f"checkpoint_step{half:06d}.pt").is_file()
    assert runs["PD"]["teacher_step"] == half and (tmp_path / "ddpm-s0" / f"checkpoint_step{half:06d}.pt").is_file()
    assert all(r["budget_share"] >= 1 for r in m["runs"]) and runs["DDPM"]["budget_share"] == 1
    for name in ("fid_vs_nfe.png", "fid_vs_seconds.png", "samples_best.png", "samples.npz"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_template_smoke_run(tmp_path):
    result = subprocess.run([sys.executable, "day30/template/train.py", "--preset", "smoke", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["variant"] == "baseline"


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day30/results/metrics.json").read_text())
    readme = (ROOT / "day30/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
