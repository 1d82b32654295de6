"""Day 20: the student's target (two teacher DDIM steps folded into one x̂0) against its defining property and its
closed form with the exact mixture denoiser as teacher; the loss is zero for a student that predicts the target; the
stages' step counts; and the smoke run through the command line (with day 6's smoke checkpoint)."""

import json

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common import progressive
from common.denoisers import MixtureDenoiser
from common.paths import DiscreteVP, uniform_grid
from common.predictions import denoiser
from common.samplers import ddim_step

F64 = torch.float64
tables, train = load_day(20, "tables", "train")
PATH = DiscreteVP.named("cosine", 1000)
MEANS = torch.tensor([[1.0, 0.5], [-0.5, -1.0], [0.2, -0.3]], dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_teacher():
    return denoiser(MixtureDenoiser(MEANS, 0.2, PATH), "x0", PATH)


@pytest.mark.parametrize("j", [0, 3, 7])        # the first pair starts at pure noise, the last ends at the data
def test_one_student_ddim_step_lands_where_two_teacher_steps_do(j):
    """Two DDIM steps of the exact teacher (common.samplers.ddim_step, scalar times); from the same x_t, one DDIM step
    with x̂0 = x̃ lands on the same point, and x̃ is the closed form (x'' − (σ''/σ) x) / (α'' − (σ''/σ) α)."""
    teacher, grid = exact_teacher(), uniform_grid(PATH, 16)
    t, t1, t2 = grid[2 * j], grid[2 * j + 1], grid[2 * j + 2]
    x_t = PATH.sample(MEANS[torch.randint(3, (64,), generator=gen(0))], t, torch.randn(64, 2, generator=gen(1),
                                                                                         dtype=F64))
    x_t2 = ddim_step(teacher, ddim_step(teacher, x_t, t, t1, path=PATH), t1, t2, path=PATH)
    tt = t.expand(64)
    two_steps = progressive.two_teacher_steps(teacher, x_t, tt, t1.expand(64), t2.expand(64), PATH)
    torch.testing.assert_close(two_steps, x_t2, rtol=1e-12, atol=1e-12)
    x_tilde = progressive.student_target(x_t, x_t2, tt, t2.expand(64), PATH)

    def knows_the_target(x, time, **cond):
        return x_tilde
    one_step = ddim_step(denoiser(knows_the_target, "x0", PATH), x_t, t, t2, path=PATH)
    torch.testing.assert_close(one_step, x_t2, rtol=1e-10, atol=1e-10)
    a, s = PATH.alpha(t), PATH.sigma(t)
    a2, s2 = PATH.alpha(t2), PATH.sigma(t2)
    torch.testing.assert_close(x_tilde, (x_t2 - s2 / s * x_t) / (a2 - s2 / s * a), rtol=1e-12, atol=1e-12)


def test_the_loss_vanishes_for_a_student_that_predicts_the_target():
    """A 'student' that computes x̃ itself (from the teacher and the grid) has zero loss; a wrong one does not."""
    teacher, grid = exact_teacher(), uniform_grid(PATH, 8)
    index = {float(t): i for i, t in enumerate(grid)}

    def exact_student(net, x, t):
        i = torch.tensor([index[float(v)] for v in t])
        x_s2 = progressive.two_teacher_steps(teacher, x, t, grid[i + 1], grid[i + 2], PATH)
        return progressive.student_target(x, x_s2, t, grid[i + 2], PATH)
    x0 = MEANS[torch.randint(3, (32,), generator=gen(2))] + 0.2 * torch.randn(32, 2, generator=gen(3), dtype=F64)
    loss = progressive.distill_loss(teacher, exact_student, PATH, grid)
    assert float(loss(None, x0, None, gen(4))) < 1e-20
    assert float(progressive.distill_loss(teacher, lambda net, x, t: x, PATH, grid)(None, x0, None, gen(4))) > 1e-3


def test_stages_halve_down_to_one():
    assert train.stage_steps(16) == [8, 4, 2, 1] and train.stage_steps(2) == [1]


def test_smoke_run(tmp_path, day6_smoke):
    result = smoke_run(20, tmp_path, f"--day6_results={day6_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["settings"]) == {"ddim-4", "ddim-2", "ddim-1", "student-2", "student-1"}
    assert set(m["cost"]["stage_train_seconds"]) == {"2", "1"}
    for name in ("samples.npz", "samples_1step.npz", "samples.png", "same_noise.png", "fid_vs_nfe.png"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day20/results/metrics.json").read_text())
    readme = (ROOT / "day20/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
