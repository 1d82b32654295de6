"""Day 25: DDIM inversion then regeneration under the same condition reconstructs its input (exact mixture denoiser,
float64: the error is first order in the step and below 3e-3 RMS at 1000 steps); the frontier's end points (t0 = 0
returns the input for every method; SDEdit at t0 = 1 forgets it; inpainting never changes the pixels outside the
region); the rough edits and regions; the interactive editor on a PNG the test writes; the smoke run; the tables."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import HANG_TIMEOUT, ROOT, load_day, smoke_run
from PIL import Image, ImageDraw

from common.denoisers import LabelledMixtureDenoiser
from common.nets import UNet, UNetConfig
from common.paths import DiscreteVP, uniform_grid
from common.predictions import denoiser, guided
from common.samplers import last

F64 = torch.float64
edits, tables, train = load_day(25, "edits", "tables", "train")
PATH = DiscreteVP.named("cosine", 1000)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact():
    """The exact conditional denoiser of a labelled two-class mixture in 16 dimensions (null label 2)."""
    means = torch.randn(6, 16, generator=gen(0), dtype=F64)
    return denoiser(LabelledMixtureDenoiser(means, torch.tensor([0, 0, 0, 1, 1, 1]), 0.3, PATH, null=2), "x0", PATH)


@pytest.fixture(scope="module")
def net():
    """A small untrained class-conditional U-Net (v-prediction), guided: the end points hold for any network."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=8, mults=(1, 2), attn_res=(), image_size=28, num_classes=10)).eval()
    return denoiser(model, "v", PATH)


# --- inversion ---------------------------------------------------------------------------------------------------

def test_inversion_then_regeneration_reconstructs_with_the_exact_denoiser():
    """Invert draws of class 0 to t0 = 1 and decode on the same grid, same label: the error falls with the steps
    (measured 0.40, 0.13, 0.0018 RMS at 10, 100, 1000) and is below 3e-3 RMS at 1000 steps, one per level."""
    means = torch.randn(6, 16, generator=gen(0), dtype=F64)
    d = denoiser(LabelledMixtureDenoiser(means, torch.tensor([0, 0, 0, 1, 1, 1]), 0.3, PATH, null=2), "x0", PATH)
    x = means[torch.randint(3, (64,), generator=gen(1))] + 0.3 * torch.randn(64, 16, generator=gen(2), dtype=F64)
    errors = []
    for k in (10, 100, 1000):
        back = last(edits.round_trip(d, x, uniform_grid(PATH, k), path=PATH, y=torch.zeros(64, dtype=torch.long)))
        errors.append((back - x).pow(2).mean().sqrt().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < errors[0] / 100, errors
    assert errors[2] < 3e-3, errors


def test_inversion_is_the_ddim_ode_run_backwards():
    """One inversion step from the first level up to t0 and one DDIM step down: the code lands at
    alpha x̂0 + sigma ε̂ of the prediction at the start (Eq. 12 of Song et al. with s > t)."""
    d = exact()
    x = torch.randn(8, 16, generator=gen(2), dtype=F64)
    ts = uniform_grid(PATH, 1, 0.5)
    code = edits.invert(d, x, ts, path=PATH, y=torch.ones(8, dtype=torch.long))
    t = torch.tensor(PATH.first_time, dtype=F64)
    pred = d(x, t.expand(8), y=torch.ones(8, dtype=torch.long))
    torch.testing.assert_close(code, PATH.alpha(ts[0]) * pred.x0 + PATH.sigma(ts[0]) * pred.eps)
    assert torch.equal(edits.encoding_grid(ts, PATH), torch.tensor([PATH.first_time, 0.5], dtype=F64))


# --- the frontier's end points ---------------------------------------------------------------------------------

def cond_of(method: str, net, n: int, edit=None) -> dict:
    extra = {"invert": {"encoder": net, "source": torch.zeros(n, dtype=torch.long)},
             "inpaint": {"edit": edit if edit is not None else torch.ones(n, 1, 28, 28, dtype=torch.bool)}}
    return {"y": torch.full((n,), 7), **extra.get(method, {})}


@pytest.mark.parametrize("method", list(edits.METHODS))
def test_t0_zero_returns_the_input_exactly(net, method):
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    out = last(edits.METHODS[method](guided(net, 3.0, 10), x, train.edit_grid(PATH, 0.0, 20), path=PATH,
                                     generator=gen(3), **cond_of(method, net, 3)))
    assert torch.equal(out, x)


def test_sdedit_at_t0_one_forgets_its_input(net):
    """alpha_1 ≈ 5e-5 on the 1000-level cosine schedule: from the same noise, two inputs that differ by ~1 per pixel
    give edits that differ by less than 1e-3: the input is forgotten."""
    a, b = torch.rand(2, 1, 28, 28) * 2 - 1, torch.rand(2, 1, 28, 28) * 2 - 1
    ts = train.edit_grid(PATH, 1.0, 5)
    outs = [last(edits.sdedit_edit(guided(net, 3.0, 10), x, ts, path=PATH, generator=gen(4), y=torch.tensor([7, 1])))
            for x in (a, b)]
    assert (outs[0] - outs[1]).abs().max() < 1e-3 < (a - b).abs().mean()
    assert (outs[0] - a).abs().mean() > 0.1


def test_inpainting_keeps_everything_outside_the_region(net):
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    edit = torch.zeros(4, 1, 28, 28, dtype=torch.bool)
    edit[..., 5:15, 8:20] = True
    out = last(edits.inpaint_edit(guided(net, 3.0, 10), x, train.edit_grid(PATH, 1.0, 5), path=PATH,
                                  generator=gen(5), **cond_of("inpaint", net, 4, edit)))
    assert torch.equal(out[~edit], x[~edit]) and not torch.equal(out[edit], x[edit])


# --- inputs --------------------------------------------------------------------------------------------------

def test_draw_segments_and_regions():
    """A horizontal 3-px segment along row 10: full ink on its axis, none 3 px away; the region dilates it."""
    ink = edits.draw_segments(torch.tensor([[[4.0, 10.5], [20.0, 10.5]]]), torch.tensor([3.0]))
    assert ink.shape == (1, 1, 28, 28) and ink[0, 0, 10, 10] == 1 and ink[0, 0, 13, 10] == -1
    assert ink[0, 0, 10, 0] == -1 and ink[0, 0, 10, 2] == 0       # 1.5 px beyond the end: half ink
    reg = edits.region(ink, 2)
    assert reg[0, 0, 13, 10] and not reg[0, 0, 15, 10] and reg.sum() > (ink > 0).sum()


def test_rough_edits_add_the_stroke_inside_the_digits_box():
    x = torch.full((2, 1, 28, 28), -1.0)
    x[..., 6:22, 13:15] = 1.0                                          # a "1": a vertical bar
    torch.testing.assert_close(edits.bounding_boxes(x), torch.tensor([[13.0, 6, 15, 22]] * 2))
    out, stroke = edits.rough_edit(x, (1, 7), gen(6))
    assert torch.equal(torch.maximum(out, x), out) and (stroke > 0).any()
    rows = (stroke[:, 0] > 0).any(2).nonzero()[:, 1]
    assert rows.min() >= 5 and rows.max() <= 9                      # the 7's bar sits at the top of the box
    assert torch.equal(out, edits.rough_edit(x, (1, 7), gen(6))[0])  # seeded


# --- the command lines ---------------------------------------------------------------------------------------

def test_edit_a_drawing(tmp_path, day9_smoke):
    """Dark ink on a light RGB page of any size: the edit is written beside it, input | output, enlarged."""
    drawing = tmp_path / "my_drawing.png"
    page = Image.new("RGB", (60, 90), "white")
    ImageDraw.Draw(page).line([(10, 10), (50, 10), (25, 80)], fill="black", width=7)
    page.save(drawing)
    cmd = [sys.executable, "day25/code/edit.py", "--input", str(drawing), "--t0", "0.6", "--target", "7",
           "--steps", "5", "--checkpoint", str(day9_smoke / "unet" / "checkpoint.pt")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "inverted" in result.stdout
    out = Image.open(tmp_path / "my_drawing_edit.png")
    assert out.size == (57 * 8, 28 * 8)
    missing = subprocess.run(cmd[:-1] + [str(tmp_path / "none.pt")], cwd=ROOT, capture_output=True, text=True,
                             timeout=HANG_TIMEOUT)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "day09/code/train.py" in missing.stderr


def test_smoke_run(tmp_path, day9_smoke):
    out = tmp_path / "out"
    result = smoke_run(25, out, f"--day9_results={day9_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "checkpoint at" not in result.stdout                      # nothing had to be trained
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["frontier"]) == {f"{s}/{k}" for s in ("rough", "strokes") for k in edits.METHODS}
    for key, rows in m["frontier"].items():
        assert [r["t0"] for r in rows] == [0.0, 0.5, 1.0]
        assert rows[0]["ssim"] == 1 and rows[0]["rmse"] == 0          # t0 = 0 is the input itself
        if key.endswith("inpaint"):
            assert all(r["rmse_outside"] == 0 for r in rows)
    assert [r["steps"] for r in m["reconstruction"]] == [2, 4] and m["headline"]
    for name in ("frontier.png", "edits_rough.png", "edits_strokes.png", "samples.npz"):
        assert (out / name).stat().st_size < 1_000_000, name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day25/results/metrics.json").read_text())
    readme = (ROOT / "day25/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
