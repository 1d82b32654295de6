"""Day 6 ablation: which recipe gives the best digits for a 15-minute CPU budget?

Each variant is the starting recipe (BASE: the cpu preset before this ablation, a 32-channel U-Net with two
ResBlocks per level, 1200 steps of batch 128) with one thing changed, trained and scored by `train.py` itself
(a subprocess per variant, so every number comes from the same code path as the committed results). Variants
that change the cost of a step (model shape, batch) get their step count scaled by the training speed
measured on the 2-core CPU (`bench/day06_shapes.py`), so every row costs the same CPU time; the others see
the same images. The winner, `n_res_1_c16`, is now the cpu preset (with 3900 steps).

A variant takes ~15 minutes on two CPU cores, so the whole table is a GPU job (many variants share one card):
    python day06/code/ablation.py --device cuda --jobs 14 --out /tmp/ablation
It writes OUT/<variant>/ (train.py's outputs), OUT/ablation.json, OUT/ablation.md (the README's table) and
OUT/ablation.png (ten samples of each variant); `--collect` rebuilds the table from the runs already in OUT
(e.g. after a time limit cut some short).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.config import UserError, cli
from common.plotting import panel
from common.samples import load_samples_npz

CODE = Path(__file__).resolve().parent

# the starting recipe, as overrides of the cpu preset (which is now the winner below); BASE_STEPS at batch 128
BASE = ["--unet.channels=32", "--unet.n_res=2", "--sample_every=300", "--ckpt_every=100", "--keep_every=400"]
BASE_STEPS = 1200

# name: (overrides of BASE, step multiplier, what it tests).
# Step multiplier = CPU img/s of the variant / img/s of BASE (x2 for batch 64). The first round used a first
# measurement (batch 64: 0.91, n_res=1: 1.49, channels=24: 1.37); two later runs of
# bench/day06_shapes.py measured 1.00 / 1.52 / 1.37 and 0.95 / 1.46 / 1.33 (n_res=1 with 24 channels: 1.96 and
# 1.84), so the bench itself varies by ~5 % between runs and none of the first round's shares is off by more.
VARIANTS = {
    "preset":        ([], 1.0, "the starting recipe"),
    "eps":           (["--prediction=eps"], 1.0, "Ho et al.'s eps-prediction"),
    "x0":            (["--prediction=x0"], 1.0, "x0-prediction"),
    "min_snr":       (["--min_snr_gamma=5"], 1.0, "Min-SNR-5 loss weights"),
    "lr_1e-3":       (["--lr=1e-3"], 1.0, "half the learning rate"),
    "lr_4e-3":       (["--lr=4e-3"], 1.0, "twice the learning rate"),
    "ema_0.999":     (["--ema_decay=0.999"], 1.0, "slower EMA"),
    "no_ema":        (["--ema_decay=0"], 1.0, "no EMA (raw weights)"),
    "batch_64":      (["--batch_size=64"], 2 * 0.91, "batch 64, same CPU time"),
    "n_res_1":       (["--unet.n_res=1"], 1.49, "1 ResBlock per level, same CPU time"),
    "channels_24":   (["--unet.channels=24"], 1.37, "24 base channels, same CPU time"),
    "sample_50":     (["--sample_steps=50"], 1.0, "50 sampling steps instead of 100"),
    "sample_250":    (["--sample_steps=250"], 1.0, "250 sampling steps instead of 100"),
    "steps_x2":      ([], 2.0, "twice the training (twice the CPU time)"),
    # second round, combining the first round's winner (n_res_1) with what else looked good
    "n_res_1_seed_1": (["--unet.n_res=1", "--seed=1"], 1.49, "n_res_1 with another seed"),
    "n_res_1_lr_1e-3": (["--unet.n_res=1", "--lr=1e-3"], 1.49, "n_res_1 at half the learning rate"),
    "n_res_1_c24":   (["--unet.n_res=1", "--unet.channels=24"], 2.0, "n_res_1 with 24 base channels, same CPU time"),
    # third round, on the CPU (no GPU time left): smaller still (speed: bench/results/day06_shapes.json)
    "n_res_1_c16":   (["--unet.n_res=1", "--unet.channels=16"], 3.23, "n_res_1 with 16 base channels, same CPU time"),
}


def command(name: str, preset: str, steps: int, device: str, out: Path) -> list[str]:
    overrides, scale, _ = VARIANTS[name]
    return [sys.executable, str(CODE / "train.py"), "--preset", preset, "--device", device,
            "--out", str(out / name), *BASE, f"--steps={round(steps * scale)}", *overrides]


def train_variant(name: str, preset: str, steps: int, device: str, out: Path) -> dict:
    """Run train.py for one variant (its log in OUT/<variant>/log.txt) and return its row."""
    (out / name).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with open(out / name / "log.txt", "w") as log:
        code = subprocess.run(command(name, preset, steps, device, out), stdout=log, stderr=subprocess.STDOUT,
                              env=env).returncode
    row = read_row(name, out) if code == 0 else {"variant": name, "failed": True}
    print(f"{name}: " + (f"failed (exit {code}); see {out / name / 'log.txt'}" if row.get("failed") else
                         f"FID {row['fid']:.3f}, confident {row['confident_frac']:.1%}"), flush=True)
    return row


def read_row(name: str, out: Path) -> dict:
    """One variant's row of the table, from the metrics.json its run wrote (failed when there is none)."""
    metrics = out / name / "metrics.json"
    if not metrics.is_file():
        return {"variant": name, "failed": True}
    m = json.loads(metrics.read_text())
    row = {"variant": name, "change": VARIANTS[name][2], "steps": m["config"]["steps"],
           "images_seen": m["config"]["steps"] * m["config"]["batch_size"], "device": m["device_name"],
           "commit": m["commit"]}
    return row | {k: m[k] for k in ("fid", "fid_ci95", "fid_floor", "confident_frac", "class_entropy", "precision",
                                    "recall", "sample_steps", "train_seconds")}


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table, best FID first."""
    lines = ["| variant | change | steps | images | FID [95 % CI] | confident | class entropy | precision | recall |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r.get("fid", float("inf"))):
        if r.get("failed"):
            lines.append(f"| {r['variant']} | failed | | | | | | | |")
            continue
        lo, hi = r["fid_ci95"]
        lines.append(f"| {r['variant']} | {r['change']} | {r['steps']} | {r['images_seen']:,} | "
                     f"{r['fid']:.3f} [{lo:.2f}, {hi:.2f}] | {r['confident_frac']:.1%} | {r['class_entropy']:.3f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} |")
    return "\n".join(lines) + "\n"


def sample_rows(rows: list[dict], out: Path, n: int = 10) -> None:
    """OUT/ablation.png: the first n evaluation samples of each variant, one row per variant, best FID first."""
    done = sorted((r for r in rows if not r.get("failed")), key=lambda r: r["fid"])
    if done:
        panel([list(load_samples_npz(out / r["variant"] / "samples.npz")[0][:n]) for r in done],
              out / "ablation.png", row_labels=[r["variant"] for r in done])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for every variant's run and the table")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--preset", default="cpu", choices=["cpu", "smoke", "gpu"],
                        help="the preset BASE modifies (smoke for a quick test)")
    parser.add_argument("--steps", type=int, default=BASE_STEPS, help=f"BASE's step count (default {BASE_STEPS})")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants to run")
    parser.add_argument("--collect", action="store_true", help="only tabulate the runs already in OUT")
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; choose from: {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.collect:
        rows = [read_row(name, args.out) for name in names]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda n: train_variant(n, args.preset, args.steps, args.device, args.out), names))
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "ablation.md").write_text(table(rows))
    sample_rows(rows, args.out)
    print(table(rows))


if __name__ == "__main__":
    cli(main)
