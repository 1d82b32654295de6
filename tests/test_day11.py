"""Day 11: the autoencoder's KL term against torch.distributions, its shapes and scale, FLOP counting against a
hand count, and the smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from conftest import HANG_TIMEOUT, load_day
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
train, autoencoder, latents = load_day(11, "train", "autoencoder", "latents")


def test_kl_term_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 4, 7, 7, generator=g, dtype=torch.float64), torch.randn(5, 4, 7, 7, generator=g,
                                                                                        dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    want = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(autoencoder.gaussian_kl(mu, logvar), want, rtol=1e-12, atol=1e-12)
    assert autoencoder.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0   # q = p


def test_encode_decode_shapes_for_each_factor():
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    for factor, side in ((1, 28), (2, 14), (4, 7)):
        ae = autoencoder.Autoencoder(autoencoder.AutoencoderConfig(channels=8, factor=factor, latent_channels=3))
        mu, logvar = ae.encode(x)
        assert mu.shape == logvar.shape == (3, 3, side, side)
        assert ae.decode(mu, (28, 28)).shape == x.shape
        recon, *_ = ae(x, torch.Generator().manual_seed(0))
        assert recon.shape == x.shape


def test_the_scale_brings_held_out_latents_to_unit_variance():
    torch.manual_seed(0)
    ae = autoencoder.Autoencoder(autoencoder.AutoencoderConfig(channels=8)).eval()
    for p in ae.parameters():                 # spread the encoder's outputs far from unit variance
        p.data *= 3
    g = torch.Generator().manual_seed(1)
    fit_on, held_out = torch.rand(400, 1, 28, 28, generator=g) * 2 - 1, torch.rand(400, 1, 28, 28, generator=g) * 2 - 1
    s = autoencoder.latent_scale(ae, fit_on)
    assert abs(s - 1) > 0.5                                                     # the raw latents are not unit
    z = train.encode(ae, held_out, s, "cpu")
    assert abs(z.std().item() - 1) < 0.05


def test_training_flops_count_a_linear_layer_by_hand():
    class Linear(nn.Module):                                # called like a U-Net: net(x, t)
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(30, 20, bias=False)

        def forward(self, x, t):
            return self.lin(x)
    # forward: 2·30·20 (a multiply and an add per weight); backward: the weight's gradient, 2·30·20 again (the
    # input is data, it needs no gradient; a hidden layer would add 2·30·20 more for its input's)
    assert latents.training_flops(Linear(), torch.randn(1, 30)) == 4 * 30 * 20


def test_smoke_run(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "day11/code/train.py", "--preset", "smoke", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    cfg = train.PRESETS["smoke"]
    assert m["autoencoder"]["latent_shape"] == [4, 7, 7] and m["autoencoder"]["compression"] == 4.0
    assert abs(m["autoencoder"]["scaled_latent_std"] - 1) < 0.1
    assert 0 < m["latent"]["flops_per_image_step"] < m["pixel"]["flops_per_image_step"]
    with np.load(out / "samples.npz") as npz:
        assert npz["arr_0"].shape == (cfg.n_samples, 28, 28, 1)
    for name in ("samples.png", "samples_pixel.png", "recon.png", "latents.png", "latent_pca.png", "loss.png"):
        assert (out / name).is_file(), name
