"""Day 15: the smoke run through the command line keeps every average in every kept checkpoint, scores them over
training, and rebuilds post-hoc profiles; rebuilding a width that was stored returns that snapshot (the same FID);
the figures are small. The math (EMA closed forms, σ_rel ↔ γ, post-hoc reconstruction) is tested in test_ema.py."""
import json
from pathlib import Path

import pytest
from conftest import load_day, smoke_run

from common.checkpoint import kept_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
train = load_day(15, "train")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("day15")
    result = smoke_run(15, out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out, json.loads((out / "metrics.json").read_text())


def test_every_kept_checkpoint_holds_every_average(smoke):
    out, m = smoke
    cfg = train.PRESETS["smoke"]
    files = kept_checkpoints(out)
    assert [load_checkpoint(f)["step"] for f in files] == m["kept_steps"] == [5, 10, 15, 20]
    for f in files:
        ckpt = load_checkpoint(f)
        assert set(ckpt["averages"]) == set(cfg.averages)
        assert all(n == ckpt["step"] for n in ckpt["average_updates"].values())


def test_smoke_run_scores_over_training_and_after(smoke):
    out, m = smoke
    cfg = train.PRESETS["smoke"]
    fixed = ["raw", train.MAIN, *(a for a in cfg.averages if a.startswith("ema-"))]
    for name in fixed:
        assert set(m["fid"][name]) == {"10", "20"}, name                     # fid_points = 2, the last included
    for name in cfg.averages:
        assert "20" in m["fid"][name]
    assert set(m["posthoc"]) == {f"{s:g}" for s in cfg.posthoc}
    assert m["best_fixed"]["name"] in fixed[1:]
    assert m["aims"]["posthoc_over_best_fixed_fid"] == pytest.approx(m["best_posthoc"]["fid"] / m["best_fixed"]["fid"],
                                                                   abs=1e-3)
    for name in ("fid_over_training.png", "tracks.png", "ramp.png", "posthoc.png", "samples_posthoc_best.png"):
        assert (out / name).stat().st_size < 1_000_000, name


def test_rebuilding_a_stored_width_returns_that_snapshot(smoke):
    """σ_rel = 0.05 at the last step is the power-0.05 snapshot there: coefficient 1 on it, 0 elsewhere."""
    _, m = smoke
    powers = train.rebuilt_from(train.PRESETS["smoke"])                # the snapshots, in the order they are used
    c = m["posthoc"]["0.05"]["coefficients"]
    last = (len(m["kept_steps"]) - 1) * len(powers) + powers.index("power-0.05")
    assert c[last] == pytest.approx(1, abs=1e-4) and sum(abs(v) for v in c) == pytest.approx(1, abs=1e-3)
    assert m["posthoc"]["0.05"]["profile_error"] < 1e-4
    assert m["posthoc"]["0.05"]["fid"] == pytest.approx(m["fid"]["power-0.05"]["20"]["fid"], rel=0.02)


def test_the_checked_width_is_kept_and_rebuilt(smoke):
    """power-0.07 is kept during training, never used to rebuild, and compared with its rebuild."""
    _, m = smoke
    assert "power-0.07" not in train.rebuilt_from(train.PRESETS["smoke"])
    check = m["posthoc_check"]
    assert check["sigma_rel"] == 0.07 and check["fid_kept"] == m["fid"]["power-0.07"]["20"]["fid"]
    assert check["fid_rebuilt"] == m["posthoc"]["0.07"]["fid"] and 0 <= check["relative_distance"] < 0.5


def test_the_lessons_tables_are_the_committed_results():
    """The README's tables are what tables.py prints from results/metrics.json, digit for digit."""
    tables = load_day(15, "tables")
    m = json.loads((ROOT / "day15" / "results" / "metrics.json").read_text())
    readme = (ROOT / "day15" / "README.md").read_text()
    assert tables.over_training(m) in readme and tables.posthoc(m) in readme


def test_figures_redraw_from_the_committed_metrics(tmp_path):
    """figures.py draws every figure from metrics.json alone (how the committed ones can be redrawn)."""
    figures = load_day(15, "figures")
    figures.draw_all(json.loads((ROOT / "day15" / "results" / "metrics.json").read_text()), tmp_path)
    for name in ("fid_over_training.png", "tracks.png", "ramp.png", "posthoc.png"):
        assert 0 < (tmp_path / name).stat().st_size < 1_000_000, name
