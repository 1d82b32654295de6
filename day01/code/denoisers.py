"""Day 01 helpers: the closed form of clipped noise, and the classical denoisers we compare.

    clipped_mse      E[(clip(x + σε, −1, 1) − x)²] for each pixel value x, exactly
    clipped_fraction P(x + σε ∉ [−1, 1]): the share of pixels that clipping changes
    Wiener           the best *linear* denoiser x̂ = μ + W (y − μ), W = Σ (Σ + σ² I)⁻¹
    gaussian_blur    separable Gaussian smoothing, the hand-made denoiser (scipy's kernel)

References:
    Wiener (1949), "Extrapolation, Interpolation, and Smoothing of Stationary Time Series", MIT Press.
    Kay (1993), "Fundamentals of Statistical Signal Processing: Estimation Theory", §12 (the linear
        minimum-MSE estimator, Eq. 12.20).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def clipped_mse(x: Tensor, sigma: float) -> Tensor:
    """E[e²] with e = clip(x + σz, −1, 1) − x, z ~ N(0, 1), elementwise for pixel values x in [-1, 1].

    With a = (−1 − x)/σ and b = (1 − x)/σ the error is σa below a, σb above b and σz between, so
        E[e²] = σ² [a² Φ(a) + b² (1 − Φ(b)) + Φ(b) − Φ(a) − b φ(b) + a φ(a)],
    using ∫_a^b z² φ(z) dz = Φ(b) − Φ(a) − b φ(b) + a φ(a) (integrate by parts).
    """
    x = x.double()
    a, b = (-1 - x) / sigma, (1 - x) / sigma
    cdf, pdf = torch.special.ndtr, lambda z: torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    inside = cdf(b) - cdf(a) - b * pdf(b) + a * pdf(a)
    return sigma**2 * (a**2 * cdf(a) + b**2 * (1 - cdf(b)) + inside)


def clipped_fraction(x: Tensor, sigma: float) -> Tensor:
    """P(x + σz < −1 or x + σz > 1) = Φ(a) + 1 − Φ(b), with a, b as in `clipped_mse`, elementwise."""
    x = x.double()
    return torch.special.ndtr((-1 - x) / sigma) + 1 - torch.special.ndtr((1 - x) / sigma)


@dataclass
class Wiener:
    """The linear minimum-MSE denoiser of y = x + σε, fitted once, usable at every σ.

    Least squares over x̂ = W y + b gives W = Σ_xy Σ_yy⁻¹ and b = μ − W μ (Kay Eq. 12.20). Noise
    independent of x makes Σ_xy = Σ and Σ_yy = Σ + σ² I. With Σ = U diag(λ) Uᵀ,
        W = U diag(λ / (λ + σ²)) Uᵀ:
    rotate into principal components, shrink each by its signal fraction, rotate back. One
    eigendecomposition serves every σ, and the expected MSE per pixel is mean_k λ_k σ² / (λ_k + σ²).
    """
    mean: Tensor      # (D,)    μ, float64
    eigvals: Tensor   # (D,)    λ_k of Σ, ascending, float64
    eigvecs: Tensor   # (D, D)  U, columns are principal directions

    @classmethod
    def fit(cls, x: Tensor) -> Wiener:
        """Fit μ and Σ of clean images x (N, C, H, W) in float64."""
        x = x.flatten(1).double()                            # (N, D)
        mean = x.mean(0)
        centred = x - mean
        cov = centred.T @ centred / (len(x) - 1)             # (D, D)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        return cls(mean, eigvals.clamp(min=0), eigvecs)      # clamp: round-off makes tiny λ < 0

    def gains(self, sigma: float) -> Tensor:
        """λ_k / (λ_k + σ²): how much of principal component k survives. (D,)"""
        return self.eigvals / (self.eigvals + sigma**2)

    def expected_mse(self, sigma: float) -> float:
        """Per-pixel MSE of the denoiser on data with covariance Σ: mean_k λ_k σ² / (λ_k + σ²)."""
        return float((self.eigvals * sigma**2 / (self.eigvals + sigma**2)).mean())

    def __call__(self, y: Tensor, sigma: float) -> Tensor:
        """Denoise y (N, C, H, W): x̂ = μ + U diag(gains) Uᵀ (y − μ)."""
        coords = (y.flatten(1).double() - self.mean) @ self.eigvecs         # (N, D) in the PCA basis
        x_hat = self.mean + (coords * self.gains(sigma)) @ self.eigvecs.T   # (N, D)
        return x_hat.to(y.dtype).reshape(y.shape)


def gaussian_blur(x: Tensor, width: float) -> Tensor:
    """Blur (N, C, H, W) with a Gaussian of std `width` pixels; width 0 is the identity.

    The kernel is scipy.ndimage.gaussian_filter's: radius round(3 · width), edges extended by
    repeating the border pixel (mode "nearest"), applied along rows, then along columns.
    """
    if width == 0:
        return x
    r = int(3 * width + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / width) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
