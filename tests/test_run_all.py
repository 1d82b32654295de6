"""scripts/run_all.py: the day list it parses, the plan it sums from the committed metrics, and a real run of one
quick day's smoke preset whose log records the wall time and the exit status."""
import json
import subprocess
import sys

import pytest
from conftest import HANG_TIMEOUT, ROOT, load_script

run_all = load_script(ROOT / "scripts" / "run_all.py")


def test_days_parse_ranges_and_lists_and_refuse_the_rest():
    assert run_all.parse_days("1-3,9,28-30") == [1, 2, 3, 9, 28, 29, 30]
    assert run_all.parse_days("6") == [6]
    for bad in ("x", "0-2", "29-31", "3-2", ""):
        with pytest.raises(SystemExit):
            run_all.parse_days(bad)


def test_the_plan_sums_the_committed_wall_times(capsys):
    assert run_all.main(["--plan", "--days", "1,4"]) == 0
    walls = [json.loads((ROOT / f"day{d:02d}" / "results" / "metrics.json").read_text())["wall_time_s"] for d in (1, 4)]
    assert f"({sum(walls) / 60:.0f} min)" in capsys.readouterr().out.splitlines()[-1]


def test_a_run_writes_each_day_and_logs_its_time(tmp_path):
    result = subprocess.run([sys.executable, "scripts/run_all.py", "--days", "4", "--preset", "smoke", "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = json.loads((tmp_path / "run_all.json").read_text())
    assert [(r["day"], r["preset"], r["returncode"]) for r in log["rows"]] == [(4, "smoke", 0)]
    assert 0 < log["rows"][0]["wall_s"] <= log["total_s"]
    assert json.loads((tmp_path / "day04" / "metrics.json").read_text())["preset"] == "smoke"
    assert "total: " in result.stdout
