"""Print day 15's result tables as Markdown from a metrics.json (default: day15/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day15/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ratio(score: dict) -> str:
    r = score["fid_ratio"]
    return f"{r:.1f}" if r >= 10 else f"{r:.2f}"


def over_training(m: dict) -> str:
    steps = [str(k) for k in m["kept_steps"] if any(str(k) in by_step for by_step in m["fid"].values())]
    out = ["| average | " + " | ".join(f"step {k}" for k in steps) + " |", "|---|" + "---:|" * len(steps)]
    for name, by_step in m["fid"].items():
        out.append(f"| {name} | " + " | ".join(ratio(by_step[k]) if k in by_step else "—" for k in steps) + " |")
    return "\n".join(out)


def posthoc(m: dict) -> str:
    out = ["| σ_rel | profile error | FID / floor (95% interval) | confident / real |", "|---:|---:|---|---:|"]
    for key, r in m["posthoc"].items():
        scale = r["fid_ratio"] / r["fid"]
        lo, hi = (v * scale for v in r["fid_ci95"])
        out.append(f"| {key} | {r['profile_error']:.3f} | {ratio(r)} ({lo:.2f}–{hi:.2f}) "
                   f"| {r['confident_ratio']:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day15" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(over_training(metrics), posthoc(metrics), sep="\n\n")
