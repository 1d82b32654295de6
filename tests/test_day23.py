"""Day 23: the SDS gradient is the gradient of its surrogate loss, i.e. w(t)(ε̂ − ε) carried through ∂x/∂θ (against
an explicit vector–Jacobian product of the generator, ε̂ worked out by hand from a v-prediction network), and nothing
reaches the U-Net; the volume renderer against the closed form of a uniform-density cube; the measures; the smoke
run through the command line (with day 9's smoke checkpoint); and the README's tables."""

import json
import math

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common.nets import UNet, UNetConfig
from common.paths import DiscreteVP
from common.predictions import denoiser, guided

render, sds, tables, train = load_day(23, "render", "sds", "tables", "train")
PATH = DiscreteVP.named("cosine", 1000)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def unet(one_thread):
    torch.manual_seed(0)
    return UNet(UNetConfig(channels=8, n_res=1, attn_res=(), num_classes=10)).eval()


@pytest.mark.parametrize("weighting", ["uniform", "sigma2"])
def test_sds_direction_is_the_weighted_noise_residual(unet, weighting):
    """ε̂ from the network's v by hand (VP: ε̂ = σ x_t + α v), guided by hand: ε_∅ + w (ε_c − ε_∅)."""
    x = torch.tanh(torch.randn(4, 1, 28, 28, generator=gen(1)))
    t, eps, y, w = PATH.on_grid(torch.tensor([20.0, 300.0, 700.0, 980.0])), torch.randn(x.shape, generator=gen(2)), \
        torch.tensor([0, 3, 3, 9]), 7.0
    got = sds.sds_direction(guided(denoiser(unet, "v", PATH), w, 10), x, t, eps, PATH, weighting, y=y)
    alpha, sigma = (f(t).float()[:, None, None, None] for f in (PATH.alpha, PATH.sigma))
    xt = alpha * x + sigma * eps
    with torch.no_grad():
        eps_c, eps_u = (sigma * xt + alpha * unet(xt, t, y=label) for label in (y, torch.full_like(y, 10)))
    weight = sigma ** 2 if weighting == "sigma2" else 1.0
    torch.testing.assert_close(got, weight * (eps_u + w * (eps_c - eps_u) - eps), rtol=1e-4, atol=1e-4)


def test_surrogate_gradient_is_the_sds_direction_through_the_generator(unet):
    """θ → x = tanh(θ) and θ → views of a voxel scene: backward() of the surrogate gives the explicit vector–Jacobian
    product direction · ∂x/∂θ (closed form for tanh, torch.autograd.functional.vjp for the renderer); no gradient
    reaches the U-Net's parameters."""
    unet.requires_grad_(True)
    denoise = guided(denoiser(unet, "v", PATH), 3.0, 10)
    theta = torch.randn(2, 1, 28, 28, generator=gen(3), requires_grad=True)
    x = torch.tanh(theta)
    t, eps, y = sds.sds_times(PATH, 2, 0.02, 0.98, gen(4)), torch.randn(x.shape, generator=gen(5)), torch.tensor([1, 3])
    direction = sds.sds_direction(denoise, x.detach(), t, eps, PATH, "sigma2", y=y)
    sds.surrogate(x, direction).backward()
    torch.testing.assert_close(theta.grad, direction * (1 - torch.tanh(theta) ** 2), rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in unet.parameters())

    scene = render.VoxelScene(6, 10.0, gen(6))
    azimuth = torch.tensor([0.3, 2.0])
    views = scene(azimuth, 8)                                                    # (2, 1, 28, 28)
    direction = sds.sds_direction(denoise, views.detach(), t, eps, PATH, "uniform", y=y)
    sds.surrogate(views, direction).backward()
    params = (scene.density, scene.intensity)
    _, vjp = torch.autograd.functional.vjp(
        lambda d, i: render.render(10.0 * torch.nn.functional.softplus(d) * scene.inside, torch.tanh(i), azimuth,
                                   samples=8), tuple(p.detach() for p in params), direction)
    for p, expected in zip(params, vjp):
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)
    assert direction.abs().sum() > 0 and all(p.grad is None for p in unet.parameters())
    unet.requires_grad_(False)


def test_sds_times_are_levels_in_range():
    t = sds.sds_times(PATH, 1000, 0.02, 0.98, gen(0))
    assert t.min() >= 0.02 and t.max() <= 0.98
    torch.testing.assert_close(t * 1000, (t * 1000).round())


@pytest.mark.parametrize("azimuth", [0.0, math.pi / 2, math.pi])
def test_uniform_cube_renders_its_closed_form(azimuth):
    """A grid of uniform density σ and intensity c fills the cube [−1, 1]³. Seen along an axis, a ray through it has
    length L = 2: transmittance exp(−σL) and value c (1 − e^{−σL}) + bg · e^{−σL}; a ray that misses it (the view
    is 1.5× wider than the cube) keeps transmittance 1 and shows the background."""
    d, sigma, c, bg, extent, size = 11, 0.7, 0.4, -1.0, 1.5, 30
    img = render.render(torch.full((d, d, d), sigma, dtype=torch.float64), torch.full((d, d, d), c,
                        dtype=torch.float64), torch.tensor([azimuth]), size=size, samples=20, extent=extent,
                        background=bg)[0, 0]
    u = extent * ((torch.arange(size) + 0.5) / size * 2 - 1)
    far = u.abs()[:, None].maximum(u.abs()[None, :])                              # (H, W): max(|u|, |v|)
    through, inside = math.exp(-sigma * 2), far <= 1
    missed = far >= 1 + 2 / (d - 1)                                              # beyond the trilinear edge
    torch.testing.assert_close(img[inside], torch.full_like(img[inside], c * (1 - through) + bg * through))
    torch.testing.assert_close(img[missed], torch.full_like(img[missed], bg))
    assert inside.sum() > 100 and missed.sum() > 100
    sigma_grid, colour = torch.full((d, d, d), sigma), torch.full((d, d, d), 1.0)   # white emission on a black bg:
    dark = render.render(sigma_grid, colour, torch.tensor([azimuth]), size=size, samples=20, extent=extent,
                         background=0.0)[0, 0]                                    # the value is 1 − T
    torch.testing.assert_close(1 - dark[inside], torch.full_like(dark[inside], through))


def test_a_quarter_turn_moves_the_scene():
    """A density slab in x > 0 seen at φ = 0 lies right of centre; at φ = 90° it is in front of the rays (depth)
    and covers the whole view; at φ = 180° it lies left."""
    d = 21
    sigma = torch.zeros(d, d, d)
    sigma[:, :, d // 2 + 2:] = 5.0                                               # [z, y, x]: x > 0
    views = render.render(sigma, torch.ones(d, d, d), torch.tensor([0.0, math.pi / 2, math.pi]), background=-1.0)
    right, left = views[..., 20:].mean((1, 2, 3)), views[..., :8].mean((1, 2, 3))
    assert right[0] > 0.5 > -0.5 > left[0] and left[2] > 0.5 > -0.5 > right[2]
    assert views[1].min() > 0.5


def test_measures():
    x = torch.tensor([[-1.0, 0.97], [0.0, 0.5], [1.0, -0.2], [0.3, 0.3]])[:, None, None]       # (4, 1, 1, 2)
    assert train.saturation(x) == 3 / 8
    labels = torch.tensor([0, 0, 1, 1])
    d0, d1 = math.dist((-1.0, 0.97), (0.0, 0.5)), math.dist((1.0, -0.2), (0.3, 0.3))
    assert train.diversity(x, labels) == pytest.approx((d0 + d1) / 2, rel=1e-6)


class LeftOrRight:
    """A stand-in evaluator: '3' (p = 0.9) when the left half of an image is brighter than the right, else '5'."""

    def probs(self, x):
        left = x[..., :14].mean((1, 2, 3)) > x[..., 14:].mean((1, 2, 3))
        return torch.where(left[:, None], torch.eye(10)[3] * 0.8 + 0.02, torch.eye(10)[5] * 0.8 + 0.02)


def test_read_views_finds_a_mirrored_back():
    """Views whose φ + 180° partner is their mirror image: that RMSE is 0, the unmirrored one is not; a view read as
    the target has a mirror that is not, so the two shares add up to 1."""
    front = torch.rand(4, 1, 28, 28, generator=gen(0)) * 2 - 1
    views = torch.cat([front, front.flip(-1)])                                   # views[i + 4] = mirrored views[i]
    r = train.read_views(views, 3, LeftOrRight())
    assert r["rmse_back_vs_mirrored"] == 0 and r["rmse_back_vs_front"] > 0.1
    assert r["target_share"] == 0.5 and r["mirrored_target_share"] == 0.5
    assert r["label"][:4] == [5 if lab == 3 else 3 for lab in r["label"][4:]]
    assert r["mean_confidence"] == pytest.approx(0.82, abs=1e-4)


def test_smoke_run(tmp_path, day9_smoke):
    result = smoke_run(23, tmp_path, f"--day9_results={day9_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["sds"]) == {"w=1", "w=10"} and set(m["ancestral"]) == {"w=1"}
    assert len(m["scene"]["label"]) == len(m["scene"]["azimuth_deg"]) == 8 and m["headline"]
    for name in ("samples.npz", "sds_grid_by_w.png", "sds_vs_w.png", "scene_turntable.gif", "scene_front_back.png",
                 "scene_views.png"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day23/results/metrics.json").read_text())
    readme = (ROOT / "day23/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
