"""Print day 23's result tables as Markdown from a metrics.json (default: day23/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day23/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pixels(m: dict) -> str:
    """Ancestral samples and pixel SDS, one row per setting: what the evaluator reads, saturation, diversity."""
    out = ["| method | w | class accuracy | label probability | confident / real | saturation / real | "
           "diversity / real | FID / floor (95% interval of the FID) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rows in (("ancestral", m["ancestral"]), ("SDS", m["sds"])):
        for r in rows.values():
            lo, hi = r["fid_ci95"]
            out.append(f"| {name} | {r['w']:g} | {r['class_accuracy']:.1%} | {r['label_prob']:.3f} | "
                       f"{r['confident_ratio']:.2f} | {r['saturation_ratio']:.2f} | {r['diversity_ratio']:.2f} | "
                       f"{r['fid_ratio']:.1f} ({lo:.1f}–{hi:.1f}) |")
    real, n = m["real"], next(iter(m["sds"].values()))["n"]
    out.append(f"\n{n} images per setting. Real test digits: saturation {real['saturation']:.3f} (share of "
               f"|x| > 0.95), diversity {real['diversity']:.2f} (mean pairwise L2 within a class).")
    return "\n".join(out)


def scene(m: dict) -> str:
    """The scene's views: how many read as the target, how confidently, and the Janus test."""
    s = m["scene"]
    return "\n".join([
        "| target | w | views | read as the target | mean confidence | mean p(target) | mirrored views read as "
        "the target | RMSE: back vs mirrored front | back vs front | view vs 90° later |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['class']} | {s['w']:g} | {len(s['label'])} | {s['target_share']:.0%} | {s['mean_confidence']:.2f} | "
        f"{s['mean_p_target']:.2f} | {s['mirrored_target_share']:.0%} | {s['rmse_back_vs_mirrored']:.3f} | "
        f"{s['rmse_back_vs_front']:.3f} | {s['rmse_quarter_turn']:.3f} |"])


def costs(m: dict) -> str:
    sds, scene_row = m["sds"], m["scene"]
    per = [r["seconds_per_image"] for r in sds.values()]
    steps = next(iter(sds.values()))["steps"]
    return (f"Pixel SDS: {steps} steps, {min(per):.2f}–{max(per):.2f} s per image; the scene: {scene_row['steps']} "
            f"steps in {scene_row['seconds']:.0f} s; the whole run {m['wall_time_s'] / 60:.1f} min.")


ALL = (pixels, scene, costs)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day23" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
