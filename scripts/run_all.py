"""Run every day's experiment, one after another, and measure how long the whole course takes.

    python scripts/run_all.py                       # every day's cpu preset into its own results/ (hours)
    python scripts/run_all.py --days 6-10 --out /tmp/runs --preset smoke
    python scripts/run_all.py --plan                # no run: what the committed results say each day took

Days run in order, so a day that loads an earlier day's checkpoint (day 6's DDPM, day 9's class-conditional U-Net,
day 16's flow) finds the one this run just wrote. Each day's wall time, exit status and the time of the run so far
go into the log (--log, JSON) after every day, so a killed run keeps what it measured; the last line printed is the
total. --plan sums the wall times the committed results/metrics.json files record (each one measured by the run
that wrote it), which is what a full run is expected to take on the machine those runs used.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAYS = range(1, 31)


def parse_days(text: str) -> list[int]:
    """'1-5,9,27-30' -> [1, 2, 3, 4, 5, 9, 27, 28, 29, 30]; one line naming the fix for anything else."""
    days: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not (lo.isdigit() and (hi.isdigit() or not hi)):
            raise SystemExit(f"--days {text!r}: write day numbers and ranges, e.g. 1-30 or 6,9,16-20")
        days.update(range(int(lo), int(hi or lo) + 1))
    if not days or not days <= set(DAYS):
        raise SystemExit(f"--days {text!r}: choose days between {DAYS[0]} and {DAYS[-1]}")
    return sorted(days)


def committed_wall_time(day: int) -> float | None:
    path = ROOT / f"day{day:02d}" / "results" / "metrics.json"
    return json.loads(path.read_text()).get("wall_time_s") if path.is_file() else None


def command(day: int, preset: str, out: Path | None) -> list[str]:
    cmd = [sys.executable, f"day{day:02d}/code/train.py", "--preset", preset]
    return cmd + (["--out", str(out / f"day{day:02d}")] if out else [])


def plan(days: list[int]) -> int:
    total, missing = 0.0, []
    for day in days:
        wall = committed_wall_time(day)
        print(f"day {day:2d}: " + (f"{wall / 60:6.1f} min" if wall is not None else "  no committed results"))
        total += wall or 0
        missing += [day] if wall is None else []
    print(f"total of the committed runs: {total / 3600:.2f} h ({total / 60:.0f} min)"
          + (f"; days without results: {', '.join(map(str, missing))}" if missing else ""))
    return 0


def run(days: list[int], preset: str, out: Path | None, log: Path, keep_going: bool) -> int:
    rows, start = [], time.time()
    for day in days:
        print(f"=== day {day}: {' '.join(command(day, preset, out))}", flush=True)
        t0 = time.time()
        rc = subprocess.run(command(day, preset, out), cwd=ROOT).returncode
        rows.append({"day": day, "preset": preset, "wall_s": round(time.time() - t0, 1), "returncode": rc})
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps({"rows": rows, "total_s": round(time.time() - start, 1)}, indent=1) + "\n")
        print(f"=== day {day}: {rows[-1]['wall_s'] / 60:.1f} min, exit {rc}", flush=True)
        if rc != 0 and not keep_going:
            break
    failed = [r["day"] for r in rows if r["returncode"] != 0]
    print(f"total: {(time.time() - start) / 3600:.2f} h for {len(rows)} days"
          + (f"; failed: {', '.join(map(str, failed))}" if failed else "") + f"; log: {log}")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", default="1-30", help="days to run: ranges and lists, e.g. 1-30 or 6,9,16-20")
    parser.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--out", type=Path, help="write day NN into OUT/dayNN (default: each day's own results/)")
    parser.add_argument("--log", type=Path, help="the JSON log of wall times (default: OUT/run_all.json, or "
                        "run_all.json in the repository root)")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining days after one fails")
    parser.add_argument("--plan", action="store_true", help="run nothing; sum the committed runs' wall times")
    args = parser.parse_args(argv)
    days = parse_days(args.days)
    if args.plan:
        return plan(days)
    log = args.log or (args.out or ROOT) / "run_all.json"
    return run(days, args.preset, args.out, log, args.keep_going)


if __name__ == "__main__":
    sys.exit(main())
