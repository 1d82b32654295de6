"""Day 30 — research mini-project: at equal CPU training and sampling compute, which few-step family wins?

One U-Net (day 6's cpu network), one training budget B counted in FLOPs (budget.py), seven ways to spend it
(families.py): DDPM sampled by DDIM and by DPM-Solver++(2M), flow matching (Euler, Heun), rectified flow, consistency
distillation and progressive distillation from their B/2 teachers, and DDGAN. Each is trained on seeds 0, 1, 2 and
sampled at 1, 2 and 4 network calls from the same noises; FID / floor and confident share / real share of 1000 samples
per setting; the mean over seeds with a t-interval, and paired differences between the best two at 1 and at 4 calls.
Ablation: consistency distillation from a B/4 teacher (student 3B/4) against the B/2 split, on the first seed.
results/prereg.md states the question and the primary metric before the first run.

References: Ho et al. 2020 (arXiv:2006.11239); Lipman et al. 2023 (arXiv:2210.02747); Liu et al. 2023
(arXiv:2209.03003); Song et al. 2023 (arXiv:2303.01469); Salimans & Ho 2022 (arXiv:2202.00512); Xiao et al. 2022
(arXiv:2112.07804); Lu et al. 2022 (arXiv:2211.01095).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from budget import forward_flops, paired_difference, step_flops, t_interval
from families import (GANRecipe, Recipe, consistency_distillation, ddgan, ddpm_loss, from_scratch, kept, progressive,
                      reflow, settings)
from figures import plot_fid_vs_nfe, plot_fid_vs_seconds

from common.config import cli, parse_args
from common.data import load_images
from common.ddgan import DiscriminatorConfig
from common.evaluator import score_images
from common.nets import UNet, UNetConfig
from common.plotting import panel
from common.run import Run, write_metrics
from common.samplers import nfe, sample_batched
from common.samples import save_samples_npz

DAY = Path(__file__).resolve().parents[1]
SCORES = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_ratio")


@dataclass
class Config:
    dataset: str = "mnist"
    budget_steps: int = 200                       # B in DDPM-step equivalents (ddpm.batch_size images a step)
    seeds: tuple[int, ...] = (0, 1, 2)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1))   # day 6's cpu network
    disc: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)                # DDGAN's D (day 21)
    ddpm: Recipe = field(default_factory=lambda: Recipe(lr=2e-3, warmup=20))
    fm: Recipe = field(default_factory=lambda: Recipe(lr=2e-3, warmup=20))
    reflow: Recipe = field(default_factory=lambda: Recipe(lr=1e-3, warmup=10))       # fine-tunes (day 18)
    cd: Recipe = field(default_factory=lambda: Recipe(lr=2e-4, warmup=10))           # fine-tunes (day 19)
    pd: Recipe = field(default_factory=lambda: Recipe(lr=2e-4, warmup=5))            # fine-tunes (day 20)
    gan: GANRecipe = field(default_factory=GANRecipe)
    n_pairs: int = 2000                           # reflow pairs, made by Heun on pair_steps steps
    pair_steps: int = 3
    cd_levels: int = 18                           # CD's N (Song et al. 2023)
    mid_t: float = 0.5                            # CD's 2-step sampler re-noises to this level
    pd_start: int = 16                            # PD's first teacher takes this many DDIM steps
    gan_steps: int = 4                            # DDGAN's T
    nfes: tuple[int, ...] = (1, 2, 4)             # network calls per sample
    ablation: bool = True                         # CD from a B/4 teacher on the first seed
    n_samples: int = 1000                         # per setting, from the same noises
    batch: int = 250                              # sampling batch
    bf16: bool = True
    log_every: int = 25
    ckpt_every: int = 100

    def check(self) -> None:
        from common.config import require
        from common.data import DATASETS
        from common.samples import MIN_SCORED

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(self.budget_steps >= 4 and self.budget_steps % 4 == 0, "budget_steps",
                "choose a multiple of 4 (the teachers are kept at B/2 and B/4)")
        require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", "choose distinct seeds")
        require(self.fm.batch_size == self.reflow.batch_size == self.ddpm.batch_size, "fm.batch_size",
                "give ddpm, fm and reflow one batch size (their steps cost the same)")
        require(self.pd_start >= 2 and self.pd_start & (self.pd_start - 1) == 0, "pd_start", "choose a power of 2")
        require(0 < self.mid_t < 1, "mid_t", "choose a level in (0, 1)")
        require(min(self.nfes) >= 1 and 1 in self.nfes, "nfes", "include 1, all ≥ 1")
        for key in ("n_pairs", "pair_steps", "cd_levels", "gan_steps", "batch", "log_every", "ckpt_every"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")


def tiny(**kw) -> Recipe:
    return Recipe(lr=1e-3, warmup=1, batch_size=8, **kw)


PRESETS = {
    "smoke": Config(budget_steps=4, seeds=(0,), unet=UNetConfig(channels=8, n_res=1, mults=(1, 2), attn_res=()),
                    disc=DiscriminatorConfig(channels=8, mults=(1, 2)), ddpm=tiny(), fm=tiny(), reflow=tiny(),
                    cd=tiny(), pd=tiny(), gan=GANRecipe(batch_size=8, r1_every=2), n_pairs=4, pair_steps=1,
                    cd_levels=4, pd_start=2, gan_steps=2, nfes=(1,), n_samples=8, batch=8, log_every=2,
                    ckpt_every=2),
    "cpu": Config(),
    "gpu": Config(budget_steps=20_000, unet=UNetConfig(channels=64, attn_res=(7, 14)),
                  disc=DiscriminatorConfig(channels=64), n_pairs=50_000, pair_steps=8, n_samples=10_000, batch=1000,
                  ckpt_every=2000),
}


# --- training: every family of one seed --------------------------------------------------------------------------

def train_seed(seed: int, data, budget: int, unit: int, fwd: int, cfg: Config, run: Run) -> tuple[dict, list]:
    """The seven families of one seed; their EMA networks and one row per run (FLOPs, steps, seconds)."""
    half, quarter = cfg.budget_steps // 2, cfg.budget_steps // 4
    parts = {name: run.part(f"{name}-s{seed}") for name in ("ddpm", "flow", "reflow", "cd", "ddgan")}
    models, rows = {}, []

    def record(family: str, info: dict, part_seconds: float, teacher=None) -> None:
        row = {"family": family, "seed": seed, **info}
        if teacher is not None:                       # the teacher's B/2 is counted once, here, with its seconds
            ckpt = torch.load(teacher, map_location="cpu", weights_only=True)
            row |= {"teacher": teacher.name, "teacher_step": ckpt["step"], "own_flops": info["train_flops"],
                    "train_flops": info["train_flops"] + ckpt["step"] * unit * cfg.ddpm.batch_size}
            part_seconds += ckpt["elapsed_s"]
        rows.append(row | {"budget_share": round(row["train_flops"] / budget, 4),
                           "train_seconds": round(part_seconds + info.get("pair_seconds", 0), 1)})

    for family, keep in (("ddpm", half), ("flow", quarter)):   # the flow keeps B/4 too: the ablation's teacher
        models[family], info = from_scratch(family, data, budget, unit, cfg, seed, parts[family], keep)
        record("DDPM" if family == "ddpm" else family, info, parts[family].train_seconds)
    fm_half, fm_path = kept(parts["flow"], half)
    models["reflow"], info = reflow(fm_half, data, budget // 2, unit, fwd, cfg, seed, parts["reflow"])
    record("reflow", info, parts["reflow"].train_seconds, fm_path)
    models["cd"], info = consistency_distillation(fm_half, data, budget // 2, cfg, seed, parts["cd"])
    record("CD", info, parts["cd"].train_seconds, fm_path)
    ddpm_half, ddpm_path = kept(parts["ddpm"], half)
    models["pd"], info = progressive(ddpm_half, data, budget // 2, cfg, seed, run)
    record("PD", info, info.pop("train_seconds"), ddpm_path)
    models["ddgan"], info = ddgan(data, budget, cfg, seed, parts["ddgan"])
    record("DDGAN", info, parts["ddgan"].train_seconds)
    return models, rows


# --- sampling and scoring --------------------------------------------------------------------------------------------

def score_setting(name: str, setting: tuple, noise: torch.Tensor, seed: int, cfg: Config, run: Run, data_dir):
    """One setting's samples from the seed's noises (clamped to [-1, 1]) and its row of scores."""
    family, sampler_name, sampler, denoise, ts, path = setting
    start = time.time()
    x = sample_batched(sampler, denoise, noise, ts, path=path, device=run.device, batch=cfg.batch, bf16=cfg.bf16,
                       generator=torch.Generator().manual_seed(seed + 2), desc=name).clamp(-1, 1)
    seconds = time.time() - start
    scores = score_images(x, dataset=run.dataset, data_dir=data_dir)
    row = {"setting": name, "family": family, "sampler": sampler_name, "nfe": nfe(sampler, ts), "seed": seed,
           "seconds_per_sample": round(seconds / len(x), 5), **{k: scores.get(k) for k in SCORES}}
    print(f"seed {seed} {name}: FID {row['fid_ratio']}× floor, confident {row['confident_ratio']}× real")
    return x, row


def summarise(rows: list[dict]) -> dict:
    """Per setting: family, sampler, NFE and the t-intervals over seeds of FID / floor and confident / real."""
    out = {}
    for name in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == name]
        out[name] = {k: mine[0][k] for k in ("family", "sampler", "nfe")} | {
            "fid_ratio": t_interval([r["fid_ratio"] for r in mine]),
            "confident_ratio": t_interval([r["confident_ratio"] for r in mine])}
    return out


def paired(summary: dict, rows: list[dict], calls: int) -> dict | None:
    """At `calls` network calls: the setting with the lowest mean FID / floor, the best of another family, and the
    paired t-interval of their per-seed differences (winner − runner-up; negative: the winner is better)."""
    here = sorted((s for s in summary if summary[s]["nfe"] == calls), key=lambda s: summary[s]["fid_ratio"]["mean"])
    if not here:
        return None
    win = here[0]
    others = [s for s in here if summary[s]["family"] != summary[win]["family"]]
    if not others:
        return None
    values = {s: [r["fid_ratio"] for r in sorted(rows, key=lambda r: r["seed"]) if r["setting"] == s]
              for s in (win, others[0])}
    return {"nfe": calls, "winner": win, "runner_up": others[0],
            "difference": paired_difference(values[win], values[others[0]])}


# --- the experiment ------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    # --- the budget: B = budget_steps DDPM steps, in counted FLOPs
    probe, x = UNet(cfg.unet), data.x[: cfg.ddpm.batch_size]
    unit, fwd = step_flops(probe, ddpm_loss, x), forward_flops(probe, x)   # FLOPs per image
    budget = cfg.budget_steps * cfg.ddpm.batch_size * unit
    print(f"budget B = {budget / 1e12:.2f} TFLOPs = {cfg.budget_steps} DDPM steps of {cfg.ddpm.batch_size} images")
    # --- training: seven families per seed, then the ablation's student
    models, runs = {}, []
    for seed in cfg.seeds:
        models[seed], rows = train_seed(seed, data, budget, unit, fwd, cfg, run)
        runs += rows
    ablation = None
    if cfg.ablation:
        seed = cfg.seeds[0]
        teacher, path = kept(run.part(f"flow-s{seed}"), cfg.budget_steps // 4)
        part = run.part(f"cd-quarter-s{seed}")
        cd_quarter, info = consistency_distillation(teacher, data, budget - budget // 4, cfg, seed, part)
        ablation = {"seed": seed, "teacher": path.name, "student_flops": info["train_flops"],
                    "steps": info["steps"], "train_seconds": round(part.train_seconds, 1)}
    # --- sampling: every setting of a seed from the same noises
    results, shown = [], {}
    for seed in cfg.seeds:
        noise = torch.randn(cfg.n_samples, *data.x.shape[1:], generator=torch.Generator().manual_seed(seed + 1000))
        lineup = settings(models[seed], cfg, seed)
        if ablation and seed == ablation["seed"]:
            quarter = settings({**models[seed], "cd": cd_quarter}, cfg, seed)
            lineup |= {k.replace("cd-", "cd-quarter-"): ("CD (B/4 teacher)", *v[1:])
                       for k, v in quarter.items() if k.startswith("cd-")}
        for name, setting in lineup.items():
            x, row = score_setting(name, setting, noise, seed, cfg, run, args.data_dir)
            results.append(row)
            if seed == cfg.seeds[0]:
                shown[name] = x
    main_rows = [r for r in results if not r["setting"].startswith("cd-quarter")]
    summary = summarise(main_rows)
    scored = all(r["fid_ratio"] is not None for r in results)
    calls = sorted({min(cfg.nfes), max(cfg.nfes)})
    duels = [d for d in (paired(summary, main_rows, n) for n in calls) if d] if scored else []
    if ablation and scored:
        ablation["settings"] = summarise([r for r in results if r["setting"].startswith("cd-")
                                          and r["seed"] == ablation["seed"]])
    # --- outputs
    out = run.out
    if scored:
        plot_fid_vs_nfe(summary, out / "fid_vs_nfe.png")
        plot_fid_vs_seconds(summary, runs, out / "fid_vs_seconds.png")
    best = {}
    for name, s in summary.items():
        key = s["family"] + ("" if s["family"] != "DDPM" else f" ({s['sampler']})")
        if scored and (key not in best or s["fid_ratio"]["mean"] < summary[best[key]]["fid_ratio"]["mean"]):
            best[key] = name
        best.setdefault(key, name)
    panel([list(shown[n][:10]) for n in best.values()], out / "samples_best.png",
          row_labels=[f"{k}: {n}" for k, n in best.items()])
    top = min(summary, key=lambda s: summary[s]["fid_ratio"]["mean"]) if scored else next(iter(summary))
    metrics = {"budget": {"flops": budget, "ddpm_step_equivalents": cfg.budget_steps,
                          "batch_size": cfg.ddpm.batch_size, "unet_train_flops_per_image": unit,
                          "unet_forward_flops_per_image": fwd},
               "runs": runs, "results": results, "summary": summary, "paired": duels, "ablation": ablation,
               "best_per_family": best}
    if duels:
        lo = next(d for d in duels if d["nfe"] == min(cfg.nfes))
        hi = next(d for d in duels if d["nfe"] == max(cfg.nfes))
        metrics["headline"] = (f"at B = {cfg.budget_steps} DDPM steps: best at {hi['nfe']} calls {hi['winner']} "
                               f"(FID {summary[hi['winner']]['fid_ratio']['mean']:.1f}× floor), at 1 call "
                               f"{lo['winner']} ({summary[lo['winner']]['fid_ratio']['mean']:.1f}×)")
    save_samples_npz(out / "samples.npz", shown[top])
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"best setting: {top}; results in {out}")


if __name__ == "__main__":
    cli(main)
