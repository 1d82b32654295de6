"""Rewrite the syllabus table in README.md from each day's results/metrics.json (the table itself: common/syllabus.py).

    python scripts/update_readme.py          # rewrite README.md's table in place, keeping ticked boxes
    python scripts/update_readme.py --check  # exit 1 if README.md's table is out of date (the tests run this)

A run into its day's own results/ refreshes that day's row by itself (common.syllabus.refresh_row), so this script
is needed only after results change by other means: a hand edit, a checkout, a copied folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.syllabus import render

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    old = path.read_text()
    new = render(ROOT, old)
    if args.check:
        if new != old:
            print("README.md's syllabus table is out of date: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
