"""Day 26: a fresh ControlNet leaves the base's output bit for bit (zero convolutions), the zero convs alone get a
gradient at step 0 and the copy from step 1 on, training never changes the base's weights; the Sobel operator,
non-maximum suppression, the masks and both fidelities against closed forms; the smoke run through the command
line (with day 6's smoke checkpoint); the README's tables are the committed metrics."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common.diffusion import diffusion_loss
from common.nets import UNet, UNetConfig
from common.paths import DiscreteVP
from common.run import Run

controlnet, controls, tables, train = load_day(26, "controlnet", "controls", "tables", "train")
PATH = DiscreteVP.named("cosine", 1000)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def base_unet() -> UNet:
    """A small frozen U-Net of day 6's shape whose every layer counts (fresh blocks are identities)."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=8, mults=(1, 2), n_res=1, attn_res=(14,)))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval().requires_grad_(False)


def batch(n: int = 4):
    x0 = torch.rand(n, 1, 28, 28, generator=gen(1)) * 2 - 1
    return x0, controls.edges(x0), torch.rand(n, generator=gen(2))


# --- zero convolutions ---------------------------------------------------------------------------------------

def test_a_fresh_controlnet_leaves_the_base_bit_identical(one_thread):
    """Every zero conv outputs exactly 0, so the controlled base, with one ControlNet or two, at any scale,
    computes exactly the base's output; the copy starts as the base's encoder."""
    base = base_unet()
    torch.manual_seed(1)
    nets = {"edges": controlnet.ControlNet.from_base(base), "masks": controlnet.ControlNet.from_base(base)}
    x, c, t = batch()
    for name in ("embed", "stem", "down", "mid"):
        mine, theirs = getattr(nets["edges"], name).state_dict(), getattr(base, name).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name
    with torch.no_grad():
        plain = base(x, t)
        assert torch.equal(controlled_out := controlnet.controlled(base, nets, 1.0)(x, t, edges=c, masks=c), plain)
        assert torch.equal(controlnet.controlled(base, {"edges": nets["edges"]}, 2.0)(x, t, edges=c), plain)
        assert all(torch.equal(r, torch.zeros_like(r)) for r in nets["edges"](x, t, c))
    assert controlled_out.shape == x.shape


def gradients(net, base, x0, c) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=False)
    model = controlnet.controlled(base, {"control": net})
    diffusion_loss(model, x0, PATH, "v", gen(3), control=c)[0].mean().backward()
    return {name: p.grad.clone() for name, p in net.named_parameters()}


def test_zero_convs_alone_get_a_gradient_at_step_0_and_the_rest_a_step_later_per_zero_conv(one_thread):
    """dL/dW = (dL/dy) hᵀ ≠ 0 for a zero conv with input h ≠ 0, but everything behind a zero conv gets
    Wᵀ dL/dy = 0; after one step (W ≠ 0) the gradient reaches the copy, after two the condition encoder's first
    layers (they sit behind its own zero conv too)."""
    base = base_unet()
    torch.manual_seed(1)
    net = controlnet.ControlNet.from_base(base)
    x0, c, _ = batch()
    grads = gradients(net, base, x0, c)
    for i in range(len(net.zero)):
        assert grads[f"zero.{i}.weight"].abs().sum() > 0 and grads[f"zero.{i}.bias"].abs().sum() > 0, i
    behind = {k: g for k, g in grads.items() if not k.startswith("zero.")}
    assert behind and all(torch.equal(g, torch.zeros_like(g)) for g in behind.values())
    reached = []
    for _ in range(2):                                                 # plain gradient steps
        with torch.no_grad():
            for name, p in net.named_parameters():
                p -= 0.1 * grads[name]
        grads = gradients(net, base, x0, c)
        reached.append({k for k, g in grads.items() if g.abs().sum() > 0})
    # step 1: the copy and the condition encoder's zero conv; its first convs sit behind two zero convs: step 2
    assert {"stem.weight", "hint.5.weight"} <= reached[0] and "hint.0.weight" not in reached[0]
    assert set(grads) == reached[1]
    assert base.stem.weight.grad is None                             # the frozen base collects nothing


def test_training_never_changes_the_base_weights(tmp_path, one_thread):
    """A few optimiser steps through common.loop.fit: the ControlNet moves, the base's state_dict stays equal."""
    base = base_unet()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    x0 = torch.rand(16, 1, 28, 28, generator=gen(4)) * 2 - 1
    cfg = train.Config(steps=3, batch_size=8, warmup=1, lr=1e-2, log_every=1, sample_every=0, ckpt_every=3,
                       hint_width=8, bf16=False)
    run = Run(tmp_path, torch.device("cpu"), "smoke", "toy", commit="test")
    net, cost = train.train("edges", base, PATH, "v", x0, controls.edges(x0), cfg, run)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    assert any(z.weight.abs().sum() > 0 for z in net.zero)
    assert cost["trainable_params"] == sum(p.numel() for p in net.parameters())
    assert (tmp_path / "edges" / "checkpoint.pt").is_file()


# --- the controls and the fidelities ---------------------------------------------------------------------

def step_image(a: float, b: float, k: int, size: int = 12) -> torch.Tensor:
    """(1, 1, size, size): value a in columns < k, b from column k on: a vertical step edge."""
    x = torch.full((1, 1, size, size), a, dtype=torch.float64)
    x[..., k:] = b
    return x


def test_sobel_on_a_ramp_is_its_slope_and_on_a_step_half_the_jump():
    """Closed forms of the (1/8-normalised) Sobel operator: x = m·column gives gx = m away from the borders (m/2 at
    them, replicated), gy = 0; a step from a to b between columns k−1 and k gives gx = (b − a)/2 at exactly those two
    columns, 0 elsewhere; the transposed image gives the transposed gradient."""
    m = 0.3
    ramp = m * torch.arange(10, dtype=torch.float64).expand(1, 1, 10, 10)
    gx, gy = controls.sobel(ramp)
    torch.testing.assert_close(gx[..., 1:-1], torch.full_like(gx[..., 1:-1], m))
    torch.testing.assert_close(gx[..., [0, -1]], torch.full_like(gx[..., [0, -1]], m / 2))
    torch.testing.assert_close(gy, torch.zeros_like(gy), rtol=0, atol=1e-15)   # equal rows cancel, up to rounding
    step = step_image(-1.0, 1.0, 5)
    gx, gy = controls.sobel(step)
    expected = torch.zeros_like(gx)
    expected[..., [4, 5]] = 1.0                                             # (b − a) / 2 with a = −1, b = 1
    assert torch.equal(gx, expected) and torch.equal(gy, torch.zeros_like(gy))
    gx_t, gy_t = controls.sobel(step.transpose(-1, -2))
    assert torch.equal(gy_t, expected.transpose(-1, -2)) and torch.equal(gx_t, torch.zeros_like(gx_t))


def test_non_maximum_suppression_thins_a_step_to_one_column_in_any_orientation():
    """The step's two equal responses become one edge column (the one before the jump), a horizontal step one row;
    without suppression both columns are edges; a step of 0.5 (response 0.25) is below a threshold of 0.3."""
    step = step_image(-1.0, 1.0, 5)
    e = controls.edges(step, threshold=0.3)
    assert torch.equal(e[0, 0], torch.zeros(12, 12).index_fill_(1, torch.tensor([4]), 1.0))
    assert torch.equal(controls.edges(step, threshold=0.3, nms=False)[0, 0].sum(0), torch.tensor(
        [0.0] * 4 + [12.0] * 2 + [0.0] * 6))
    assert torch.equal(controls.edges(step.transpose(-1, -2), threshold=0.3), e.transpose(-1, -2))
    assert controls.edges(step_image(0.0, 0.5, 5), threshold=0.3).sum() == 0


def test_masks_are_the_cells_with_enough_ink():
    """A digit that fills cell (1, 2) of the 7 × 7 grid and a quarter of cell (4, 4) (below the threshold 0.25 is
    not enough: > is) gives exactly the 4 × 4 block of cell (1, 2)."""
    x = -torch.ones(1, 1, 28, 28)
    x[..., 4:8, 8:12] = 1.0                                                # all of cell (1, 2)
    x[..., 16:18, 16:18] = 1.0                                             # 4 of cell (4, 4)'s 16 pixels
    expected = torch.zeros(1, 1, 28, 28)
    expected[..., 4:8, 8:12] = 1.0
    assert torch.equal(controls.masks(x, side=7, threshold=0.25), expected)
    assert controls.masks(x, side=7, threshold=0.2).sum() == 32


def line(col: int, rows=slice(2, 12), size: int = 20) -> torch.Tensor:
    e = torch.zeros(1, 1, size, size)
    e[..., rows, col] = 1.0
    return e


def test_edge_f1_tolerates_one_pixel_and_is_the_closed_form():
    """A line against itself or shifted by one pixel: F1 = 1; by two pixels: 0. The line plus an equal line far
    away against the line alone: precision 1/2, recall 1, F1 = 2/3. An empty map scores 0."""
    ref = line(8)
    assert controls.edge_f1(ref, ref).item() == 1.0
    assert controls.edge_f1(line(9), ref).item() == 1.0
    assert controls.edge_f1(line(10), ref).item() == 0.0
    torch.testing.assert_close(controls.edge_f1(ref + line(16), ref), torch.tensor([2 / 3]))
    assert controls.edge_f1(torch.zeros_like(ref), ref).item() == 0.0
    pair = torch.cat([ref, line(10)])                                       # per image, in one batch
    assert controls.edge_f1(pair, torch.cat([ref, ref])).tolist() == [1.0, 0.0]


def test_mask_iou_of_two_rectangles():
    """Overlapping 4 × 8 and 8 × 4 rectangles sharing a 4 × 4 square: 16 / (32 + 32 − 16) = 1/3."""
    a, b = torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 28, 28)
    a[..., 0:4, 0:8] = 1.0
    b[..., 0:8, 4:8] = 1.0
    torch.testing.assert_close(controls.mask_iou(a, b), torch.tensor([1 / 3]))
    assert controls.mask_iou(a, a).item() == 1.0


def test_settings_cover_the_base_every_scale_and_both_controls():
    cfg = train.Config(scales=(0.5, 1.0))
    s = train.settings(cfg)
    assert s["base (s = 0)"] == ((), 0.0) and s["edges, s = 0.5"] == (("edges",), 0.5)
    assert s["edges + masks, s = 1"] == (("edges", "masks"), 1.0) and len(s) == 6


# --- the run ---------------------------------------------------------------------------------------------

def test_smoke_run(tmp_path, day6_smoke):
    result = smoke_run(26, tmp_path, f"--day6_results={day6_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["base_unchanged"] is True
    assert set(m["settings"]) == {"base (s = 0)", "edges, s = 1", "edges, s = 2", "masks, s = 1", "masks, s = 2",
                                  "edges + masks, s = 1"}
    assert all(0 <= r["edge_f1"] <= 1 and 0 <= r["mask_iou"] <= 1 for r in m["settings"].values())
    for name in ("samples.npz", "samples.png", "scale_sweep.png", "control_grid_edges.png", "control_grid_masks.png",
                 "control_grid_edges_masks.png", "edges/checkpoint.pt", "masks/checkpoint.pt"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day26/results/metrics.json").read_text())
    readme = (ROOT / "day26/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__


@pytest.mark.parametrize("bad", ["--scales=0.5,2", "--mask_side=5", "--edge_threshold=0"])
def test_bad_settings_are_one_line_errors(bad, tmp_path):
    result = smoke_run(26, Path(tmp_path), bad)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-1000:]
