"""Day 01: the clipped-noise closed form against quadrature, the share of clipped pixels against scipy's normal
tails, the Wiener denoiser against ordinary least squares and a direct matrix solve, the blur against
scipy.ndimage, VP as rescaled VE, the σ-progressions against their defining formulas, and the smoke run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_TIMEOUT, load_day
from scipy import integrate, ndimage, stats

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "day01" / "code"
F64 = torch.float64


denoisers, train = load_day(1, "denoisers", "train")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- clipping: closed form against numerical integration ---------------------------------------------

@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 2.5])
@pytest.mark.parametrize("x", [-1.0, -0.7, 0.0, 0.4, 1.0])
def test_clipped_mse_matches_quadrature(x, sigma):
    def squared_error(z):
        return (min(max(x + sigma * z, -1.0), 1.0) - x) ** 2 * stats.norm.pdf(z)
    kinks = sorted({(-1 - x) / sigma, (1 - x) / sigma})  # where the clip starts acting
    expected = sum(integrate.quad(squared_error, lo, hi, epsabs=1e-13)[0]
                   for lo, hi in zip([-np.inf] + kinks, kinks + [np.inf]))
    got = denoisers.clipped_mse(torch.tensor([x], dtype=F64), sigma).item()
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-14)


def test_clipping_halves_small_noise_at_the_border_and_vanishes_inside():
    sigma = 1e-3
    at_border = denoisers.clipped_mse(torch.tensor([-1.0, 1.0]), sigma)
    inside = denoisers.clipped_mse(torch.tensor([0.0]), sigma)
    torch.testing.assert_close(at_border, torch.full((2,), sigma**2 / 2, dtype=F64), rtol=1e-9, atol=0)
    assert inside.item() == pytest.approx(sigma**2, rel=1e-12)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_clipped_fraction_is_the_two_normal_tails(sigma):
    x = np.array([-1.0, -0.6, 0.0, 0.3, 1.0])
    expected = stats.norm.cdf(-1, loc=x, scale=sigma) + stats.norm.sf(1, loc=x, scale=sigma)
    got = denoisers.clipped_fraction(torch.tensor(x), sigma).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)
    # ... and it is the share of draws clipping changes
    z = torch.randn(400_000, generator=gen(9), dtype=F64)
    y = 0.3 + sigma * z
    assert float((y.abs() > 1).double().mean()) == pytest.approx(got[3], abs=3e-3)


# --- the Wiener denoiser ----------------------------------------------------------------------------

def gaussian_data(n: int, d: int = 6, seed: int = 0) -> torch.Tensor:
    """n samples of a correlated Gaussian in d dims with a non-zero mean, shaped (n, 1, 1, d)."""
    g = gen(seed)
    a = torch.randn(d, d, generator=g, dtype=F64) * torch.linspace(0.1, 1.0, d, dtype=F64)
    mean = torch.randn(d, generator=g, dtype=F64)
    return (mean + torch.randn(n, d, generator=g, dtype=F64) @ a.T).reshape(n, 1, 1, d)


def test_wiener_is_the_direct_matrix_formula():
    x = gaussian_data(500)
    wiener, sigma = denoisers.Wiener.fit(x), 0.7
    flat = x.flatten(1)
    cov, mean = torch.cov(flat.T), flat.mean(0)
    w = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(6, dtype=F64))  # Σ (Σ + σ² I)⁻¹
    y = torch.randn(7, 1, 1, 6, generator=gen(1), dtype=F64)
    expected = mean + (y.flatten(1) - mean) @ w.T
    torch.testing.assert_close(wiener(y, sigma).flatten(1), expected, rtol=1e-10, atol=1e-10)


def test_wiener_is_the_least_squares_fit_and_predicts_its_mse():
    n, sigma = 200_000, 0.5
    x = gaussian_data(n)
    y = x + sigma * torch.randn(x.shape, generator=gen(2), dtype=F64)
    design = torch.cat([y.flatten(1), torch.ones(n, 1, dtype=F64)], 1)          # (n, d + 1): [y, 1]
    coef = torch.linalg.lstsq(design, x.flatten(1)).solution                    # (d + 1, d)
    wiener = denoisers.Wiener.fit(x)
    ols = design @ coef
    # The regression fitted on noisy pairs and the covariance formula agree up to sampling error.
    torch.testing.assert_close(wiener(y, sigma).flatten(1), ols, rtol=0, atol=0.02)
    measured = (wiener(y, sigma) - x).pow(2).mean().item()
    assert measured == pytest.approx(wiener.expected_mse(sigma), rel=0.01)
    assert measured < sigma**2 * 0.8  # and it clearly beats doing nothing


# --- blur and VE/VP ------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [0.5, 1.0, 1.7, 3.0])
def test_gaussian_blur_matches_scipy(width):
    x = torch.randn(2, 3, 12, 15, generator=gen(3), dtype=F64)
    expected = np.stack([[ndimage.gaussian_filter(ch, width, mode="nearest", truncate=3.0) for ch in im]
                         for im in x.numpy()])
    np.testing.assert_allclose(denoisers.gaussian_blur(x, width).numpy(), expected, rtol=0, atol=1e-12)
    assert denoisers.gaussian_blur(x, 0.0) is x


@pytest.mark.parametrize("sigma", [0.1, 1.0, 5.0])
def test_vp_is_rescaled_ve_with_equal_snr(sigma):
    x = torch.rand(3, 1, 4, 4, generator=gen(4), dtype=F64) * 2 - 1
    eps = torch.randn(x.shape, generator=gen(5), dtype=F64)
    ve, vp = train.ve_vp_states(x, eps, sigma)
    torch.testing.assert_close(vp, ve / math.sqrt(1 + sigma**2), rtol=1e-12, atol=1e-12)
    beta = train.vp_beta(sigma)
    assert (1 - beta) / beta == pytest.approx(1 / sigma**2, rel=1e-12)  # SNR: signal / noise variance


# --- σ-progressions ---------------------------------------------------------------------------------------

def test_sigma_ladders_follow_their_definitions():
    lo, hi, n = 0.05, 2.0, 10
    ladder = {kind: np.array(train.sigma_ladder(kind, n, lo, hi)) for kind in ("linear", "quadratic", "geometric",
                                                                                "karras")}
    for sig in ladder.values():
        assert sig[0] == pytest.approx(lo, rel=1e-12) and sig[-1] == pytest.approx(hi, rel=1e-12)
        assert np.all(np.diff(sig) > 0)
    np.testing.assert_allclose(ladder["linear"], np.linspace(lo, hi, n), rtol=1e-12)
    np.testing.assert_allclose(ladder["quadratic"], lo + (hi - lo) * np.linspace(0, 1, n) ** 2, rtol=1e-12)
    np.testing.assert_allclose(ladder["geometric"], np.geomspace(lo, hi, n), rtol=1e-12)
    # Karras et al. (2022), Eq. 5, written from σ_max down to σ_min as in the paper, then reversed
    i, rho = np.arange(n), 7.0
    edm = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    np.testing.assert_allclose(ladder["karras"], edm[::-1], rtol=1e-12)


def test_only_the_geometric_ladder_takes_equal_psnr_steps():
    x = torch.rand(4, 1, 6, 6, generator=gen(6), dtype=F64) * 2 - 1
    eps = torch.randn(x.shape, generator=gen(7), dtype=F64)
    rows = {kind: train.ladder_metrics(x, eps, train.sigma_ladder(kind, 6, 0.1, 3.2), 0.5)
            for kind in ("linear", "geometric")}
    np.testing.assert_allclose(rows["geometric"]["psnr_steps_db"], 20 * math.log10(2.0), rtol=1e-12)  # ratio 2
    assert np.ptp(rows["linear"]["psnr_steps_db"]) > 5
    assert rows["geometric"]["levels_above_0db_snr"] == sum(s**2 < 0.5 for s in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2))


def test_unknown_ladder_is_a_user_error():
    with pytest.raises(train.UserError, match="unknown σ-progression"):
        train.sigma_ladder("cosine-ish", 5, 0.1, 1.0)


def test_clipping_rows_show_what_the_display_hides():
    y = torch.tensor([[[[-2.0, 0.0, 0.5, 3.0]]]], dtype=F64)                       # (1, 1, 1, 4)
    rows = list(train.clipping_rows(y).values())
    torch.testing.assert_close(rows[0], torch.tensor([[[[-1.0, -0.2, 0.0, 1.0]]]], dtype=F64))  # [−2, 3] -> [−1, 1]
    torch.testing.assert_close(rows[1], y.clamp(-1, 1))
    torch.testing.assert_close(rows[2], torch.tensor([[[[-1.0, 0.0, 0.0, 1.0]]]], dtype=F64))


# --- the whole run -----------------------------------------------------------------------------------------

def test_smoke_run(tmp_path):
    subprocess.run([sys.executable, "day01/code/train.py", "--preset", "smoke", "--out", str(tmp_path)],
                   cwd=ROOT, timeout=HANG_TIMEOUT, check=True)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["preset"] == "smoke" and m["config"]["sigmas"] == [0.1, 1.0]
    for row in m["table"]:
        assert all(math.isfinite(v) for v in row.values())
        assert row["clip_frac"] == pytest.approx(row["clip_frac_theory"], abs=0.01)
        assert row["mse"] == pytest.approx(row["mse_theory"], rel=0.05)
        assert row["mse_clipped"] == pytest.approx(row["mse_clipped_theory"], rel=0.05)
        assert row["mse_clipped"] < row["mse"]
    for row in m["denoisers"]:
        assert row["psnr_wiener"] > row["psnr_nothing"]
    for row in m["ve_vp"]:
        assert row["rms_ve"] == pytest.approx(row["rms_ve_theory"], rel=0.01)
        assert row["rms_vp"] == pytest.approx(row["rms_vp_theory"], rel=0.01)
        assert row["rms_vp"] < min(1.0, row["rms_ve"])
    assert list(m["sigma_ladders"]) == m["config"]["ladders"]
    for lad in m["sigma_ladders"].values():
        assert len(lad["sigmas"]) == m["config"]["ladder_levels"] == len(lad["psnr"])
        assert lad["sigmas"][0] == pytest.approx(0.1) and lad["sigmas"][-1] == pytest.approx(1.0)
        np.testing.assert_allclose(lad["psnr"], lad["psnr_theory"], atol=0.1)
    for name in ("sigma_ladders.png", "sigma_ladders_psnr.png",
                 "table.md", "noise_progression.png", "ve_vs_vp.png", "denoisers.png", "noise.gif",
                 "mse_vs_sigma.png", "psnr_vs_sigma.png", "ssim_vs_sigma.png", "rms_ve_vp.png",
                 "denoiser_psnr.png", "wiener_gains.png"):
        assert 0 < (tmp_path / name).stat().st_size < 1_000_000, name
