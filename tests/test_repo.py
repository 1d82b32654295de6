"""Repository-level promises: the curriculum map exists and the README table follows the results."""
import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import HANG_TIMEOUT

ROOT = Path(__file__).resolve().parents[1]


def test_all_thirty_days_have_a_lesson_and_planned_days_have_no_code():
    for day in range(1, 31):
        folder = ROOT / f"day{day:02d}"
        text = (folder / "README.md").read_text()
        assert text.startswith(f"# Day {day:02d}"), folder
        for heading in ("## Objectives", "## The math", "## Tasks"):
            assert heading in text, (folder, heading)
        implemented = (folder / "results" / "metrics.json").is_file()
        assert implemented == (folder / "code" / "train.py").is_file(), folder
        assert ("Status: planned" in text) != implemented, folder


def test_markdown_holds_no_control_characters():
    r"""A backslash lost to a string escape (\f, \a, \b, \r, \t in "\frac", "\alpha", "\big", "\rho", "\tfrac") leaves
    a control character where the LaTeX command was; Markdown files hold none but the newline."""
    for path in sorted({*ROOT.glob("*.md"), *ROOT.glob("day*/**/*.md"), *ROOT.glob("docs/**/*.md")}):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            bad = re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line)
            assert bad is None, f"{path.relative_to(ROOT)}:{number}: control character {bad.group()!r}"


def test_readme_table_is_generated_from_the_results():
    out = subprocess.run([sys.executable, "scripts/update_readme.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert out.returncode == 0, out.stderr


def test_committed_metrics_record_how_they_were_made():
    for path in sorted(ROOT.glob("day*/results/metrics.json")):
        m = json.loads(path.read_text())
        for key in ("preset", "device", "dataset", "wall_time_s", "commit", "config"):
            assert key in m, (path, key)
        assert m["preset"] == "cpu", path


def test_quickstart_is_two_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quickstart")[1].split("## ")[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quick)
    assert commands == ["pip install -e . && python day06/code/train.py",
                        'pip install -e ".[dev]" && python -m pytest tests -q']
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in ci and "python -m pytest tests -q" in ci
