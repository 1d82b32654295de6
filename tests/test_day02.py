"""Day 02: the ideal denoiser is Tweedie's posterior mean, the radial spectrum is right on waves and
white noise, the ablation's penalties have the minimisers their docstring claims (mean, median; found
by a brute-force search), the best/worst-case picker against a hand-built example, and the smoke run
writes every result it promises."""
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "day02" / "code"))
import dae  # noqa: E402  (day folders are not packages)
from conftest import HANG_TIMEOUT, load_day  # noqa: E402

from common.config import validate  # noqa: E402

day2 = load_day(2, "train")


def test_ideal_denoiser_is_tweedies_formula():
    """softmax-weighted data average == xt + σ² ∇ log p_σ(xt), the gradient taken by autograd."""
    g = torch.Generator().manual_seed(0)
    data = torch.randn(7, 1, 2, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(5, 1, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    sigma = 0.8
    sq_dist = (xt.flatten(1)[:, None] - data.flatten(1)[None]).pow(2).sum(-1)   # (5, 7)
    log_p = torch.logsumexp(-sq_dist / (2 * sigma**2), dim=1)  # log p_σ up to a constant
    (score,) = torch.autograd.grad(log_p.sum(), xt)
    tweedie = (xt + sigma**2 * score).detach()
    assert torch.allclose(day2.ideal_denoiser(xt.detach(), data, sigma), tweedie, atol=1e-12)
    # Small σ: the posterior puts all its mass on the nearest data point.
    nearest = data[sq_dist.argmin(dim=1)]
    assert torch.allclose(day2.ideal_denoiser(xt.detach(), data, 1e-3), nearest, atol=1e-9)


def test_radial_spectrum_of_a_plane_wave():
    """cos(2π (3y + 4x) / 28) puts all its power, mean square 1/2, on the ring of radius 5."""
    h = 28
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(h, dtype=torch.float64), indexing="ij")
    wave = torch.cos(2 * math.pi * (3 * yy + 4 * xx) / h)[None, None]
    radii, power = dae.radial_power_spectrum(wave)
    folded = [min(k, h - k) for k in range(h)]
    ring5 = sum(round(math.hypot(a, b)) == 5 for a in folded for b in folded)
    assert radii.tolist() == list(range(15))
    assert torch.allclose(power[radii != 5], torch.zeros(14, dtype=torch.float64), atol=1e-20)
    assert math.isclose(float(power[5]) * ring5 / h**2, 0.5, rel_tol=1e-12)  # Parseval


def test_radial_spectrum_of_white_noise_is_flat():
    g = torch.Generator().manual_seed(1)
    noise = 0.7 * torch.randn(2000, 1, 28, 28, generator=g)
    _, power = dae.radial_power_spectrum(noise)
    assert torch.allclose(power, torch.full_like(power, 0.49), rtol=0.1)


def test_corruption_and_iteration():
    g = torch.Generator().manual_seed(2)
    sigma = dae.sample_sigma(500, 0.1, 1.0, g)
    assert 0.1 <= sigma.min() and sigma.max() <= 1.0 and abs(float(sigma.mean()) - 0.55) < 0.05
    xt = dae.corrupt(torch.zeros(500, 1, 28, 28), sigma, g)
    assert torch.allclose(xt.flatten(1).std(dim=1), sigma, rtol=0.1)  # 784 draws per image
    states = list(dae.iterate(lambda x: x / 2, torch.ones(3), k=3))
    assert [float(s[0]) for s in states] == [1.0, 0.5, 0.25, 0.125]


# --- the loss ablation and the best/worst cases ---------------------------------------------------------

@pytest.mark.parametrize("name, eps, centre", [("l2", 1e-3, np.mean), ("l1", 1e-3, np.median),
                                               ("charbonnier", 1e-4, np.median), ("charbonnier", 100.0, np.mean)])
def test_penalty_minimisers(name, eps, centre):
    """The constant c minimising mean penalty(c − x) over a skewed sample, by a grid search in numpy: the mean
    for L2, the median for L1, and for Charbonnier the median when ε is tiny and the mean when ε is huge."""
    x = np.random.default_rng(0).exponential(size=301)                      # mean 1, median ln 2 ≈ 0.69
    grid = np.linspace(0, 2, 20001)
    fn = day2.penalty(name, eps)
    cost = [float(fn(torch.tensor(c - x, dtype=torch.float64)).mean()) for c in grid]
    assert abs(grid[int(np.argmin(cost))] - centre(x)) < 2e-3


def test_penalty_values_and_unknown_name():
    e = torch.tensor([-2.0, 0.0, 0.5], dtype=torch.float64)
    assert day2.penalty("l2", 0.1)(e).tolist() == [4.0, 0.0, 0.25]
    assert day2.penalty("l1", 0.1)(e).tolist() == [2.0, 0.0, 0.5]
    assert torch.allclose(day2.penalty("charbonnier", 0.1)(e), torch.tensor([4.01, 0.01, 0.26]).double().sqrt())
    with pytest.raises(day2.UserError, match="unknown loss 'huber'"):
        day2.penalty("huber", 0.1)


def test_ablation_models_train_on_the_range_with_their_own_loss():
    cfg = day2.PRESETS["smoke"]
    assert day2.ablation_names(cfg) == ["conv-range-l1", "conv-range-charbonnier"]
    assert day2.sigma_range("conv-range-l1", cfg) == (cfg.sigma_min, cfg.sigma_max)
    x0 = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(3)) * 2 - 1
    def zero(x, t):  # a "denoiser" that always answers 0: the loss is then the penalty of −x0, whatever the noise
        return torch.zeros_like(x)
    for name, expected in (("conv-range", x0.pow(2).mean()), ("conv-range-l1", x0.abs().mean())):
        loss = day2.loss_for(name, cfg)(zero, x0, None, torch.Generator().manual_seed(4))
        assert torch.allclose(loss, expected)


@pytest.mark.parametrize("override, message", [({"ablation_losses": ("huber",)}, "unknown loss 'huber'"),
                                               ({"charbonnier_eps": 0.0}, "--charbonnier_eps=0.0"),
                                               ({"n_extremes": 0}, "--n_extremes=0")])
def test_ablation_settings_are_checked(override, message):
    with pytest.raises(day2.UserError, match=message):
        validate(replace(day2.PRESETS["cpu"], **override))


def test_extremes_pick_by_per_image_psnr():
    x = torch.zeros(5, 1, 2, 2)
    errors = torch.tensor([0.4, 0.1, 0.8, 0.2, 0.05])                     # per-image constant errors
    x_hat = x + errors.view(-1, 1, 1, 1)
    labels = torch.tensor([3, 1, 3, 7, 1])
    cases = day2.extremes(x_hat, x, labels, k=2)
    assert [c["index"] for c in cases["best"]] == [4, 1] and [c["index"] for c in cases["worst"]] == [2, 0]
    assert [c["label"] for c in cases["worst"]] == [3, 3]
    psnr_of = 10 * torch.log10(4 / errors**2)                               # range 2: PSNR = 10 log10(4 / e²)
    assert cases["best"][0]["psnr_db"] == round(float(psnr_of[4]), 2)
    assert cases["psnr_by_class"]["1"] == round(float(psnr_of[[1, 4]].mean()), 2)


def test_smoke_run(tmp_path):
    subprocess.run([sys.executable, "day02/code/train.py", "--preset", "smoke", "--out", str(tmp_path)],
                   cwd=ROOT, timeout=HANG_TIMEOUT, check=True)
    m = json.loads((tmp_path / "metrics.json").read_text())
    sigmas = [f"{s:g}" for s in m["config"]["test_sigmas"]]
    rows = ["noisy", "conv-fixed", "conv-range", "unet-fixed", "unet-range", "ideal"]
    for metric in ("psnr_db", "ssim"):
        assert list(m[metric]) == rows
        assert all(list(m[metric][r]) == sigmas and np.isfinite(list(m[metric][r].values())).all() for r in rows)
    for s in sigmas:  # the noisy input's PSNR is 20 log10(2 / σ) up to sampling noise
        assert abs(m["psnr_db"]["noisy"][s] - 20 * math.log10(2 / float(s))) < 0.2
    assert set(m["hf_power_ratio"]) == set(rows)
    assert set(m["iterated"]) == {"conv-range", "unet-range"}
    for scores in m["iterated"].values():
        assert list(scores) == [str(k) for k in m["config"]["iterations"]]
        assert all(np.isfinite(s["fid"]) and 0 <= s["class_entropy"] <= math.log(10) + 1e-4 for s in scores.values())
    assert m["samples"]["n"] == m["config"]["n_samples"] and np.isfinite(m["samples"]["fid_floor"])
    assert list(m["loss_ablation"]) == ["l2", *m["config"]["ablation_losses"]]
    assert m["loss_ablation"]["l2"]["psnr_db"] == m["psnr_db"]["conv-range"]       # L2 is conv-range itself
    for r in m["loss_ablation"].values():
        assert list(r["psnr_db"]) == sigmas == list(r["ssim"]) and np.isfinite(r["hf_power_ratio"])
    cases = m["extremes"]
    assert cases["model"] == "unet-range" and len(cases["best"]) == len(cases["worst"]) == m["config"]["n_extremes"]
    assert cases["best"][-1]["psnr_db"] >= cases["worst"][0]["psnr_db"]
    assert {"conv-range-l1", "conv-range-charbonnier"} <= set(m["models"])
    with np.load(tmp_path / "samples.npz") as f:
        assert f["arr_0"].shape == (m["config"]["n_samples"], 28, 28, 1) and f["arr_0"].dtype == np.uint8
    for name in ("loss_ablation.png", "best_cases.png", "worst_cases.png",
                 "losses.png", "psnr_vs_sigma.png", "ssim_vs_sigma.png", "reconstructions.png", "sigma_sweep.png",
                 "spectrum.png", "collapse.png", "iterated_unet-range.png", "iterated_unet-range.gif"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "unet-range" / "checkpoint.pt").is_file()
