"""Day 22: the FLOP counter against a hand count of each kind of DiT block; the line-up of models and studies;
the verdicts; and the smoke run through the command line."""
import json

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common import flops
from common.checkpoint import load_model
from common.dit import AdaLNZeroBlock, Block, DiT, DiTConfig
from common.samples import load_samples_npz

tables, train = load_day(22, "tables", "train")


@pytest.mark.parametrize("kind", ["adaln-zero", "plain", "cross-attention"])
def test_training_flops_of_a_block_are_the_hand_count(kind, one_thread):
    """Per sample, a block's matrix products on N tokens of width D (MLP ratio 4) cost, forward:
    q, k, v and output projections 8 N D², QKᵀ and AV 2 N² D each, the MLP 16 N D²: 24 N D² + 4 N² D;
    adaLN-Zero adds its regression of c, 2 D · 6D; cross-attention to K tokens adds its query and output
    projections 4 N D², key and value projections 4 K D² and the two products 4 N K D. With the input requiring a
    gradient the backward is exactly twice the forward: every product is differentiated for both operands."""
    b, n, d, k = 2, 9, 16, 2
    h = torch.randn(b, n, d, requires_grad=True)
    c, tokens = torch.randn(b, d, requires_grad=True), torch.randn(b, k, d, requires_grad=True)
    block = {"adaln-zero": AdaLNZeroBlock(d, 2, 4.0), "plain": Block(d, 2, 4.0),
             "cross-attention": Block(d, 2, 4.0, cross=True)}[kind]
    forward = 24 * n * d ** 2 + 4 * n ** 2 * d
    forward += {"adaln-zero": 12 * d ** 2, "plain": 0,
                "cross-attention": 4 * n * d ** 2 + 4 * k * d ** 2 + 4 * n * k * d}[kind]
    assert flops.flops(lambda: block(h, c, tokens)) == b * forward
    assert flops.flops(lambda: block(h, c, tokens).sum().backward()) == 3 * b * forward


def test_training_flops_are_per_image_and_leave_no_gradients(one_thread):
    """The count of a batch of 4 is 4 times that of 1 image, per image the same; no gradient is left behind."""
    model = DiT(DiTConfig(width=16, depth=1, heads=2, num_classes=10))
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    per_image = train.training_flops(model, train.loss_fn, x, y)
    assert per_image == train.training_flops(model, train.loss_fn, x[:1], y[:1]) > 0
    assert all(p.grad is None for p in model.parameters())


def test_the_lineup_varies_one_thing_of_the_reference_per_study():
    nets, studies = train.lineup(train.PRESETS["cpu"])
    ref = "dit-64x4-p4"
    assert list(nets)[0] == "unet" and len(nets) == 8
    assert studies["scaling"] == ["dit-32x2-p4", ref, "dit-112x6-p4"]
    assert studies["patch"] == ["dit-64x4-p2", ref, "dit-64x4-p7"]
    assert studies["conditioning"] == [ref, f"{ref}-in-context", f"{ref}-cross-attention"]
    assert nets[f"{ref}-in-context"].conditioning == "in-context" and nets["dit-64x4-p2"].patch == 2


def test_fid_falls_only_when_it_falls_at_every_step():
    rows = {n: {"gflops_per_image": g, "fid": f} for n, g, f in (("a", 1, 9.0), ("b", 4, 5.0), ("c", 2, 7.0),
                                                                  ("d", 8, 6.0), ("e", 3, None))}
    assert train.falls(rows, ["b", "a", "c"]) is True
    assert train.falls(rows, ["a", "b", "d"]) is False
    assert train.falls(rows, ["a", "e"]) is None


def test_smoke_run(tmp_path):
    result = smoke_run(22, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    names = {"unet", "dit-16x1-p4", "dit-16x1-p7", "dit-16x1-p4-in-context", "dit-16x1-p4-cross-attention"}
    assert set(m["settings"]) == names and m["best_dit"] in names - {"unet"}
    for row in m["settings"].values():
        assert {"model", "params", "gflops_per_image", "train_seconds", "seconds_per_step", "nfe",
                "seconds_per_sample", "fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac",
                "confident_frac_floor", "confident_ratio", "class_accuracy"} <= set(row)
        assert row["nfe"] == 3 and row["gflops_per_image"] > 0
    assert m["settings"]["dit-16x1-p7"]["gflops_per_image"] < m["settings"]["dit-16x1-p4"]["gflops_per_image"]
    assert m["aim"]["matched_dit"] in m["studies"]["scaling"] + m["studies"]["patch"] and m["headline"]
    x, labels = load_samples_npz(tmp_path / "samples.npz")
    assert x.shape == (20, 1, 28, 28) and labels.tolist() == sorted(list(range(10)) * 2)
    for name in ("samples.png", "same_noise.png", "fid_vs_gflops.png"):
        assert (tmp_path / name).is_file(), name
    model, _ = load_model(tmp_path / "dit-16x1-p4-in-context" / "checkpoint.pt", finished=True)
    assert isinstance(model, DiT) and model.cfg.conditioning == "in-context"
    for table in tables.ALL:
        assert table(m).count("\n") >= 1


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day22/results/metrics.json").read_text())
    readme = (ROOT / "day22/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
