"""2-D toy distributions with exact samplers, an exact Gaussian mixture, and a sample distance.

The toys are the usual testbeds of the flow and diffusion literature, all scaled to lie roughly in
[-3, 3]^2 so that one plot window and one network input scale fit them all:

    moons         two interleaved half circles (scikit-learn's `make_moons`), noise std 0.1
    8gaussians    eight Gaussians on a circle of radius 2, std 0.1 (`eight_gaussians()`)
    checkerboard  uniform on the 8 "black" cells of a 4 x 4 board of 1.5-wide cells
    spirals       two interleaved Archimedean spirals, noise std 0.1
    swissroll     the 2-D swiss roll (scikit-learn's `make_swiss_roll`, x-z plane), noise std 0.1

`GaussianMixture` is the oracle for score-based tests: its density, score and the law of its
noised version alpha * X + sigma * eps are all in closed form, so a learned score or a sampler can
be checked against exact values. `sliced_wasserstein` compares two samples.

References:
    Grathwohl et al. (2019), "FFJORD: Free-form continuous dynamics for scalable reversible
        generative models", ICLR (the 8gaussians / checkerboard / 2spirals toys).
    Lipman et al. (2023), "Flow Matching for Generative Modeling", ICLR (same toys).
    Bonneel, Rabin, Peyre & Pfister (2015), "Sliced and Radon Wasserstein barycenters of
        measures", J. Math. Imaging Vis. (the sliced Wasserstein distance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from common.config import UserError

TOYS = ("moons", "8gaussians", "checkerboard", "spirals", "swissroll")
NOISE = 0.1  # std of the Gaussian jitter added to the curve-shaped toys
CELL = 1.5  # checkerboard cell width: 4 cells span [-3, 3]


@dataclass
class GaussianMixture:
    """Uniform mixture of isotropic Gaussians N(means[k], std^2 I); works in the means' dtype."""

    means: torch.Tensor  # (K, D), D = 2 for the toys
    std: float

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        m = self.means
        k = torch.randint(len(m), (n,), generator=generator)  # (n,) component of each sample
        eps = torch.randn(n, m.shape[1], generator=generator, dtype=m.dtype)
        return m[k] + self.std * eps.to(m.device)  # (n, D)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mu_k, std^2 I) up to the constant shared by all k.  (n, K)"""
        sq_dist = ((x[:, None, :] - self.means[None, :, :]) ** 2).sum(-1)  # (n, K)
        return -sq_dist / (2 * self.std**2)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = logsumexp_k log N(x; mu_k, std^2 I) - log K.  (n,)"""
        K, D = self.means.shape
        log_norm = 0.5 * D * math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(self._logits(x), dim=1) - math.log(K) - log_norm

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) = sum_k w_k(x) (mu_k - x) / std^2, w = posterior over components.  (n, D)"""
        w = torch.softmax(self._logits(x), dim=1)  # (n, K) responsibilities
        return (w @ self.means - x) / self.std**2

    def noised(self, alpha: float, sigma: float) -> GaussianMixture:
        """The law of alpha * X + sigma * eps (X ~ self, eps ~ N(0, I)): again a mixture, with
        means alpha * mu_k and variance alpha^2 std^2 + sigma^2 (Gaussians convolve in closed form)."""
        return GaussianMixture(self.means * alpha, math.sqrt(alpha**2 * self.std**2 + sigma**2))


def eight_gaussians(dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """Eight Gaussians, means at radius 2 and angles 0, 45, ..., 315 degrees, std 0.1 (FFJORD's
    '8gaussians' with a smaller radius so that the samples stay within [-3, 3])."""
    angles = torch.arange(8, dtype=dtype) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (8, 2)
    return GaussianMixture(means, 0.1)


def _uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator)


def _jitter(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return x + NOISE * torch.randn(x.shape, generator=generator)


def _moons(n: int, generator: torch.Generator | None) -> torch.Tensor:
    theta = math.pi * _uniform(n, generator)
    upper = _uniform(n, generator) < 0.5
    # Upper moon (cos, sin); lower moon (1 - cos, 1/2 - sin): scikit-learn's layout.
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    xy = torch.stack([x - 0.5, y - 0.25], dim=1) * 2.0  # centre, then scale x to [-3, 3]
    return _jitter(xy, generator)


def _checkerboard(n: int, generator: torch.Generator | None) -> torch.Tensor:
    # Black cells are those with (i + j) even, i, j in {-2, -1, 0, 1}: pick a column i, then one
    # of the two rows of matching parity, then a uniform point inside the cell.
    i = torch.randint(-2, 2, (n,), generator=generator)
    j = 2 * torch.randint(-1, 1, (n,), generator=generator) + i.remainder(2)
    cell = torch.stack([i, j], dim=1).float()  # (n, 2) lower-left corners, in cell units
    return CELL * (cell + torch.rand(n, 2, generator=generator))


def _spirals(n: int, generator: torch.Generator | None) -> torch.Tensor:
    # sqrt makes the density along the curve roughly uniform in arc length (FFJORD's '2spirals').
    theta = torch.sqrt(_uniform(n, generator)) * 3 * math.pi
    r = theta / math.pi  # radius grows to 3
    xy = r[:, None] * torch.stack([-torch.cos(theta), torch.sin(theta)], dim=1)
    sign = torch.where(_uniform(n, generator) < 0.5, -1.0, 1.0)  # second spiral: the first rotated by pi
    return _jitter(sign[:, None] * xy, generator)


def _swissroll(n: int, generator: torch.Generator | None) -> torch.Tensor:
    theta = 1.5 * math.pi * (1 + 2 * _uniform(n, generator))  # in [1.5 pi, 4.5 pi]
    xy = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1)
    return _jitter(xy * (3 / (4.5 * math.pi)), generator)  # radius up to 3


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples of the toy `name` as an (n, 2) float32 tensor; see the module docstring."""
    samplers = {
        "moons": _moons,
        "8gaussians": lambda n, g: eight_gaussians().sample(n, g),
        "checkerboard": _checkerboard,
        "spirals": _spirals,
        "swissroll": _swissroll,
    }
    if name not in samplers:
        raise UserError(f"unknown toy distribution '{name}'; choose one of: {', '.join(TOYS)}")
    return samplers[name](n, generator).float()


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, n_proj: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 1-Wasserstein distance between two equal-size samples a, b of shape (n, D).

    SW_1 = E_theta [ W_1(<a, theta>, <b, theta>) ] over uniform unit directions theta; in 1-D,
    W_1 between two equal-size samples is the mean gap between their sorted values.
    """
    if a.shape != b.shape:
        raise ValueError(f"samples must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    theta = torch.randn(n_proj, a.shape[1], generator=generator, dtype=a.dtype).to(a.device)
    theta = theta / theta.norm(dim=1, keepdim=True)  # (P, D) unit directions
    pa = torch.sort(theta @ a.T, dim=1).values  # (P, n) sorted projections
    pb = torch.sort(theta @ b.to(a.dtype).T, dim=1).values
    return (pa - pb).abs().mean().item()
