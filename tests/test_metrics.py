"""common/metrics.py against closed forms and independent computations."""
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from common import metrics


def _gaussian(n, mean, std, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.as_tensor(mean, dtype=torch.float64) + torch.as_tensor(std, dtype=torch.float64) \
        * torch.randn(n, len(mean), generator=g, dtype=torch.float64)


def test_frechet_distance_diagonal_closed_form():
    # Diagonal covariances commute: FID = ||mu1 - mu2||^2 + sum (s1 + s2 - 2 sqrt(s1 s2)).
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 1.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_full_covariance_against_eigenvalues():
    # Independent route: tr (S1 S2)^(1/2) = sum of square roots of the eigenvalues of S1 S2.
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # Scaled covariance, same mean: FID(N(0, S), N(0, c^2 S)) = (1 - c)^2 tr S.
    assert metrics.frechet_distance(mu1, s1, mu1, 9 * s1) == pytest.approx(4 * np.trace(s1), rel=1e-8)


def test_fid_of_samples():
    a = _gaussian(4000, [0.0] * 4, [1.0] * 4, seed=0)
    assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-8)  # identical sets
    b = _gaussian(4000, [0.0] * 4, [1.0] * 4, seed=1)
    assert metrics.fid(a, b) < 0.02  # same Gaussian: only finite-sample bias
    c = _gaussian(4000, [2.0, 0, 0, 0], [1.0, 1.0, 1.0, 3.0], seed=2)
    expected = 4.0 + (1 + 9 - 2 * 3)  # mean shift 2, one std 1 -> 3
    assert metrics.fid(a, c) == pytest.approx(expected, rel=0.05)
    assert metrics.fid(a, c) == pytest.approx(metrics.fid(c, a), rel=1e-9)  # symmetric


def _fid_with_scipy_sqrtm(a, b):
    """The usual implementation (pytorch-fid): scipy.linalg.sqrtm of the non-symmetric product."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular when n < D
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = a.mean(0) - b.mean(0)
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("n_a, n_b", [(3000, 2000), (40, 30)])  # second: singular covariances
def test_fid_matches_scipy_sqrtm(n_a, n_b):
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(32, 32, generator=g, dtype=torch.float64) / 4
    a = torch.randn(n_a, 32, generator=g, dtype=torch.float64) @ mix
    b = torch.randn(n_b, 32, generator=g, dtype=torch.float64) @ (mix + 0.1) + 0.2
    ours = metrics.fid(a, b)
    assert math.isfinite(ours)
    assert ours == pytest.approx(_fid_with_scipy_sqrtm(a, b), rel=1e-4)


def test_fid_bootstrap_interval():
    a = _gaussian(1000, [0.0] * 8, [1.0] * 8, seed=0)
    ref = _gaussian(5000, [0.3] + [0.0] * 7, [1.0] * 8, seed=1)
    point = metrics.fid(a, ref)
    lo, hi = metrics.fid_bootstrap(a, ref, n_boot=100)
    assert lo < point < hi
    lo_small, hi_small = metrics.fid_bootstrap(a[:100], ref, n_boot=100)
    assert hi_small - lo_small > 2 * (hi - lo)  # ~1/sqrt(n): 10x fewer samples, ~3x wider


def test_fid_bootstrap_covers_the_true_distance():
    # True FID between N(0, I) and N((1, 0, 0), I) is exactly 1; the 95% interval should cover it.
    ref = _gaussian(20000, [1.0, 0.0, 0.0], [1.0] * 3, seed=100)
    covered = 0
    for seed in range(10):
        lo, hi = metrics.fid_bootstrap(_gaussian(2000, [0.0] * 3, [1.0] * 3, seed), ref, n_boot=100)
        covered += lo <= 1.0 <= hi
    assert covered >= 8


def test_precision_recall():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    p, r = metrics.precision_recall(a, b)
    assert p > 0.9 and r > 0.9  # same distribution
    assert metrics.precision_recall(a, a) == (1.0, 1.0)
    assert metrics.precision_recall(a, b + 20) == (0.0, 0.0)  # disjoint


def test_precision_recall_detects_mode_dropping():
    # Real data: two far-apart clusters. Fakes copy cluster A only: every fake is realistic
    # (precision 1) but half the real data is never produced (recall 1/2).
    g = torch.Generator().manual_seed(0)
    cluster_a, cluster_b = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 50
    precision, recall = metrics.precision_recall(torch.cat([cluster_a, cluster_b]), cluster_a.repeat(2, 1))
    assert precision == 1.0 and recall == 0.5


def test_psnr_closed_form():
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    sign = torch.randint(0, 2, x.shape).float() * 2 - 1
    y = x + 0.1 * sign  # MSE = 0.01 exactly
    assert torch.allclose(metrics.psnr(x, y), torch.full((3,), 10 * math.log10(4 / 0.01)), atol=1e-4)
    assert torch.isinf(metrics.psnr(x, x)).all()


def test_ssim_constant_images_closed_form():
    # Constant images have zero local variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.5, -0.2, (0.01 * 2) ** 2
    x, y = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    assert metrics.ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-5)


def test_ssim_identical_and_decreasing_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 28, 28, generator=g) * 2 - 1
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # some spatial structure
    assert torch.allclose(metrics.ssim(x, x), torch.ones(4), atol=1e-6)
    scores = [metrics.ssim(x, (x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1)).mean().item()
              for s in (0.05, 0.2, 0.5)]
    assert 1 > scores[0] > scores[1] > scores[2]


def test_ssim_matches_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")  # optional oracle, not a dependency
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(3, 1, 28, 28, generator=g) * 2 - 1, 3, 1, 1)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    expected = [skimage_metrics.structural_similarity(
        a[0].double().numpy(), b[0].double().numpy(), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=2.0) for a, b in zip(x, y)]
    assert torch.allclose(metrics.ssim(x, y).double(), torch.tensor(expected, dtype=torch.float64), atol=1e-5)


def test_class_entropy():
    assert metrics.class_entropy(torch.full((5, 10), 0.1)) == pytest.approx(math.log(10))
    collapsed = torch.zeros(6, 10)
    collapsed[:, 3] = 1
    assert metrics.class_entropy(collapsed) == pytest.approx(0.0, abs=1e-9)
    two = torch.zeros(6, 10)
    two[:3, 1], two[3:, 7] = 1, 1
    assert metrics.class_entropy(two) == pytest.approx(math.log(2))


def test_rmse_and_spread_closed_forms():
    """rmse of a constant shift is the shift; spread: 0 for a deterministic method, the distance of the two
    outputs for K = 2, and only the `where` pixels count."""
    x = torch.zeros(3, 1, 4, 4)
    assert metrics.rmse(x, x + 0.5).tolist() == [0.5] * 3
    assert metrics.spread(torch.zeros(2, 3, 1, 4, 4)) == 0
    two = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])[None]           # (1, 2, 1, 4, 4)
    assert metrics.spread(two) == pytest.approx(1.0)
    two[..., :2, :] = 5.0                                                         # outside `where`: ignored
    where = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    where[..., 2:, :] = True
    assert metrics.spread(two, where) == pytest.approx(1.0)


def test_straightness_of_known_paths():
    """Zero for points moving on straight lines at constant speed; π²/2 ‖w‖² (mean over points) for
    z_t = (1 − t) z0 + t z1 + sin(πt) w, whose velocity deviates from the chord by π cos(πt) w."""
    z0, z1, w = (torch.randn(50, 2, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                 for s in (10, 11, 12))
    ts = torch.linspace(1, 0, 2001, dtype=torch.float64)
    straight = [(1 - t) * z0 + t * z1 for t in ts]
    assert metrics.straightness(straight, ts) < 1e-20
    bent = [(1 - t) * z0 + t * z1 + torch.sin(math.pi * t) * w for t in ts]
    expected = math.pi ** 2 / 2 * w.pow(2).sum(1).mean().item()
    assert metrics.straightness(bent, ts) == pytest.approx(expected, rel=1e-4)
