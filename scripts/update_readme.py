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

from common.syllabus import render, rewrite_or_check

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args(argv)
    return rewrite_or_check(ROOT / "README.md", lambda old: render(ROOT, old), args.check, "syllabus table",
                            "scripts/update_readme.py")


if __name__ == "__main__":
    sys.exit(main())
