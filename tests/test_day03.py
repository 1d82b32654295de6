"""Day 03: the VAE's densities against torch.distributions, the IWAE bound against an exact log p(x)
computed by quadrature, slerp's geometry, free bits and KL annealing against the plain β-VAE loss and
torch.distributions, latent arithmetic on a VAE whose codes can be read back, and a smoke run that
writes every promised result."""
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "day03" / "code"))
import probes  # noqa: E402
import vae  # noqa: E402  (day folders are not packages)
from conftest import HANG_TIMEOUT, load_day  # noqa: E402

from common.checkpoint import save_checkpoint  # noqa: E402
from common.config import UserError, validate  # noqa: E402
from common.run import Run  # noqa: E402

day3 = load_day(3, "train")

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


# --- KL annealing, free bits -----------------------------------------------------------------------------

class BinaryTinyVAE(TinyVAE):
    """TinyVAE fed binarise()'s float32 pixels, as the training losses feed it."""

    def encode(self, x):
        return super().encode(x.double())

    def decode(self, z):
        return super().decode(z).float()


def test_free_bits_kl_floors_each_units_batch_mean():
    g = torch.Generator().manual_seed(5)
    mu = (torch.randn(6, 4, generator=g, dtype=D64) * torch.tensor([2.0, 0.05, 1.0, 0.01], dtype=D64))
    mu.requires_grad_(True)
    logvar = torch.zeros(6, 4, dtype=D64)
    per_unit = kl_divergence(Normal(mu, 1.0), Normal(0.0, 1.0)).mean(0)          # (4,) batch-mean KL per unit
    lam = 0.1
    got = vae.free_bits_kl(mu, logvar, lam)
    assert torch.allclose(got, per_unit.clamp_min(lam).sum())
    (grad,) = torch.autograd.grad(got, mu)
    below = per_unit < lam                                                       # units 1 and 3: tiny means
    assert below.tolist() == [False, True, False, True]
    assert torch.all(grad[:, below] == 0) and torch.all(grad[:, ~below].abs().sum(0) > 0)


def test_annealed_loss_is_the_beta_vae_loss_with_a_rising_beta():
    model = BinaryTinyVAE()
    x0 = torch.rand(3, 1, 2, 3, generator=torch.Generator().manual_seed(6)) * 2 - 1
    loss = day3.annealed_loss(warmup_steps=4)
    resumed = day3.annealed_loss(warmup_steps=4, start=2)
    for step, beta in enumerate([0.0, 0.25, 0.5, 0.75, 1.0, 1.0]):
        seed = 100 + step
        expected = day3.beta_vae_loss(beta)(model, x0, None, torch.Generator().manual_seed(seed))
        assert torch.allclose(loss(model, x0, None, torch.Generator().manual_seed(seed)), expected)
        if step >= 2:  # a run resumed at step 2 continues the same β schedule
            assert torch.allclose(resumed(model, x0, None, torch.Generator().manual_seed(seed)), expected)


def test_free_bits_loss_adds_the_floored_kl_to_the_reconstruction():
    model = BinaryTinyVAE()
    x0 = torch.rand(5, 1, 2, 3, generator=torch.Generator().manual_seed(7)) * 2 - 1
    got = day3.free_bits_loss(0.3)(model, x0, None, torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(8)                                         # the same draws, by hand
    x = vae.binarise(x0, g)
    mu, logvar = model.encode(x)
    z = vae.reparameterise(mu, logvar, g)
    recon = -Bernoulli(logits=model.decode(z)).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).mean(0).clamp_min(0.3).sum()
    assert torch.allclose(got, recon.mean() + kl)


@pytest.mark.parametrize("override, message", [({"remedy_steps": 50}, "--remedy_steps=50: choose at least warmup"),
                                               ({"anneal_frac": 1.5}, "--anneal_frac=1.5"),
                                               ({"free_bits": -1.0}, "--free_bits=-1.0"),
                                               ({"temperatures": (0.0, 1.0)}, "--temperatures=0.0,1.0")])
def test_remedy_and_temperature_settings_are_checked(override, message):
    with pytest.raises(UserError, match=message):
        validate(replace(day3.PRESETS["cpu"], **override))


def test_resumed_step_reads_the_checkpoint(tmp_path):
    run = Run(tmp_path, torch.device("cpu"), "smoke", "mnist", resume=False)
    assert day3.resumed_step(run) == 0
    save_checkpoint(tmp_path / "checkpoint.pt", {"model_class": "ConvVAE", "step": 7})
    assert day3.resumed_step(run) == 0                                           # not resuming: from scratch
    assert day3.resumed_step(Run(tmp_path, torch.device("cpu"), "smoke", "mnist", resume=True)) == 7


# --- latent arithmetic ------------------------------------------------------------------------------------

class CodeVAE:
    """encode(x) = (x as a 2-vector, 0); decode(z) = z as logits: a latent code can be read back from the image
    exactly, z = logit((image + 1) / 2)."""

    def encode(self, x):
        mu = x.flatten(1)
        return mu, torch.zeros_like(mu)

    def decode(self, z):
        return z.view(-1, 1, 1, 2)


def test_latent_arithmetic_moves_codes_by_class_mean_differences():
    codes = torch.tensor([[0.0, 0.0], [0.2, 0.0], [3.0, 0.0], [3.4, 0.2], [0.0, 3.0]], dtype=D64)
    labels = torch.tensor([0, 0, 1, 1, 2])
    means = torch.tensor([[0.1, 0.0], [3.2, 0.1], [0.0, 3.0]], dtype=D64)      # by hand

    def nearest_mean(images):                                                   # classify in code space
        z = torch.logit((images.flatten(1) + 1) / 2)
        return torch.cdist(z, means).argmin(dim=1)
    images, scores = probes.latent_arithmetic(CodeVAE(), codes.view(5, 1, 1, 2), labels, nearest_mean)
    assert images.shape == (5, 3, 1, 1, 2)
    z = torch.logit((images.flatten(2) + 1) / 2)                                # (5, 3, 2)
    expected = codes[:, None] - means[labels][:, None] + means[None]
    assert torch.allclose(z, expected, atol=1e-9)
    assert scores["classes"] == [0, 1, 2] and scores["kept"] == 1.0 and scores["success"] == 1.0
    assert scores["by_pair"]["2"] == [1.0, 1.0, 1.0]
    _, none = probes.latent_arithmetic(CodeVAE(), codes.view(5, 1, 1, 2), labels, None)
    assert none == {}


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
    assert list(m["kl_remedies"]) == ["short-plain", "short-annealed", "short-free-bits"]
    for r in m["kl_remedies"].values():
        assert math.isclose(r["elbo_nats"], -(r["recon_nats"] + r["kl_nats"]), abs_tol=0.02)
        assert np.isfinite([r["recon_psnr_db"], r["recon_ssim"], r["samples"]["fid"]]).all()
    assert list(m["temperatures"]) == [f"{t:g}" for t in m["config"]["temperatures"]]
    assert m["temperatures"]["1"]["fid"] == m["samples"]["fid"]                 # τ = 1 is the baseline itself
    arithmetic = m["latent_arithmetic"]
    assert 0 <= arithmetic["success"] <= 1 and 0 <= arithmetic["kept"] <= 1
    for name in ("beta=1", "beta=4"):
        r = m["models"][name]
        assert np.isfinite([r["recon_psnr_db"], r["recon_ssim"]]).all()
        assert r["grid_unconfident"] == len(r["grid_unconfident_indices"]) <= 64
    for name in ("kl_remedies.png", "temperatures.png", "latent_arithmetic.png",
                 "elbo_terms.png", "iwae_vs_k.png", "active_units.png", "samples_beta=1.png", "samples_beta=4.png",
                 "reconstructions.png", "interpolation.png", "traversals.png", "latent2d_scatter.png",
                 "latent2d_manifold.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "beta=1" / "checkpoint.pt").is_file()
