"""Day 6 ablation: which choices make a DDPM good on a CPU budget?

Runs day 6's `train.py` once per variant (same steps and batch as the `cpu` preset unless the variant says
otherwise) and collects the evaluator's verdict in OUT/sweep.json and OUT/sweep.md. Run it on a GPU to make
the sweep cheap; the quality of a fixed number of steps does not depend on the device.

    python day06/code/sweep.py --out day06/results/sweep [--device cuda] [--only name1,name2] [--key=value ...]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import train  # day 6's train.py, next to this file

VARIANTS = {
    "v-cosine (cpu preset)": [],
    "eps-linear (Ho et al.)": ["--prediction=eps", "--schedule=linear"],
    "eps-cosine": ["--prediction=eps"],
    "x0-cosine": ["--prediction=x0"],
    "v-linear": ["--schedule=linear"],
    "v-cosine lr=5e-4": ["--lr=5e-4"],
    "v-cosine ema=0.999": ["--ema_decay=0.999"],
    "v-cosine batch 128, half the steps": ["--batch_size=128", f"--steps={train.PRESETS['cpu'].steps // 2}"],
}
KEYS = ["fid", "fid_floor", "confident_frac", "class_entropy", "precision", "recall", "train_seconds"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=train.DAY / "results" / "sweep")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    args, extra = parser.parse_known_args(argv)
    chosen = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    rows = {}
    for name in chosen:
        out = args.out / re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_")
        train.main(["--out", str(out), "--device", args.device, "--sample_every=0", *VARIANTS[name], *extra])
        metrics = json.loads((out / "metrics.json").read_text())
        rows[name] = {"overrides": VARIANTS[name], "device": metrics["device_name"],
                      **{k: metrics[k] for k in KEYS}}
        (out / "checkpoint.pt").unlink(missing_ok=True)
        (out / "samples.npz").unlink(missing_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| variant | FID (floor) | confident > 0.9 | class entropy | precision | recall |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['fid']:.2f} ({r['fid_floor']:.2f}) | {r['confident_frac']:.1%} | "
                     f"{r['class_entropy']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    (args.out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
