"""CPU training speed of day 6's model shapes and batch sizes, as ratios to the ablation's start, in one run.

The day-6 ablation (`day06/code/ablation.py`) gives a variant that changes the cost of a step (model shape,
batch) as many steps as the same CPU time buys; this measures that exchange rate. One training step is
day 6's: `build(cfg)`'s loss under bf16 autocast, backward, AdamW. Timed blocks go round the variants in
turn after untimed warm-up steps, so a neighbour's load hits all alike; each number is the median block.

    python bench/day06_shapes.py [--repeats N] [--out DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from common.config import apply_overrides, cli
from common.run import git_commit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# variant: overrides of the ablation's starting recipe (its rows that change the cost of a step)
SHAPES = {"preset": [], "batch_64": ["--batch_size=64"], "n_res_1": ["--unet.n_res=1"],
          "channels_24": ["--unet.channels=24"],
          "n_res_1_c24": ["--unet.n_res=1", "--unet.channels=24"],
          "n_res_1_c16": ["--unet.n_res=1", "--unet.channels=16"],
          "n_res_1_c24_no_attn": ["--unet.n_res=1", "--unet.channels=24", "--unet.attn_res="],
          "n_res_1_c24_two_levels": ["--unet.n_res=1", "--unet.channels=24", "--unet.mults=1,2", "--unet.attn_res="]}


def load_day6(stem: str):
    """day06/code/<stem>.py as a module (a day is a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(f"day06_{stem}", ROOT / "day06" / "code" / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                                   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def stepper(day6, base: list[str], overrides: list[str]):
    """A closure doing one of day 6's training steps for the cpu preset with `base` and `overrides`; also
    returns its batch size."""
    cfg = apply_overrides(day6.PRESETS["cpu"], base + overrides)
    model, _, loss_fn = day6.build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    x0 = torch.rand(cfg.batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = loss_fn(model, x0, None, torch.Generator().manual_seed(0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, cfg.batch_size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per variant (median reported)")
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed block")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    day6, ablation = load_day6("train"), load_day6("ablation")
    steps = {name: stepper(day6, ablation.BASE, o) for name, o in SHAPES.items()}
    for step, _ in steps.values():
        step(), step()  # warm-up
    times = {name: [] for name in SHAPES}
    for _ in range(args.repeats):
        for name, (step, _) in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    rows = {name: {"overrides": SHAPES[name], "batch_size": steps[name][1],
                   "images_per_s": round(steps[name][1] / statistics.median(times[name]), 1)} for name in SHAPES}
    for row in rows.values():
        row["ratio_to_preset"] = round(row["images_per_s"] / rows["preset"]["images_per_s"], 3)
        print(f"{row['overrides'] or 'preset'}: {row['images_per_s']} img/s ({row['ratio_to_preset']}x)")
    result = {"threads": torch.get_num_threads(), "commit": git_commit(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "variants": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "day06_shapes.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    cli(main)
