"""Print day 25's result tables as Markdown from a metrics.json (default: day25/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day25/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETS = {"rough": "Rough class edits", "strokes": "Pure strokes"}


def frontier(m: dict, name: str) -> str:
    """One row per method and t0 of one set of inputs."""
    out = [f"**{SETS[name]}** ({m['sets'][name]['n']} inputs)", "",
           "| method | t0 | SSIM to input | RMSE to input | RMSE outside the edited region | target accuracy | "
           "FID / floor | confident / real |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, rows in m["frontier"].items():
        if key.startswith(name + "/"):
            for r in rows:
                out.append(f"| {key.split('/')[1]} | {r['t0']:g} | {r['ssim']:.3f} | {r['rmse']:.3f} | "
                           f"{r['rmse_outside']:.3f} | {r['target_accuracy']:.1%} | {r['fid_ratio']:.2f} | "
                           f"{r['confident_ratio']:.2f} |")
    return "\n".join(out)


def rough(m: dict) -> str:
    return frontier(m, "rough")


def pure_strokes(m: dict) -> str:
    return frontier(m, "strokes")


def reconstruction(m: dict) -> str:
    """DDIM inversion to t = 1 and back under the digit's own label."""
    out = ["| DDIM steps each way | PSNR, dB | RMSE |", "|---:|---:|---:|"]
    out += [f"| {r['steps']} | {r['psnr_db']:.2f} | {r['rmse']:.4f} |" for r in m["reconstruction"]]
    return "\n".join(out)


def chosen(m: dict) -> str:
    aim = m["config"]["aim"]
    out = [f"| method (rough edits) | most realistic t0 with ≥ {aim:.0%} target accuracy | SSIM | RMSE outside | "
           "FID / floor |", "|---|---:|---:|---:|---:|"]
    for method, r in m["chosen"].items():
        out.append(f"| {method} | {r['t0']:g} | {r['ssim']:.3f} | {r['rmse_outside']:.3f} | {r['fid_ratio']:.2f} |"
                   if r else f"| {method} | never | | | |")
    return "\n".join(out)


ALL = (chosen, rough, pure_strokes, reconstruction)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day25" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
