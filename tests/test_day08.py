"""Day 08: the comparison is fair (every schedule's training step draws the same t and ε), the x̂_0 error is zero
for the exact denoiser of a one-image dataset under every schedule and parameterisation, the error per SNR
evaluates each model at the lattice time a brute-force search picks, and the smoke run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_TIMEOUT, load_day

from common.diffusion import diffusion_loss
from common.paths import SCHEDULES, DiscreteVP
from common.predictions import TARGET, Coefficients
from common.training import step_generator

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


day8 = load_day(8, "train")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_schedule_trains_on_the_same_t_and_noise():
    """Recover (t, ε) from what the network sees, x_t = α_t x_0 + σ_t ε, under two schedules at one step."""
    x0 = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
    seen = {}
    for kind in ("linear", "cosine"):
        schedule = DiscreteVP.named(kind, 1000)

        def model(xt, t, schedule=schedule, kind=kind):  # bound now: the loop moves on
            alpha, sigma = schedule.alpha_sigma(t, xt)
            seen[kind] = (t.clone(), (xt - alpha * x0) / sigma)
            return torch.zeros_like(xt)
        diffusion_loss(model, x0, schedule, "v", step_generator(seed=0, step=7))
    (t_lin, eps_lin), (t_cos, eps_cos) = seen["linear"], seen["cosine"]
    assert torch.equal(t_lin, t_cos)
    torch.testing.assert_close(eps_lin, eps_cos, rtol=0, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("kind", SCHEDULES)
def test_exact_denoiser_has_zero_x0_error(kind, prediction):
    """For a dataset of one image x*, the exact network output is TARGET[prediction](x*, ε(x_t), c), c the path at t."""
    schedule = DiscreteVP.named(kind, 1000)
    x_star = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64) * 1.8 - 0.9

    def oracle(xt, t):
        c = Coefficients.at(schedule, t, xt)
        return TARGET[prediction](x_star, (xt - c.alpha * x_star) / c.sigma, c)
    cfg = day8.Config(prediction=prediction, bf16=False)
    x0 = x_star.expand(8, -1, -1, -1)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    t = torch.tensor([0.001, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999], dtype=F64)
    err = day8.x0_error(oracle, schedule, cfg, x0, t, eps, "cpu")
    # ε-prediction divides by α_t ≈ 5e-5 near t = 1: float64 round-off, amplified, stays far below any real error
    assert err == pytest.approx(0, abs=1e-12 if prediction != "eps" else 1e-6)
    wrong = day8.x0_error(lambda xt, t: torch.zeros_like(xt), schedule, cfg, x0, t, eps, "cpu")
    assert wrong > 1e-3


def test_error_per_snr_uses_the_nearest_lattice_time():
    cfg = day8.Config(snr_db=(-40.0, -10.0, 0.0, 25.0), bf16=False)
    x0 = torch.zeros(2, 1, 4, 4, dtype=F64)
    eps = torch.ones_like(x0)
    for kind in SCHEDULES:
        schedule = DiscreteVP.named(kind, 1000)
        asked = []

        def model(xt, t, asked=asked):
            asked.append(t[0].item())
            return torch.zeros_like(xt)
        errors = day8.error_per_snr(model, schedule, cfg, x0, eps, "cpu")
        ab = schedule.alpha_bar.numpy()
        snr = 10 * np.log10(ab[1:] / (1 - ab[1:]))                 # SNR at t = i / T, i = 1..T, in numpy
        expected = [(np.argmin(abs(snr - s)) + 1) / 1000 for s in cfg.snr_db if abs(snr - s).min() <= 1]
        assert asked == pytest.approx(expected, abs=1e-6)
        assert list(errors) == [f"{s:g}" for s in cfg.snr_db if abs(snr - s).min() <= 1]
    assert "-40" not in day8.error_per_snr(model, DiscreteVP.named("quadratic", 1000), cfg, x0, eps, "cpu")


def test_smoke_run(tmp_path):
    subprocess.run([sys.executable, "day08/code/train.py", "--preset", "smoke", "--out", str(tmp_path)],
                   cwd=ROOT, timeout=HANG_TIMEOUT, check=True)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["preset"] == "smoke" and [r["schedule"] for r in m["summary"]] == ["linear", "cosine"]
    for r in m["summary"]:
        assert r["n"] == 32 and math.isfinite(r["fid"]) and r["fid_ci95"][0] <= r["fid"] <= r["fid_ci95"][1]
        assert r["train_seconds"] > 0 and math.isfinite(r["mean_x0_error"])
        assert len(m["x0_error_per_t"][r["schedule"]]) == 4
        assert (tmp_path / r["schedule"] / "train_log.csv").is_file()
        assert (tmp_path / r["schedule"] / "checkpoint.pt").is_file()
    assert m["best"] in ("linear", "cosine") and "not saved" in m["samples_npz"]
    assert (tmp_path / "summary.md").read_text().count("\n") == 4
    for name in ("samples.png", "samples_linear.png", "snr.png", "error_per_t.png", "error_per_snr.png", "fid.png"):
        assert 0 < (tmp_path / name).stat().st_size < 1_000_000, name
