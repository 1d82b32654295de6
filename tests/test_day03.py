"""Day 03: the VAE's densities against torch.distributions, the IWAE bound against an exact log p(x)
computed by quadrature, slerp's geometry, and a smoke run that writes every promised result."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "day03" / "code"))
import vae  # noqa: E402  (day folders are not packages)
from conftest import HANG_TIMEOUT  # noqa: E402

D64 = torch.float64


def test_densities_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar, z = (torch.randn(5, 4, generator=g, dtype=D64) for _ in range(3))
    std = (0.5 * logvar).exp()
    expected_kl = kl_divergence(Normal(mu, std), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    assert torch.allclose(vae.kl_to_prior(mu, logvar), expected_kl, atol=1e-12)
    assert torch.allclose(vae.gaussian_log_prob(z, mu, logvar), Normal(mu, std).log_prob(z).sum(-1), atol=1e-12)
    logits = torch.randn(5, 1, 28, 28, generator=g, dtype=D64)
    x = (torch.rand(5, 1, 28, 28, generator=g, dtype=D64) < 0.3).to(D64)
    expected = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(-1)
    assert torch.allclose(vae.bernoulli_log_lik(logits, x), expected, atol=1e-9)


class TinyVAE:
    """1-D latent, six binary pixels: p(x|z) = Bernoulli(sigmoid(a·z + b)), q(z|x) = N(c·x, 0.8²).

    Why 0.8: where the likelihood saturates, the posterior's tail is the prior's N(0, 1), and
    E_q[w²] = ∫ p(x, z)² / q(z|x) dz diverges once q's variance is below half of that tail's. With
    sd 0.5 (0.25 < 1/2) the IWAE estimate converges erratically, above or below log p(x).
    """
    a = torch.tensor([2.0, -1.5, 1.0, 0.5, -2.5, 1.2], dtype=D64)
    b = torch.tensor([0.3, -0.2, 0.1, -1.0, 0.5, 0.0], dtype=D64)
    c = torch.tensor([0.4, -0.3, 0.2, 0.1, -0.5, 0.2], dtype=D64)

    def encode(self, x):
        mu = x.flatten(1) @ self.c[:, None]                    # (B, 1)
        return mu, torch.full_like(mu, math.log(0.8**2))

    def decode(self, z):
        return (z * self.a + self.b).view(-1, 1, 2, 3)        # (B, 1) -> logits (B, 1, 2, 3)


def exact_log_px(model: TinyVAE, x: torch.Tensor) -> torch.Tensor:
    """log ∫ N(z; 0, 1) p(x|z) dz by the trapezoid rule on a fine grid (the latent is 1-D)."""
    z = torch.linspace(-12, 12, 40_001, dtype=D64)
    logits = model.decode(z[:, None])[:, None].expand(-1, len(x), -1, -1, -1)    # (Z, B, 1, 2, 3)
    log_lik = vae.bernoulli_log_lik(logits, x)                                    # (Z, B)
    integrand = (log_lik + Normal(0.0, 1.0).log_prob(z)[:, None]).exp()
    return torch.trapezoid(integrand, z, dim=0).log()


def test_iwae_bound_tightens_to_the_exact_likelihood():
    model = TinyVAE()
    x = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=D64).view(3, 1, 2, 3)
    exact = exact_log_px(model, x)
    g = torch.Generator().manual_seed(1)
    log_w = vae.log_weights(model, x, 200_000, g)                   # (200000, 3) independent log-weights
    bound = {k: vae.iwae_bound(log_w.view(k, -1, 3)) for k in (1, 10, 100, 1000)}  # disjoint groups of k
    mean = {k: b.mean(0) for k, b in bound.items()}
    assert torch.all(mean[1] < mean[10]) and torch.all(mean[10] < mean[100]) and torch.all(mean[100] < mean[1000])
    standard_error = bound[1000].std(0) / math.sqrt(len(bound[1000]))
    assert torch.all(mean[1000] < exact + 3 * standard_error)                        # L_K <= log p(x)
    assert torch.allclose(vae.iwae_bound(log_w), exact, atol=5e-3)                  # L_200000 ~ log p(x)
    # L_1 is the ELBO: its mean matches −(reconstruction + analytic KL) from elbo_terms.
    recon, kl = vae.elbo_terms(model, x.repeat(20_000, 1, 1, 1), g)
    assert torch.allclose(-(recon + kl).view(20_000, 3).mean(0), mean[1], atol=0.05)


def test_slerp_follows_the_great_circle():
    z0 = torch.tensor([3.0, 0.0, 0.0], dtype=D64)
    z1 = torch.tensor([0.0, 3.0, 0.0], dtype=D64)
    t = torch.linspace(0, 1, 7, dtype=D64)
    path = vae.slerp(z0, z1, t)
    assert torch.allclose(path[0], z0) and torch.allclose(path[-1], z1)
    assert torch.allclose(path.norm(dim=1), torch.full((7,), 3.0, dtype=D64))       # constant radius
    assert torch.allclose(torch.atan2(path[:, 1], path[:, 0]), t * math.pi / 2)     # constant angular speed
    # The straight line's midpoint falls inside the sphere by a factor cos(θ/2).
    assert math.isclose(float((0.5 * (z0 + z1)).norm()), 3.0 * math.cos(math.pi / 4), rel_tol=1e-12)


def test_active_units_and_binarisation():
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(4000, 3, generator=g) * torch.tensor([1.0, 0.2, 0.05])           # variances 1, 0.04, 0.0025
    count, activity = vae.active_units(mu)
    assert count == 2 and torch.allclose(activity, torch.tensor([1.0, 0.04, 0.0025], dtype=D64), rtol=0.1)
    x = torch.full((20_000, 1, 2, 2), 0.5)                                            # (x + 1) / 2 = 0.75
    assert abs(float(vae.binarise(x, g).mean()) - 0.75) < 0.01


def test_smoke_run(tmp_path):
    subprocess.run([sys.executable, "day03/code/train.py", "--preset", "smoke", "--out", str(tmp_path)],
                   cwd=ROOT, timeout=HANG_TIMEOUT, check=True)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["models"]) == {"beta=1", "beta=4", "latent2d"}
    for name, r in m["models"].items():
        assert r["elbo_nats"] <= r["iwae_nats"] < 0                                   # Jensen: L_1 <= L_K <= 0
        assert math.isclose(r["nll_bits_per_dim"], r["nll_nats"] / (784 * math.log(2)), abs_tol=1e-3)
        assert 0 <= r["active_units"] <= r["latent_dim"] == len(r["activity"])
        assert m["curves"][name]["step"] == [4, 8] and np.isfinite(m["curves"][name]["kl"]).all()
    for scores in (m["samples"], m["models"]["beta=4"]["samples"]):
        assert scores["n"] == 64 and np.isfinite([scores["fid"], scores["fid_floor"], scores["class_entropy"]]).all()
    with np.load(tmp_path / "samples.npz") as f:
        assert f["arr_0"].shape == (64, 28, 28, 1) and f["arr_0"].dtype == np.uint8
    for name in ("elbo_terms.png", "iwae_vs_k.png", "active_units.png", "samples_beta=1.png", "samples_beta=4.png",
                 "reconstructions.png", "interpolation.png", "traversals.png", "latent2d_scatter.png",
                 "latent2d_manifold.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "beta=1" / "checkpoint.pt").is_file()
