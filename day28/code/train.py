"""Day 28 — efficient diffusion: cheaper training steps, and fewer sampling steps at the same quality.

Training (speed.py): day 6's recipe timed one technique at a time — naive attention against SDPA, bf16 autocast,
channels_last, torch.compile, activation checkpointing, fused AdamW — then combined: images/s (median of timed
windows after warm-up) and peak memory, each configuration in a process of its own. A short run of the baseline
(fp32, no tricks) and one of the combined recipe, same seed and steps, checks that quality is unchanged (FID / floor
with its bootstrap interval). Sampling (solvers.py): on day 6's model, DDIM against DPM-Solver++(2M) and UniPC
(uniform t) and EDM's Heun (ρ = 7 from σ_max = 80) at equal network calls, from the same noises: FID / floor
and confident share against calls and seconds.

References: Lu et al. 2022 (DPM-Solver++, arXiv:2211.01095); Zhao et al. 2023 (UniPC, arXiv:2302.04867); Karras
et al. 2022 (EDM, arXiv:2206.00364); Chen et al. 2016 (gradient checkpointing, arXiv:1604.06174); Micikevicius et
al. 2018 (mixed precision, arXiv:1710.03740).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import solvers
import speed
import torch

from common.checkpoint import load_ddpm
from common.config import cli, parse_args
from common.data import load_images
from common.evaluator import score_images
from common.paths import uniform_grid
from common.plotting import panel, plot_curves, plot_fid_vs_calls
from common.predictions import clipped, denoiser
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import ddim, nfe, sample_batched
from common.samples import save_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio")


@dataclass
class Config:
    day6_results: str = "day06/results"     # day 6's run folder, from the repo root ("": one inside --out)
    day6_args: tuple[str, ...] = ()         # extra --key=value for day 6's train.py when it has to run
    techniques: tuple[str, ...] = ("naive_attention", "bf16", "channels_last", "compile", "checkpointing",
                                   "fused_adamw")
    own_process: bool = True                # time each recipe in a fresh process (its own peak memory)
    batch_size: int = 128                   # day 6's batch, for timing and the quality runs
    warmup_steps: int = 2                   # untimed steps (the first compiles)
    windows: int = 5                        # timed windows; images/s is their median (robust to two slow ones)
    window_steps: int = 3
    train_steps: int = 60                   # the quality runs' steps (baseline and combined recipe)
    lr: float = 2e-3                        # day 6's AdamW recipe: warm-up, cosine decay, EMA
    warmup: int = 6
    ema_decay: float = 0.99
    quality_steps: int = 10                 # DDIM steps for the quality runs' samples
    nfes: tuple[int, ...] = (5, 10, 20, 50) # network calls per sample of the sampler comparison
    aim_nfe: int = 10                       # the aim: the best sampler here within 1.3x of the best at max(nfes)
    n_samples: int = 1000                   # samples per setting, from the same noises (the leaderboard's n)
    sample_batch: int = 250
    sample_bf16: bool = True                # sample under bf16 autocast (as days 6 and 20)
    seed: int = 0

    def check(self) -> None:
        from common.config import require
        from common.samples import MIN_SCORED

        require(set(self.techniques) <= {f.name for f in speed.fields(speed.Recipe)}, "techniques",
                f"choose from {', '.join(f.name for f in speed.fields(speed.Recipe))}")
        require(self.batch_size >= 1 and self.windows >= 1 and self.window_steps >= 1, "windows", "choose 1 or more")
        require(0 <= self.warmup <= self.train_steps, "warmup", "choose 0..train_steps warm-up steps")
        require(self.aim_nfe in self.nfes and min(self.nfes) >= 1, "aim_nfe", "choose one of nfes (all ≥ 1)")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")
        require(self.sample_batch >= 1 and self.quality_steps >= 1, "sample_batch", "choose 1 or more")


PRESETS = {
    "smoke": Config(day6_results="", techniques=("bf16",), own_process=False, batch_size=8, warmup_steps=1,
                    windows=2, window_steps=1, train_steps=3, warmup=1, quality_steps=2, nfes=(2, 3), aim_nfe=2,
                    n_samples=16, sample_batch=16),
    "cpu": Config(),
    "gpu": Config(warmup_steps=10, windows=5, window_steps=20, train_steps=5000, lr=2e-4, warmup=500,
                  ema_decay=0.999, quality_steps=50, n_samples=10_000, sample_batch=1000),
}


# --- training: one technique at a time, then the faster ones together ---------------------------------------

def time_recipe(recipe: speed.Recipe, cfg: Config, device: torch.device) -> dict:
    args = (device, cfg.batch_size, cfg.warmup_steps, cfg.windows, cfg.window_steps)
    if cfg.own_process:
        return speed.measure(recipe, str(device), *args[1:], threads=torch.get_num_threads())
    return speed.time_steps(recipe, *args) | {"peak_memory_mib": None}   # shared process: no peak of its own


def combined_recipe(rows: dict[str, dict], cfg: Config) -> speed.Recipe:
    """The speed-ups that shorten a quality run (train_steps steps, compile seconds included) on their own."""
    def run_seconds(r):
        return r["ms_per_step"] / 1e3 * cfg.train_steps + (r["compile_s"] or 0) if "failed" not in r else float("inf")
    base = run_seconds(rows["baseline"])
    return speed.Recipe(**{t: True for t in cfg.techniques if t in speed.SPEED_UPS and run_seconds(rows[t]) < base})


def quality_run(recipe: speed.Recipe, cfg: Config, data, noise, path, run, data_dir) -> tuple[dict, torch.Tensor]:
    recipe_cfg = TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                             ema_decay=cfg.ema_decay, seed=cfg.seed)
    start = time.time()
    ema = speed.train(recipe, data.x, recipe_cfg, run.device, desc=recipe.name)
    seconds = time.time() - start
    x = sample_batched(ddim, clipped(denoiser(ema, "v", path), path), noise, uniform_grid(path, cfg.quality_steps),
                       path=path, device=run.device, batch=cfg.sample_batch, bf16=cfg.sample_bf16).clamp(-1, 1)
    scores = score_images(x, dataset=run.dataset, data_dir=data_dir)
    return {"recipe": recipe.name, "train_seconds": round(seconds, 1), **{k: scores.get(k) for k in REALISM}}, x


def overlap(a: list | None, b: list | None) -> bool | None:
    return None if not (a and b) else a[0] <= b[1] and b[0] <= a[1]


# --- sampling: solvers at equal network calls ---------------------------------------------------------------

def sweep(base, path, noise, cfg: Config, run, data_dir) -> tuple[list[dict], dict]:
    rows, shown = [], {}
    for name, (sampler, grid) in solvers.SETTINGS.items():
        for target in cfg.nfes:
            ts = grid(path, solvers.steps_for(sampler, target))
            start = time.time()
            x = sample_batched(sampler, base, noise, ts, path=path, device=run.device, batch=cfg.sample_batch,
                               bf16=cfg.sample_bf16, desc=f"{name} {target}").clamp(-1, 1)
            seconds = time.time() - start
            scores = score_images(x, dataset=run.dataset, data_dir=data_dir)
            rows.append({"setting": name, "nfe_target": target, "nfe": nfe(sampler, ts), "steps": len(ts) - 1,
                         "seconds_per_sample": round(seconds / len(x), 5), **{k: scores.get(k) for k in REALISM}})
            shown[(name, target)] = x
            print(f"{name}, {rows[-1]['nfe']} calls: FID {scores.get('fid_ratio')}× floor")
    return rows, shown


def aim(rows: list[dict], cfg: Config) -> dict:
    """The best setting at aim_nfe calls, and its FID over the best FID at the most calls (aim: ≤ 1.3)."""
    if rows[0]["fid"] is None:
        return {}
    best_at = {n: min((r for r in rows if r["nfe_target"] == n), key=lambda r: r["fid"]) for n in cfg.nfes}
    low, high = best_at[cfg.aim_nfe], best_at[max(cfg.nfes)]
    return {"winner": low["setting"], "nfe": low["nfe"], "fid_ratio": low["fid_ratio"],
            "best_at_most_calls": high["setting"], "over_best_at_most_calls": round(low["fid"] / high["fid"], 3)}


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    ckpt_path = earlier_checkpoint(6, cfg.day6_results, run, args.device, args.data_dir, cfg.day6_args, by="day 28")
    _, base, path, ckpt = load_ddpm(ckpt_path, run.device)
    run.dataset = ckpt["dataset"]
    data = load_images(run.dataset, "train", args.data_dir)
    noise = torch.randn(cfg.n_samples, *data.x.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 1))
    # --- training speed, one technique at a time, then combined
    recipes = [speed.Recipe()] + [speed.Recipe(**{t: True}) for t in cfg.techniques]
    timed = {r.name: time_recipe(r, cfg, run.device) for r in recipes}
    combined = combined_recipe(timed, cfg)
    if combined.name not in timed:
        timed[combined.name] = time_recipe(combined, cfg, run.device)
    for row in timed.values():
        print(f"{row['recipe']}: {row.get('images_per_s', row.get('failed'))} images/s")
    speed_up = round(timed[combined.name]["images_per_s"] / timed["baseline"]["images_per_s"], 2)
    # --- quality: baseline and combined recipe, same seed and steps
    quality, trained = {}, {}
    for key, recipe in (("baseline", speed.Recipe()), ("combined", combined)):
        quality[key], trained[key] = quality_run(recipe, cfg, data, noise, path, run, args.data_dir)
    # --- sampling: DDIM, DPM-Solver++(2M), UniPC, Heun at equal calls on day 6's model
    rows, shown = sweep(base, path, noise, cfg, run, args.data_dir)
    # --- outputs
    out, goal = run.out, aim(rows, cfg)
    keyed = {f"{r['setting']} {r['nfe']}": {**r, "model": r["setting"]} for r in rows}
    plot_fid_vs_calls(keyed, out / "fid_vs_nfe.png", "MNIST, day 6's model: samplers at equal calls")
    plot_curves({name: ([r["seconds_per_sample"] * 1e3 for r in rows if r["setting"] == name],
                        [r["fid_ratio"] or 0 for r in rows if r["setting"] == name]) for name in solvers.SETTINGS},
                out / "fid_vs_seconds.png", xlabel="ms per sample", ylabel="FID / floor", logx=True, logy=True,
                title="quality against sampling time")
    panel([list(shown[(name, cfg.aim_nfe)][:10]) for name in solvers.SETTINGS], out / "samples.png",
          row_labels=[f"{name}, {cfg.aim_nfe} calls" for name in solvers.SETTINGS])
    if goal:
        save_samples_npz(out / "samples.npz", shown[(goal["winner"], cfg.aim_nfe)])
    metrics = {
        "day6_checkpoint": {"path": str(ckpt_path.relative_to(ROOT)) if ckpt_path.is_relative_to(ROOT) else
                            str(ckpt_path), "step": ckpt["step"], "preset": ckpt["preset"]},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "fused_adamw_supported": speed.fused_supported(run.device),
        "training": {"recipes": list(timed.values()), "combined": combined.name, "speed_up": speed_up,
                     "memory": "peak RSS of each recipe's own process (ru_maxrss)" if run.device.type == "cpu"
                     else "torch.cuda.max_memory_allocated"},
        "quality": quality,
        "quality_intervals_overlap": overlap(quality["baseline"]["fid_ci95"], quality["combined"]["fid_ci95"]),
        "sampling": rows, "aim": goal,
        "headline": (f"{goal.get('winner')} at {goal.get('nfe')} calls: FID {goal.get('over_best_at_most_calls')}× "
                     f"the best at {max(cfg.nfes)}; training at {speed_up}× the baseline's images/s with "
                     f"{combined.name}"),
    }
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(metrics["headline"], f"; results in {out}")


if __name__ == "__main__":
    cli(main)
