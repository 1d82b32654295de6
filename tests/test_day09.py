"""Day 9: guidance checked against exact answers.

w = 0 and w = 1 of the guidance wrapper are the network's unconditional and conditional predictions exactly; the
label dropout hides labels at the rate p_uncond; on a labelled Gaussian mixture the guided score equals its closed
form (1 − w) ∇ log p_t(x) + w ∇ log p_t(x | c), and classifier guidance with the exact classifier p_t(c | x) equals
classifier-free guidance with the exact denoisers (the "implicit classifier" identity); guided sampling on exact
scores matches the conditional law at w = 1 and misses the sharpened density at w = 3; the smoke run writes its
results."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_day

from common.denoisers import LabelledMixtureDenoiser, MixtureDenoiser
from common.nets import UNet, UNetConfig
from common.paths import DiscreteVP
from common.predictions import denoiser, guided
from common.samplers import ddpm
from common.toy2d import GaussianMixture, sliced_wasserstein

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64
train, toy, classifier = load_day(9, "train", "toy", "classifier")
PATH = DiscreteVP.named("cosine", 1000)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the guidance wrapper on a network ------------------------------------------------------------------------

def test_w0_is_the_unconditional_and_w1_the_conditional_prediction(one_thread):
    """Exactly: the wrapper's output at w = 0 (w = 1) is, bit for bit, the unconditional (conditional) half of the
    one batched forward pass; and that half equals a call of the network on its own up to float32 rounding (a
    batch of 12 sums in another order than a batch of 6)."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=16, n_res=1, num_classes=10))
    for p in net.parameters():          # zero-initialised output layers would make every branch alike
        p.data += 0.05 * torch.randn_like(p)
    base = denoiser(net, "v", PATH)
    x, t, y = torch.randn(6, 1, 28, 28), torch.rand(6, dtype=F64), torch.arange(6)
    both = base(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, torch.full_like(y, 10)]))
    cond, uncond = [(x0, eps) for x0, eps in zip(both.x0.chunk(2), both.eps.chunk(2))]
    assert (cond[0] - uncond[0]).abs().max() > 1e-2                          # the label matters
    with torch.no_grad():
        for w, want in ((0.0, uncond), (1.0, cond)):
            got = guided(base, w, null=10)(x, t, y=y)
            assert torch.equal(got.x0, want[0]) and torch.equal(got.eps, want[1]), w
        torch.testing.assert_close(base(x, t, y=y).eps, cond[1], rtol=0, atol=1e-5)
        mid = guided(base, 3.0, null=10)(x, t, y=y)                           # ε̃ = ε_∅ + 3 (ε_c − ε_∅)
        torch.testing.assert_close(mid.eps, uncond[1] + 3 * (cond[1] - uncond[1]), rtol=1e-5, atol=1e-5)


def test_guidance_runs_both_branches_in_one_forward_pass():
    calls = []

    def net(x, t, y=None):
        calls.append((len(x), y.tolist()))
        return torch.zeros_like(x)
    denoise = guided(denoiser(net, "eps", PATH), 2.0, null=10)
    denoise(torch.zeros(3, 2), torch.full((3,), 0.5), y=torch.tensor([1, 2, 3]))
    assert calls == [(6, [1, 2, 3, 10, 10, 10])]


# --- label dropout ----------------------------------------------------------------------------------------

def test_label_dropout_hides_labels_at_the_rate_p_uncond():
    y = torch.arange(10).repeat(20_000)                                        # 200,000 labels
    for p in (0.1, 0.15, 0.2):
        dropped = train.drop_labels(y, p, 10, gen(1))
        hidden = dropped == 10
        sd = math.sqrt(p * (1 - p) / len(y))
        assert abs(hidden.float().mean().item() - p) < 4 * sd, p
        assert torch.equal(dropped[~hidden], y[~hidden])                        # the rest untouched


def test_the_training_loss_feeds_the_network_null_labels_at_p_uncond():
    cfg = train.PRESETS["smoke"]
    _, _, loss_fn = train.build(cfg)
    seen = []

    def spy(x, t, y=None):
        seen.append(y)
        return torch.zeros_like(x)
    x0, y = torch.zeros(4000, 1, 2, 2), torch.randint(0, 10, (4000,))
    loss_fn(spy, x0, y, gen(2))
    share = (seen[0] == 10).float().mean().item()
    assert abs(share - cfg.p_uncond) < 4 * math.sqrt(cfg.p_uncond * (1 - cfg.p_uncond) / 4000)


# --- exact answers on a labelled Gaussian mixture ------------------------------------------------------------

def exact(t: float):
    """The noised data density and class densities at t, and (alpha, sigma)."""
    a, s = PATH.alpha(torch.tensor(t, dtype=F64)).item(), PATH.sigma(torch.tensor(t, dtype=F64)).item()
    return toy.data_density().noised(a, s), [toy.class_density(c).noised(a, s) for c in range(3)], a, s


def oracle():
    return LabelledMixtureDenoiser(toy.class_means(), torch.arange(3), toy.STD, PATH, null=3)


def test_the_labelled_mixture_denoiser_conditions_on_the_class():
    x, t = 2 * torch.randn(50, 2, generator=gen(3), dtype=F64), torch.full((50,), 0.4, dtype=F64)
    means = toy.class_means()
    torch.testing.assert_close(oracle()(x, t, y=torch.full((50,), 3)), MixtureDenoiser(means, toy.STD, PATH)(x, t))
    torch.testing.assert_close(oracle()(x, t), MixtureDenoiser(means, toy.STD, PATH)(x, t))
    for c in range(3):
        torch.testing.assert_close(oracle()(x, t, y=torch.full((50,), c)),
                                   MixtureDenoiser(means[c:c + 1], toy.STD, PATH)(x, t))


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0, 8.0])
@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 0.95])
def test_the_guided_score_equals_its_closed_form(w, t):
    """Score of the guided denoiser, −ε̃ / sigma, against (1 − w) ∇ log p_t(x) + w ∇ log p_t(x | c), the latter
    from GaussianMixture.score (softmax responsibilities), not from the posterior mean the denoiser computes."""
    data, classes, a, s = exact(t)
    x = 2 * torch.randn(64, 2, generator=gen(4), dtype=F64)
    y = torch.randint(0, 3, (64,), generator=gen(5))
    pair = guided(denoiser(oracle(), "x0", PATH), w, null=3)(x, torch.full((64,), t, dtype=F64), y=y)
    cond = torch.stack([classes[c].score(x[i:i + 1])[0] for i, c in enumerate(y.tolist())])
    torch.testing.assert_close(-pair.eps / s, (1 - w) * data.score(x) + w * cond, rtol=1e-8, atol=1e-8)


def test_classifier_guidance_with_the_exact_classifier_is_classifier_free_guidance():
    """ε_∅ − s sigma ∇ log p_t(c | x) with the exact p_t(c | x) = p_t(x | c) p(c) / p_t(x) is ε_∅ + s (ε_c − ε_∅):
    Bayes' rule at every noise level, the implicit classifier of Ho & Salimans §3.2."""
    def exact_classifier(x, t):               # logits: log p_t(x | c), the prior is uniform
        _, classes, _, _ = exact(float(t[0]))
        return torch.stack([d.log_prob(x) for d in classes], dim=1)
    base = denoiser(oracle(), "x0", PATH)
    x, y = 2 * torch.randn(64, 2, generator=gen(6), dtype=F64), torch.randint(0, 3, (64,), generator=gen(7))
    for t in (0.1, 0.5, 0.9):
        tt = torch.full((64,), t, dtype=F64)
        for s in (1.0, 4.0):
            cg = classifier.classifier_guided(base, exact_classifier, s, PATH)(x, tt, y=y)
            cfg = guided(base, s, null=3)(x, tt, y=y)
            torch.testing.assert_close(cg.eps, cfg.eps, rtol=1e-8, atol=1e-8)
            torch.testing.assert_close(cg.x0, cfg.x0, rtol=1e-8, atol=1e-8)


def test_grid_sampling_draws_the_density():
    g = GaussianMixture(torch.tensor([[0.5, -1.0]], dtype=F64), 0.6)
    x = toy.sample_grid(g.log_prob, 40_000, gen(8))
    torch.testing.assert_close(x.mean(0), torch.tensor([0.5, -1.0], dtype=F64), atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), torch.tensor([0.6, 0.6], dtype=F64), atol=0.02, rtol=0)


def test_guided_sampling_hits_the_conditional_at_w1_and_misses_the_sharpened_density_at_w3():
    """On exact scores: at w = 1 the ancestral sampler draws p(x | c) (its distance to exact draws is at the level
    of two exact draws); at w = 3 it lands far from p(x | c)^3 p(x)^−2, further out along the class direction."""
    n, steps = 4000, 100
    for w, close in ((1.0, True), (3.0, False)):
        def sharpened(x, w=w):
            return toy.sharpened_log_density(x, 0, w)
        target, again = toy.sample_grid(sharpened, n, gen(9)), toy.sample_grid(sharpened, n, gen(10))
        samples = toy.guided_samples(w, 0, n, ddpm, steps, gen(11))
        noise = sliced_wasserstein(target, again, generator=gen(12))
        gap = sliced_wasserstein(samples, target, generator=gen(12))
        assert (gap < 3 * noise + 0.01) if close else (gap > 5 * noise), (w, gap, noise)
        if not close:
            assert toy.summary(samples, 0)["mean_along"] > toy.summary(target, 0)["mean_along"] + 0.15


def test_recommend_picks_the_lowest_fid_among_accurate_weights():
    sweep = {f"w={w}": {"w": w, "class_accuracy": acc, "fid_ratio": fid}
             for w, acc, fid in ((0, 0.5, 2.0), (1, 0.95, 1.5), (2, 0.98, 1.8), (3, 0.99, 2.4))}
    assert train.recommend(sweep, 0.97) == 2
    assert train.recommend(sweep, 0.999) == 3                  # none reaches it: the most accurate


# --- the smoke run ------------------------------------------------------------------------------------------

def test_smoke_run(day9_smoke):
    out = day9_smoke
    m = json.loads((out / "metrics.json").read_text())
    cfg = train.PRESETS["smoke"]
    assert [r["w"] for r in m["cfg_sweep"].values()] == list(cfg.ws)
    assert [r["s"] for r in m["classifier_guidance_sweep"].values()] == list(cfg.cg_scales)
    assert m["recommended"]["w"] in cfg.ws and m["recommended"]["n"] == 10 * cfg.per_class
    assert set(m["toy"]["by_w"]) == {f"w={w:g}" for w in cfg.toy_ws}
    with np.load(out / "samples.npz") as npz:
        assert npz["arr_0"].shape == (10 * cfg.per_class, 28, 28, 1)
        assert npz["arr_1"].tolist() == [c for c in range(10) for _ in range(cfg.per_class)]
    for name in ("samples.png", "same_noise.png", "tradeoff.png", "diversity.png", "toy_guidance.png", "loss.png",
                 *(f"gallery_w{w:g}.png" for w in cfg.ws), "unet/checkpoint.pt", "classifier/checkpoint.pt"):
        assert (out / name).is_file(), name
