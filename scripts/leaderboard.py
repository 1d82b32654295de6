"""Rewrite README.md's leaderboard and docs/leaderboard.png from each day's results/metrics.json (the table and the
day adapters: common/leaderboard.py).

    python scripts/leaderboard.py          # rewrite README.md's leaderboard and draw docs/leaderboard.png
    python scripts/leaderboard.py --check  # exit 1 if README.md's leaderboard is out of date (the tests run this)

A run into its day's own results/ refreshes the table by itself (common.leaderboard.refresh_leaderboard), but not
the figure: run this script to redraw it.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

from common.leaderboard import RANKED_N, Entry, entries, ranked, render
from common.plotting import DPI, plt  # pyplot as common.plotting loads it: after choosing the file-only backend
from common.syllabus import rewrite_or_check

ROOT = Path(__file__).resolve().parents[1]
FIGURE = Path("docs") / "leaderboard.png"
MARKERS = "osD^vP*Xph"  # the methods of one day: one colour, a marker each


def series(found: list[Entry]) -> dict[tuple[int, str], list[Entry]]:
    """The settings of each (day, method), in NFE order, days in order."""
    groups: dict[tuple[int, str], list[Entry]] = {}
    for e in sorted(found, key=lambda e: (e.day, e.nfe)):
        groups.setdefault((e.day, e.method), []).append(e)
    return groups


def plot(found: list[Entry], path: Path) -> None:
    """FID / floor against network calls (left) and against milliseconds per sample (right), log-log: every
    setting, one colour per day and one marker per method, the settings of a method joined in NFE order."""
    groups = series(found)
    days = sorted({day for day, _ in groups})
    colours = plt.get_cmap("tab10" if len(days) <= 10 else "tab20")
    fig, (by_nfe, by_time) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for (day, method), settings in groups.items():
        nth = [m for d, m in groups if d == day].index(method)  # this method's place among its day's
        style = {"color": colours(days.index(day)), "marker": MARKERS[nth % len(MARKERS)], "ms": 5, "lw": 1}
        by_nfe.plot([e.nfe for e in settings], [e.fid_ratio for e in settings], label=f"day {day}: {method}", **style)
        timed = [e for e in settings if e.seconds is not None]
        by_time.plot([1000 * e.seconds for e in timed], [e.fid_ratio for e in timed], **style)
    for ax, xlabel in ((by_nfe, "network calls per sample (NFE)"), (by_time, "ms per sample")):
        ax.axhline(1, color="grey", ls=":", lw=1)  # the floor: as close to the data as real images
        ax.set(xscale="log", yscale="log", xlabel=xlabel)
        ax.grid(alpha=0.3, which="both")
    by_nfe.set(ylabel="FID / floor (1 = real data)")
    fig.suptitle(f"every image generator's settings scored on n = {RANKED_N} samples")
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=3, fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)  # a palette PNG: a third of the bytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md's leaderboard is up to date")
    args = parser.parse_args(argv)
    status = rewrite_or_check(ROOT / "README.md", lambda old: render(ROOT, old), args.check, "leaderboard",
                              "scripts/leaderboard.py")
    if not args.check:
        plot(ranked(entries(ROOT)), ROOT / FIGURE)
    return status


if __name__ == "__main__":
    sys.exit(main())
