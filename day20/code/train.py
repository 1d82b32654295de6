"""Day 20 — progressive distillation: halve the sampling steps, stage by stage, down to one.

Day 6's DDPM (v-prediction, cosine schedule) is the first teacher, sampled by DDIM on `start_steps` uniform steps.
Each stage copies the current teacher's weights into a student that learns to take two teacher DDIM steps in one
(distill.py); the student is the next stage's teacher. After every stage: FID / floor and confident share / real
share of the student at its number of steps, against DDIM on day 6's model at the same number, from the same noises;
the stage's training seconds. results/samples.npz holds the 4-step student's samples, samples_1step.npz the last
stage's.

References: Salimans & Ho 2022 (arXiv:2202.00512); Song, Meng & Ermon 2021 (arXiv:2010.02502).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from common.progressive import distill_loss

from common.checkpoint import load_ddpm
from common.config import cli, parse_args
from common.data import load_images
from common.evaluator import score_images, unconfident
from common.loop import fit
from common.paths import uniform_grid
from common.plotting import panel, plot_fid_vs_calls, save_grid
from common.predictions import clipped, denoiser
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import ddim, sample_batched
from common.samples import save_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio")


@dataclass
class Config(TrainConfig):                          # the recipe of every stage (steps: optimiser steps per stage)
    day6_results: str = "day06/results"             # day 6's run folder, from the repo root ("": one inside --out)
    day6_args: tuple[str, ...] = ()                 # extra --key=value for day 6's train.py when it has to run
    start_steps: int = 16                           # the first teacher's DDIM steps; stages halve them down to 1
    saved_steps: int = 4                            # the student whose samples are results/samples.npz
    n_samples: int = 1000                           # samples per setting, all from the same noises
    batch: int = 250                                # sampling batch
    n_show: int = 10

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day6_args), "day6_args",
                "write day 6's options as --key=value, separated by commas")
        require(self.start_steps >= 2 and self.start_steps & (self.start_steps - 1) == 0, "start_steps",
                "choose a power of two ≥ 2 (each stage halves it)")
        require(self.saved_steps in stage_steps(self.start_steps), "saved_steps",
                f"choose one of {stage_steps(self.start_steps)}")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")
        require(self.batch >= 1 and self.n_show >= 1, "batch", "choose 1 or more")


def stage_steps(start: int) -> list[int]:
    """The students' step counts: start / 2, start / 4, ..., 1."""
    return [start >> k for k in range(1, start.bit_length())]


PRESETS = {
    "smoke": Config(day6_results="", steps=4, batch_size=16, warmup=1, sample_every=0, ckpt_every=2, log_every=2,
                    start_steps=4, saved_steps=2, n_samples=16, batch=16, n_show=3),
    "cpu": Config(steps=150, batch_size=128, lr=2e-4, warmup=10, ema_decay=0.99, sample_every=0, ckpt_every=75),
    "gpu": Config(steps=10_000, batch_size=256, lr=1e-4, warmup=500, ema_decay=0.999, sample_every=0,
                  ckpt_every=2000, start_steps=256, n_samples=10_000, batch=1000),
}


def sample(denoise, path, noise: torch.Tensor, steps: int, cfg: Config, run) -> tuple[torch.Tensor, float]:
    """DDIM (η = 0) on `steps` uniform steps from each noise, x̂0 clipped to [-1, 1]; and the seconds it took."""
    start = time.time()
    x = sample_batched(ddim, denoise, noise, uniform_grid(path, steps), path=path, device=run.device,
                       batch=cfg.batch, bf16=cfg.bf16, desc=f"ddim {steps}")
    return x.clamp(-1, 1), time.time() - start


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    ckpt_path = earlier_checkpoint(6, cfg.day6_results, run, args.device, args.data_dir, cfg.day6_args, by="day 20")
    model, base, path, ckpt = load_ddpm(ckpt_path, run.device)     # base: day 6's model, x̂0 clipped as Ho et al.
    run.dataset = ckpt["dataset"]
    prediction = ckpt["config"]["prediction"]
    data = load_images(run.dataset, "train", args.data_dir)
    noise = torch.randn(cfg.n_samples, *data.x.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 1))
    rows, samples, stages = {}, {}, {}

    def score(key: str, name: str, denoise, steps: int, **extra) -> None:
        x, seconds = sample(denoise, path, noise, steps, cfg, run)
        scores = score_images(x, dataset=run.dataset, data_dir=args.data_dir)
        rows[key] = {"model": name, "nfe": steps, "seconds_per_sample": round(seconds / len(x), 5), **extra,
                     **{k: scores.get(k) for k in REALISM}}
        samples[key] = x
        print(f"{key}: FID {scores.get('fid_ratio')}× floor, confident {scores.get('confident_ratio')}× real")

    score(f"ddim-{cfg.start_steps}", "DDIM on day 6's model", base, cfg.start_steps)
    # --- stages: the student starts from its teacher's weights and learns two teacher steps in one
    net, teacher = model, base
    for n in stage_steps(cfg.start_steps):
        part = run.part(f"stage_{n:03d}")
        loss = distill_loss(teacher, lambda m, x, t: denoiser(m, prediction, path)(x, t).x0, path,
                            uniform_grid(path, 2 * n))
        torch.manual_seed(cfg.seed)
        net = fit(copy.deepcopy(net).train().requires_grad_(True), loss, data.x, None, cfg, part)[1].eval()
        teacher = clipped(denoiser(net, prediction, path), path)
        stages[n] = round(part.train_seconds, 1)
        if run.is_main:
            score(f"student-{n}", "progressive distillation", teacher, n, train_seconds=stages[n])
            score(f"ddim-{n}", "DDIM on day 6's model", base, n)
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    # --- outputs
    out, saved, last = run.out, f"student-{cfg.saved_steps}", "student-1"
    save_samples_npz(out / "samples.npz", samples[saved])
    save_samples_npz(out / "samples_1step.npz", samples[last])
    doubted = unconfident(samples[saved][:100], run.dataset)
    save_grid(samples[saved][:100], out / "samples.png", nrow=10, marked=doubted)
    order = sorted(rows, key=lambda k: (rows[k]["model"], -rows[k]["nfe"]))
    panel([list(samples[k][: cfg.n_show]) for k in order], out / "same_noise.png", row_labels=order)
    plot_fid_vs_calls(rows, out / "fid_vs_nfe.png", "MNIST: progressive distillation against DDIM",
                      "network calls per sample (DDIM steps)")
    ratio = {n: round(rows[f"student-{n}"]["fid"] / rows[f"ddim-{n}"]["fid"], 3) for n in stages} \
        if rows[saved]["fid"] else None
    metrics = {"day6_checkpoint": {"path": str(ckpt_path.relative_to(ROOT)) if ckpt_path.is_relative_to(ROOT)
                                   else str(ckpt_path), "step": ckpt["step"], "preset": ckpt["preset"],
                                   "prediction": prediction, "schedule": ckpt["config"]["schedule"]},
               "settings": {k: rows[k] for k in order}, "student_over_ddim": ratio,
               "cost": {"teacher_train_seconds": round(ckpt["elapsed_s"], 1), "stage_train_seconds": stages},
               "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist()}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"{cfg.saved_steps}-step student: FID {rows[saved]['fid_ratio']}× floor "
          f"(DDIM: {rows[f'ddim-{cfg.saved_steps}']['fid_ratio']}×); results in {out}")


if __name__ == "__main__":
    cli(main)
