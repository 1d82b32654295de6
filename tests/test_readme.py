"""The root README's syllabus table (common/syllabus.py): a learner's run into a day's own results/ keeps the
table check green, rows are refreshed in place with their ticks, and FID is shown as a multiple of the floor."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import HANG_TIMEOUT

from common.syllabus import BEGIN, END, NO_HEADLINE, headline, refresh_row, render, times_floor

ROOT = Path(__file__).resolve().parents[1]


def copy_layout(dst: Path) -> Path:
    """The parts of the repository the table and day 1 need: README.md, the script, day 1's code and every
    day's metrics.json. A run there cannot touch the real day01/results."""
    shutil.copy(ROOT / "README.md", dst / "README.md")
    (dst / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "update_readme.py", dst / "scripts" / "update_readme.py")
    shutil.copytree(ROOT / "day01" / "code", dst / "day01" / "code", ignore=shutil.ignore_patterns("__pycache__"))
    for metrics in ROOT.glob("day*/results/metrics.json"):
        target = dst / metrics.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(metrics, target)
    return dst


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/update_readme.py", "--check"], cwd=root, capture_output=True,
                          text=True, timeout=HANG_TIMEOUT)


def day_row(readme: str, day: int) -> str:
    return next(line for line in readme.splitlines() if line.startswith(f"| {day} | "))


def test_a_run_into_its_days_results_then_the_table_check_passes(tmp_path):
    # the quickstart's order: a day's run with default output (into dayNN/results), then the test suite
    repo = copy_layout(tmp_path)
    real_metrics = (ROOT / "day01" / "results" / "metrics.json").read_bytes()
    subprocess.run([sys.executable, "scripts/update_readme.py"], cwd=repo, check=True, timeout=HANG_TIMEOUT)
    readme = repo / "README.md"
    readme.write_text(readme.read_text().replace(day_row(readme.read_text(), 1),
                                                 day_row(readme.read_text(), 1).replace("[ ] |", "[x] |")))
    before = readme.read_text()
    assert check(repo).returncode == 0, "the copy starts consistent (test_repo checks the real one)"

    subprocess.run([sys.executable, "day01/code/train.py", "--preset", "smoke"], cwd=repo, check=True,
                   capture_output=True, timeout=HANG_TIMEOUT)

    after = readme.read_text()
    assert check(repo).returncode == 0, check(repo).stderr
    assert "(smoke preset)" in day_row(after, 1) and day_row(after, 1).endswith("[x] |")   # refreshed, tick kept
    assert [line for line in after.splitlines() if not line.startswith("| 1 | ")] == \
        [line for line in before.splitlines() if not line.startswith("| 1 | ")]            # nothing else moved
    readme.write_text(before)                         # without the refresh, the run would break the check
    assert check(repo).returncode == 1
    assert (ROOT / "day01" / "results" / "metrics.json").read_bytes() == real_metrics


def test_refresh_row_rewrites_only_a_days_own_results_row(tmp_path):
    table = render(tmp_path, f"# Title\n\n{BEGIN}\n{END}\n\n| 30 | not the table |\n")
    ticked = table.replace(day_row(table, 30), day_row(table, 30).replace("[ ]", "[x]"), 1)
    (tmp_path / "README.md").write_text(ticked)
    results = tmp_path / "day30" / "results"
    results.mkdir(parents=True)
    (results / "metrics.json").write_text(json.dumps(
        {"preset": "cpu", "wall_time_s": 90.0, "fid": 0.3, "fid_floor": 0.06, "n": 500, "confident_frac": 0.8}))

    for elsewhere in (tmp_path / "day30" / "other", tmp_path / "results", tmp_path / "day99" / "results"):
        elsewhere.mkdir(parents=True)
        refresh_row(elsewhere)
        assert (tmp_path / "README.md").read_text() == ticked, elsewhere

    refresh_row(results)
    text = (tmp_path / "README.md").read_text()
    assert day_row(text, 30).endswith("| implemented | 1.5 min | FID 5.0× floor (n=500), 80% confident | [x] |")
    assert text.endswith("| 30 | not the table |\n")          # a look-alike line outside the markers is left alone
    assert text == render(tmp_path, text)                      # the same as regenerating the whole table


def test_fid_is_shown_as_a_multiple_of_the_floor():
    scored = {"fid": 0.2172, "fid_floor": 0.0637, "n": 1000, "confident_frac": 0.739}
    assert times_floor(scored) == "FID 3.4× floor (n=1000), 74% confident"           # 0.2172 / 0.0637 = 3.41
    assert times_floor({**scored, "fid_ratio": 79.9069}).startswith("FID 80× floor")  # the recorded ratio wins
    readme = (ROOT / "README.md").read_text()
    rows = readme.split(BEGIN)[1].split(END)[0]
    assert "FID" in rows and not re.search(r"FID [\d.]+ \(", rows), "raw FIDs in the table cannot be read"


def test_every_committed_day_has_a_headline_and_a_run_without_scores_gets_a_note():
    for path in sorted(ROOT.glob("day*/results/metrics.json")):
        day = int(path.parent.parent.name[3:])
        assert headline(day, json.loads(path.read_text())) != NO_HEADLINE, path
    unscored = {"preset": "cpu", "wall_time_s": 1.0, "scores_skipped": "no evaluator for cifar10"}
    assert headline(6, unscored) == headline(12, unscored) == NO_HEADLINE
