"""Print day 14's result tables as Markdown from a metrics.json (default: day14/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day14/code/tables.py [PATH]
"""
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"bicubic": "bicubic", "regression": "regression U-Net (L2)", "sr3": "SR3 (one sample)"}


def methods(m: dict) -> str:
    out = ["| method | PSNR (dB) | SSIM | consistency ‖A x − y‖ | sharpness / real | FID / floor | confident / real "
           "| true class read | spread of samples |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in m["methods"].items():
        out.append(f"| {NAMES[name]} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['consistency']:.4f} | "
                   f"{r['sharpness_ratio']:.2f} | {r['fid_ratio']:.2f} | {r['confident_ratio']:.2f} | "
                   f"{r['class_accuracy']:.1%} | {r.get('spread', 0):.3f} |")
    return "\n".join(out)


def three_db(m: dict) -> str:
    """The squared-error ratio of SR3's samples to the regression's answers, against the ideal 2 (3.01 dB)."""
    sr3, reg = m["methods"]["sr3"], m["methods"]["regression"]
    ratio = sr3["mse"] / reg["mse"]
    return (f"MSE of SR3's samples / MSE of the regression = {sr3['mse']:.4f} / {reg['mse']:.4f} = {ratio:.2f} "
            f"({10 * math.log10(ratio):.2f} dB; a perfect sampler against a perfect regression: 2, 3.01 dB)")


def cascade(m: dict) -> str:
    c = m["cascade"]
    if "levels" not in c:
        return c["source"]
    base = c["base"]
    out = ["| conditioning level s | FID / floor | confident / real | PSNR to the base sample (dB) | consistency "
           "| sharpness / base |",
           "|---|---:|---:|---:|---:|---:|",
           f"| the base samples themselves (28 × 28) | {base['fid_ratio']:.2f} | {base['confident_ratio']:.2f} "
           "| – | – | – |"]
    for s, r in c["levels"].items():
        out.append(f"| {s} | {r['fid_ratio']:.2f} | {r['confident_ratio']:.2f} | {r['psnr']:.2f} | "
                   f"{r['consistency']:.4f} | {r['sharpness_ratio']:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day14" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(methods(metrics), three_db(metrics), cascade(metrics), sep="\n\n")
