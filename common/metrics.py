"""Sample-quality and reconstruction metrics, written out so each can be checked by hand.

    fid               Fréchet distance between Gaussians fitted to two feature sets
    fid_bootstrap     95% interval for the FID from resampling the generated features
    precision_recall  k-NN manifold precision (fidelity) and recall (coverage)
    psnr, ssim        per-image reconstruction scores for images in [-1, 1] (data range 2)
    rmse, spread      per-image distance, and the mean distance between several outputs for one input
    class_entropy     entropy of the mean predicted class distribution (mode coverage)
    straightness      how far a sampler's trajectories bend away from straight lines (rectified flow)

FID is biased upwards at finite sample size: two sets of real images score above zero, and the
smaller the sets, the higher. A number is therefore only meaningful next to its sample count and
the real-vs-real "floor" at the same count (see common/evaluator.py).

References:
    Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter (2017), "GANs trained by a two time-scale
        update rule converge to a local Nash equilibrium", NeurIPS (FID).
    Dowson & Landau (1982), "The Fréchet distance between multivariate normal distributions",
        J. Multivariate Analysis 12(3) (the closed form used by FID).
    Kynkäänniemi, Karras, Laine, Lehtinen & Aila (2019), "Improved precision and recall metric for
        assessing generative models", NeurIPS.
    Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to
        structural similarity", IEEE Trans. Image Processing 13(4) (SSIM).
    Efron & Tibshirani (1993), "An Introduction to the Bootstrap", Chapman & Hall.
    Liu, Gong & Liu (2023), "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified
        Flow", ICLR, arXiv:2209.03003 (Eq. 7, straightness).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

DATA_RANGE = 2.0  # images live in [-1, 1]


@contextlib.contextmanager
def _one_thread():
    """Run small float64 linear algebra on one thread: on a shared, busy machine extra BLAS
    threads spin and wait on each other (measured: 20x slower bootstrap on 2 loaded cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_float64(feat) -> torch.Tensor:
    return torch.as_tensor(feat).detach().cpu().to(torch.float64)


def _stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of float64 features (N, D)."""
    return f.mean(dim=0), torch.cov(f.T)


def _sym_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix via its eigendecomposition (eigenvalues clipped at 0)."""
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def _frechet(mu1, sigma1, sigma1_sqrt, mu2, sigma2) -> torch.Tensor:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr (S1 S2)^(1/2), given A = S1^(1/2).

    S1 S2 is similar to the symmetric PSD matrix A S2 A (same eigenvalues), so
    tr (S1 S2)^(1/2) = sum_i sqrt(lambda_i(A S2 A)). The usual code (pytorch-fid) calls
    scipy.linalg.sqrtm on the non-symmetric product and then discards imaginary round-off and
    retries singular products with an offset; the symmetric route is real by construction, copes
    with singular covariances (fewer samples than dimensions) by clipping eigenvalues at zero,
    and is much faster. tests/test_metrics.py checks it against scipy.linalg.sqrtm.
    """
    eig = torch.linalg.eigvalsh(sigma1_sqrt @ sigma2 @ sigma1_sqrt)
    tr_covmean = eig.clamp_min(0).sqrt().sum()
    return ((mu1 - mu2) ** 2).sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982), in float64."""
    mu1, sigma1, mu2, sigma2 = (_as_float64(a) for a in (mu1, sigma1, mu2, sigma2))
    with _one_thread():
        return float(_frechet(mu1, sigma1, _sym_sqrt(sigma1), mu2, sigma2))


def fid(feat_a, feat_b) -> float:
    """FID (Heusel et al. 2017): Fréchet distance of Gaussians fitted to features (N, D), (M, D)."""
    with _one_thread():
        stats = *_stats(_as_float64(feat_a)), *_stats(_as_float64(feat_b))
    return frechet_distance(*stats)


def fid_bootstrap(feat_gen, feat_ref, n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% interval for fid(feat_gen, feat_ref) from resampling the generated features.

    The reference statistics and their square root are computed once; each replicate costs one
    covariance and one symmetric eigvalsh.

    Resampling with replacement repeats ~37% of the points, which adds its own small-sample bias
    and shifts every replicate above the estimate. The interval therefore takes the bootstrap
    *spread* (2.5th..97.5th percentile around the median) and centres it on the point estimate:
    it measures how much the FID of n samples moves between draws, which is what two runs'
    scores must be compared against.
    """
    f = _as_float64(feat_gen)
    gen = torch.Generator().manual_seed(seed)
    reps = torch.empty(n_boot, dtype=torch.float64)
    with _one_thread():
        mu_r, sigma_r = _stats(_as_float64(feat_ref))
        sigma_r_sqrt = _sym_sqrt(sigma_r)
        for i in range(n_boot):
            mu_g, sigma_g = _stats(f[torch.randint(0, len(f), (len(f),), generator=gen)])
            reps[i] = _frechet(mu_r, sigma_r, sigma_r_sqrt, mu_g, sigma_g)
        mu_g, sigma_g = _stats(f)
        point = float(_frechet(mu_r, sigma_r, sigma_r_sqrt, mu_g, sigma_g))
    lo, mid, hi = torch.quantile(reps, torch.tensor([0.025, 0.5, 0.975], dtype=torch.float64)).tolist()
    return max(point - (mid - lo), 0.0), point + (hi - mid)


def _kth_nn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row, (N,)."""
    d = torch.cdist(x, x)  # (N, N), zero on the diagonal
    return d.kthvalue(k + 1, dim=1).values  # +1 skips the point itself


def _inside_manifold(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                     chunk: int = 1024) -> torch.Tensor:
    """Boolean (N,): does each point fall inside at least one ball (centre_j, radius_j)?"""
    hits = [(torch.cdist(p, centres) <= radii).any(dim=1) for p in points.split(chunk)]
    return torch.cat(hits)


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Sec. 3).

    The real manifold is the union of balls around each real feature reaching its k-th nearest
    real neighbour; precision = share of fakes inside it. Recall swaps the roles.
    Both sets should have the same size: the radii shrink as a set grows.
    """
    real = torch.as_tensor(real, dtype=torch.float32)
    fake = torch.as_tensor(fake, dtype=torch.float32)
    precision = _inside_manifold(fake, real, _kth_nn_radius(real, k)).float().mean()
    recall = _inside_manifold(real, fake, _kth_nn_radius(fake, k)).float().mean()
    return float(precision), float(recall)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, 10 log10(range^2 / MSE) in dB, range = 2. (N,)"""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(DATA_RANGE**2 / mse)).float()  # identical images -> inf


def rmse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Root-mean-square distance per image, in [-1, 1] units (2 = black to white everywhere). (N,)"""
    return (x - y).pow(2).flatten(1).mean(1).sqrt()


def spread(outputs: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """outputs (M, K, C, H, W): K outputs of a stochastic method for each of M inputs. The RMS distance between
    two different outputs of one input, over the pixels where `where` (M, 1, H, W) is True (all when None),
    averaged over the K (K − 1) ordered pairs and the M inputs: 0 for a deterministic method."""
    m, k = outputs.shape[:2]
    where = torch.ones(m, 1, *outputs.shape[3:], dtype=torch.bool) if where is None else where
    weight = where.expand(m, *outputs.shape[2:]).float().flatten(1)               # (M, D)
    flat = outputs.flatten(2)                                                     # (M, K, D)
    d2 = (flat[:, :, None] - flat[:, None]).pow(2)                                # (M, K, K, D)
    per_pair = (d2 * weight[:, None, None]).sum(-1) / weight.sum(-1)[:, None, None].clamp(min=1)
    off_diagonal = ~torch.eye(k, dtype=torch.bool)
    return per_pair[:, off_diagonal].sqrt().mean().item()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, Eq. 13), averaged over channels. (N,)

    11x11 Gaussian window with sigma 1.5, 'valid' positions only (no padding), and the paper's
    constants C1 = (0.01 L)^2, C2 = (0.03 L)^2 with data range L = 2 for images in [-1, 1].
    Equals skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=2) (skimage's default is a 7x7 uniform window).
    """
    x, y = x.double(), y.double()
    c = x.shape[1]
    win = _gaussian_window().to(x.device).expand(c, 1, -1, -1)  # depthwise: one window per channel

    def blur(z):
        return F.conv2d(z, win, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2  # local weighted variances and covariance (Eqs. 14-16)
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).float()


def class_entropy(probs: torch.Tensor) -> float:
    """Entropy (nats) of the mean predicted class distribution; log(10) = 2.303 when all classes
    are equally represented, 0 when every sample is called the same class (mode collapse)."""
    p_mean = probs.double().mean(dim=0)
    return float(-(p_mean * torch.log(p_mean.clamp_min(1e-12))).sum())


def straightness(states: list[torch.Tensor], ts: torch.Tensor) -> float:
    """S = ∫_0^1 E ‖(z_1 − z_0) − dz_t/dt‖² dt (Liu et al. 2023, Eq. 7, in our time: t = 1 noise, t = 0 data) for a
    trajectory given as states z(ts[k]) on a fine grid from ts[0] = 1 to ts[-1] = 0: each step's velocity
    (z_{k+1} − z_k) / (t_{k+1} − t_k) against the chord's (z_0 − z_1) / (0 − 1), the squared distance summed over
    coordinates, averaged over points and integrated over t. 0 exactly when every path is a straight line travelled
    at constant speed; then one Euler step is exact."""
    z = torch.stack(states).double()                                          # (K + 1, N, ...)
    chord = z[-1] - z[0]                                                      # z(0) − z(1): the straight move
    dt = (ts[1:] - ts[:-1]).double()                                          # negative steps
    speed = (z[1:] - z[:-1]) / dt.view(-1, *[1] * (z.dim() - 1))              # dz/dt on each step
    deviation = (speed + chord).pow(2).flatten(2).sum(-1).mean(-1)            # ‖dz/dt − (−chord)‖², (K,)
    return float((deviation * dt.abs()).sum())
