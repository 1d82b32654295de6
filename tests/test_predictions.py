"""common.predictions against independent references: every adapter by a float64 round trip on every path,
the velocity target by finite differences of the path, v written out by hand, `denoiser` of a network that
knows the answer (a one-image dataset), clipping and Imagen's dynamic thresholding recomputed with numpy,
and classifier-free guidance at its two exact endpoints with a call counter."""
import numpy as np
import pytest
import torch

from common.config import UserError
from common.denoisers import ideal_denoiser
from common.paths import VE, DiscreteVP, Linear, VPCosine
from common.predictions import (
    PREDICTIONS,
    TARGET,
    TO_PAIR,
    Coefficients,
    Pair,
    clipped,
    denoiser,
    guided,
    thresholded,
    velocity,
)

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = {"discrete-linear": DiscreteVP.named("linear"), "discrete-cosine": DiscreteVP.named("cosine"),
         "vp-cosine": VPCosine(), "linear": Linear(), "ve": VE()}
TIMES = [0.0137, 0.2504, 0.5003, 0.7496, 0.9905]          # strictly inside DDPM steps, away from the kinks
assert set(PREDICTIONS) == {"eps", "x0", "v", "velocity", "score"}


def draw(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def batch_t(t: float, n: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=F64)


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("kind", PREDICTIONS)
def test_to_pair_inverts_target(name, kind):
    path = PATHS[name]
    x0, eps = draw(4, 3, 5, 5, seed=1), draw(4, 3, 5, 5, seed=2)
    for t in TIMES:
        c = Coefficients.at(path, batch_t(t, 4), x0)
        xt = c.alpha * x0 + c.sigma * eps
        x0_hat, eps_hat = TO_PAIR[kind](xt, TARGET[kind](x0, eps, c), c)
        scale = 1 + float(c.sigma.max())          # VE: x_t reaches sigma ~ 50
        torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-10 * scale)
        torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("name", list(PATHS))
def test_velocity_target_is_the_time_derivative_of_the_path(name):
    path, h = PATHS[name], 1e-7
    x0, eps = draw(6, 2, seed=3), draw(6, 2, seed=4)
    for t in TIMES:
        c = Coefficients.at(path, batch_t(t, 6), x0)
        fd = (path.sample(x0, batch_t(t + h, 6), eps) - path.sample(x0, batch_t(t - h, 6), eps)) / (2 * h)
        target = TARGET["velocity"](x0, eps, c)
        torch.testing.assert_close(target, fd, rtol=1e-6, atol=1e-6 * float(fd.abs().max()))
        torch.testing.assert_close(velocity(Pair(x0, eps), c), target, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["discrete-linear", "discrete-cosine", "vp-cosine"])
def test_v_on_vp_paths_is_alpha_eps_minus_sigma_x0(name):
    """Salimans & Ho §4, with alpha and sigma read from the path's own functions."""
    path = PATHS[name]
    x0, eps = draw(5, 7, seed=5), draw(5, 7, seed=6)
    t = torch.tensor(TIMES, dtype=F64)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    c = Coefficients.at(path, t, x0)
    torch.testing.assert_close(TARGET["v"](x0, eps, c), a * eps - s * x0, rtol=0, atol=1e-15)
    # and back: x0 = alpha x_t − sigma v, eps = sigma x_t + alpha v (alpha² + sigma² = 1)
    xt, v = a * x0 + s * eps, a * eps - s * x0
    torch.testing.assert_close(a * xt - s * v, x0, rtol=0, atol=1e-14)
    torch.testing.assert_close(TO_PAIR["v"](xt, v, c)[1], s * xt + a * v, rtol=0, atol=1e-14)


def exact_network(x_star: torch.Tensor, path, kind: str):
    """The optimal network for a one-image dataset {x*}: its target at (x_t, t), written by hand."""
    def net(xt, t):
        a, s = (f(t.double()).reshape(-1, 1, 1, 1) for f in (path.alpha, path.sigma))
        da, ds = (f(t.double()).reshape(-1, 1, 1, 1) for f in (path.d_alpha, path.d_sigma))
        eps = (xt - a * x_star) / s
        return {"eps": eps, "x0": x_star.expand_as(xt), "v": a * eps - s * x_star,
                "velocity": da * x_star + ds * eps, "score": -eps / s}[kind]
    return net


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("kind", PREDICTIONS)
def test_denoiser_of_an_exact_network_recovers_the_image(name, kind):
    path, x_star = PATHS[name], draw(1, 2, 4, 4, seed=7)
    denoise = denoiser(exact_network(x_star, path, kind), kind, path)
    xt = draw(3, 2, 4, 4, seed=8) * 2
    for t in TIMES:
        pair = denoise(xt, batch_t(t, 3))
        a, s = path.alpha_sigma(batch_t(t, 3), xt)
        scale = 1 + float(s.max())
        torch.testing.assert_close(pair.x0, x_star.expand_as(xt), rtol=0, atol=1e-10 * scale)
        torch.testing.assert_close(pair.eps, (xt - a * x_star) / s, rtol=0, atol=1e-10 * scale)
    # the ideal denoiser of the same one-image dataset is that network too (an x0 predictor)
    pair = denoiser(ideal_denoiser(x_star, path), "x0", path)(xt, batch_t(0.5, 3))
    torch.testing.assert_close(pair.x0, x_star.expand_as(xt), rtol=0, atol=1e-12)


def test_unknown_prediction_is_a_user_error():
    with pytest.raises(UserError, match="unknown prediction"):
        denoiser(lambda x, t: x, "noise", Linear())


def wild_denoiser(path):
    """A denoiser whose x̂0 overshoots [-1, 1] (x̂0 = 3 x_t), with ε̂ consistent with x_t."""
    return denoiser(lambda xt, t: 3 * xt, "x0", path)


@pytest.mark.parametrize("name", ["discrete-cosine", "linear"])
def test_clipped_clamps_x0_and_keeps_xt(name):
    path = PATHS[name]
    xt, t = draw(4, 3, 6, 6, seed=9), batch_t(0.4, 4)
    pair = clipped(wild_denoiser(path), path)(xt, t)
    raw = 3 * xt
    assert (raw.abs() > 1).any() and (raw.abs() < 1).any()
    assert torch.equal(pair.x0, raw.clamp(-1, 1))
    a, s = path.alpha_sigma(t, xt)
    torch.testing.assert_close(a * pair.x0 + s * pair.eps, xt, rtol=0, atol=1e-14)
    pair = clipped(wild_denoiser(path), path, lo=-0.5, hi=2.0)(xt, t)
    assert torch.equal(pair.x0, raw.clamp(-0.5, 2.0))


def test_thresholded_matches_a_hand_computation():
    """Imagen §2.3: s = max(1, 99.5th percentile of |x̂0| per image); x̂0 <- clip(x̂0, -s, s) / s."""
    path = PATHS["discrete-cosine"]
    xt, t = draw(5, 3, 8, 8, seed=10), batch_t(0.3, 5)
    xt[0] *= 0.05                                     # an image whose x̂0 stays inside [-1, 1]: s = 1
    pair = thresholded(wild_denoiser(path), path, percentile=0.995)(xt, t)
    raw = (3 * xt).numpy()
    for i in range(len(raw)):
        s = max(1.0, np.percentile(np.abs(raw[i]), 99.5))
        expected = np.clip(raw[i], -s, s) / s
        np.testing.assert_allclose(pair.x0[i].numpy(), expected, rtol=1e-6, atol=1e-7)
        if i == 0:
            np.testing.assert_array_equal(pair.x0[i].numpy(), raw[i])   # untouched
        else:
            assert s > 1 and np.abs(pair.x0[i].numpy()).max() == pytest.approx(1.0)
    a, s = path.alpha_sigma(t, xt)
    torch.testing.assert_close(a * pair.x0 + s * pair.eps, xt, rtol=0, atol=1e-14)


class CountingDenoiser:
    """A class-conditional 'denoiser' whose output depends on y, recording each call's batch size."""

    def __init__(self):
        self.batches = []

    def __call__(self, xt, t, *, y):
        self.batches.append(len(xt))
        shift = y.double().reshape(-1, 1, 1) * 0.37 + t.double().reshape(-1, 1, 1)
        return Pair(torch.sin(xt) + shift, torch.cos(xt) * (1 + shift))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_guided_endpoints_are_exact_and_one_batched_call(dtype):
    null = 10
    xt, y = draw(6, 2, 3, seed=11, dtype=dtype), torch.tensor([0, 1, 2, 3, 4, 5])
    t = torch.tensor(0.6, dtype=F64)
    base = CountingDenoiser()
    cond, uncond = base(xt, t.expand(6), y=y), base(xt, t.expand(6), y=torch.full_like(y, null))
    base.batches.clear()
    for w, expected in ((0.0, uncond), (1.0, cond)):
        out = guided(base, w, null)(xt, t, y=y)
        assert torch.equal(out.x0, expected.x0) and torch.equal(out.eps, expected.eps), w
    out = guided(base, 3.0, null)(xt, t, y=y)
    for got, c, u in zip(out, cond, uncond):
        torch.testing.assert_close(got, u + 3.0 * (c - u), rtol=1e-6, atol=1e-6)
    assert base.batches == [12, 12, 12]                # one forward pass per call, conditional and null stacked
