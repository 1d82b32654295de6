"""Day 19 — consistency models: one network call from noise to data.

1. 2-D (toy.py): on 8 Gaussians, consistency distillation (CD) with the exact ODE as teacher and consistency
   training (CT) from samples; their one-step maps against the exact ODE map, and the consistency error along exact
   trajectories.
2. MNIST: day 16's flow is the teacher. CD: a copy of it learns to agree with itself across one teacher Euler step
   between adjacent levels. CT: the same U-Net from scratch with the improved recipe (pseudo-Huber, lognormal
   levels, a doubling curriculum), no teacher. FID / floor and confident share / real share of both at 1 and 2
   steps, and of the teacher's Euler at 1, 2 and 50 steps, all from the same noises.
results/samples.npz holds CD's one-step samples.

References: Song et al. 2023 (arXiv:2303.01469); Song & Dhariwal 2024 (arXiv:2310.14189); Lipman et al. 2023
(arXiv:2210.02747).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common.consistency import PATH, cd_loss, consistency, ct_loss
from figures import plot_toy
from toy import ONE_STEP, ToyConfig, run_toy, two_step_grid

from common.checkpoint import load_model
from common.config import cli, parse_args
from common.data import load_images
from common.evaluator import score_images, unconfident
from common.loop import fit
from common.nets import UNet
from common.paths import uniform_grid
from common.plotting import panel, plot_fid_vs_calls, save_grid
from common.predictions import denoiser
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import euler, sample_batched
from common.samples import save_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio")


@dataclass
class CTConfig(TrainConfig):                        # consistency training from scratch: its recipe
    start_levels: int = 10                          # the curriculum's N: start_levels, doubling, up to end_levels
    end_levels: int = 160


@dataclass
class Config(TrainConfig):                          # the CD student's recipe (it starts from the teacher's weights)
    day16_results: str = "day16/results"            # day 16's run folder, from the repo root ("": one inside --out)
    day16_args: tuple[str, ...] = ()                # extra --key=value for day 16's train.py when it has to run
    cd_levels: int = 18                             # CD's N (Song et al. 2023 use 18 on CIFAR-10)
    mid_t: float = 0.5                              # the level 2-step sampling re-noises to
    teacher_steps: tuple[int, ...] = (1, 2, 50)     # the teacher's Euler steps
    n_samples: int = 1000                           # samples per setting, all from the same noises
    batch: int = 250                                # sampling batch
    n_show: int = 10
    ct: CTConfig = field(default_factory=CTConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day16_args), "day16_args",
                "write day 16's options as --key=value, separated by commas")
        require(self.cd_levels >= 1, "cd_levels", "choose 1 or more")
        require(0 < self.mid_t < 1, "mid_t", "choose a level in (0, 1)")
        require(min(self.teacher_steps, default=0) >= 1, "teacher_steps", "choose step counts ≥ 1")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")
        require(self.batch >= 1 and self.n_show >= 1, "batch", "choose 1 or more")
        require(1 <= self.ct.start_levels <= self.ct.end_levels, "ct.end_levels",
                "choose 1 ≤ ct.start_levels ≤ ct.end_levels")


PRESETS = {
    "smoke": Config(day16_results="", steps=6, batch_size=16, warmup=2, sample_every=0, ckpt_every=3, log_every=3,
                    cd_levels=4, teacher_steps=(1, 2), n_samples=16, batch=16, n_show=3,
                    ct=CTConfig(steps=6, batch_size=16, warmup=2, sample_every=0, ckpt_every=3, log_every=3,
                                start_levels=2, end_levels=4),
                    toy=ToyConfig(steps=20, batch_size=64, warmup=5, ckpt_every=10, log_every=5, n_train=256,
                                  cd_levels=4, ct_start=2, ct_end=4, n_eval=64, exact_steps=8, bins=4)),
    # CD fine-tunes the teacher's weights at a low rate (2e-4 beat 1e-3 by far in a probe); CT starts from scratch
    "cpu": Config(steps=300, batch_size=128, lr=2e-4, warmup=25, ema_decay=0.995, sample_every=0, ckpt_every=150,
                  ct=CTConfig(steps=300, batch_size=128, lr=1e-3, warmup=25, ema_decay=0.995, sample_every=0,
                              ckpt_every=150, end_levels=80),
                  toy=ToyConfig(steps=4000, batch_size=256, lr=2e-4, warmup=100, ckpt_every=2000, log_every=200)),
    "gpu": Config(steps=20_000, batch_size=256, lr=1e-4, warmup=1000, ema_decay=0.9999, sample_every=0,
                  ckpt_every=2000, n_samples=10_000, batch=1000,
                  ct=CTConfig(steps=50_000, batch_size=256, lr=1e-4, warmup=1000, ema_decay=0.9999, sample_every=0,
                              ckpt_every=5000, end_levels=1280),
                  toy=ToyConfig(steps=20_000, batch_size=1024, n_eval=10_000)),
}


def sample(sampler, denoise, noise: torch.Tensor, ts: torch.Tensor, cfg: Config, run, seed: int):
    """Samples from each noise (clamped to [-1, 1], as an image file holds them) and the seconds they took."""
    start = time.time()
    x = sample_batched(sampler, denoise, noise, ts, path=PATH, device=run.device, batch=cfg.batch, bf16=cfg.bf16,
                       generator=torch.Generator().manual_seed(seed), desc=sampler.__name__)
    return x.clamp(-1, 1), time.time() - start


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    # --- 1. 2-D
    toy, shown = run_toy(cfg.toy, run, cfg.seed)
    # --- 2. MNIST: the teacher is day 16's flow; CD starts from its weights, CT from scratch
    ckpt_path = earlier_checkpoint(16, cfg.day16_results, run, args.device, args.data_dir, cfg.day16_args,
                                   file="flow/checkpoint.pt", by="day 19")
    teacher, ckpt = load_model(ckpt_path, run.device, finished=True)
    run.dataset = ckpt["dataset"]
    data = load_images(run.dataset, "train", args.data_dir)
    parts = {"cd": run.part("cd"), "ct": run.part("ct")}
    teach = denoiser(teacher, "velocity", PATH)
    torch.manual_seed(cfg.seed)
    cd = fit(copy.deepcopy(teacher).train().requires_grad_(True), cd_loss(teach, cfg.cd_levels), data.x, None,
             cfg, parts["cd"])[1].eval()
    torch.manual_seed(cfg.seed)
    ct = fit(UNet(teacher.cfg), ct_loss(cfg.ct.steps, cfg.ct.start_levels, cfg.ct.end_levels), data.x, None,
             cfg.ct, parts["ct"])[1].eval()
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    # --- 3. quality against network calls, from the same noises
    noise = torch.randn(cfg.n_samples, *data.x.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 1))
    settings = {f"teacher-{n}": ("teacher", euler, teach, uniform_grid(PATH, n)) for n in cfg.teacher_steps}
    for name, model in (("cd", cd), ("ct", ct)):
        for n, ts in ((1, ONE_STEP), (2, two_step_grid(cfg.mid_t))):
            settings[f"{name}-{n}"] = (name, consistency, denoiser(model, "velocity", PATH), ts)
    rows, samples = {}, {}
    for key, (name, sampler, denoise, ts) in settings.items():
        x, seconds = sample(sampler, denoise, noise, ts, cfg, run, cfg.seed + 2)
        scores = score_images(x, dataset=run.dataset, data_dir=args.data_dir)
        rows[key] = {"model": name, "sampler": sampler.__name__, "nfe": len(ts) - 1,
                     "seconds_per_sample": round(seconds / len(x), 5), **{k: scores.get(k) for k in REALISM}}
        samples[key] = x
        print(f"{key}: FID {scores.get('fid_ratio')}× floor, confident {scores.get('confident_ratio')}× real")
    # --- outputs
    out = run.out
    save_samples_npz(out / "samples.npz", samples["cd-1"])
    doubted = unconfident(samples["cd-1"][:100], run.dataset)
    save_grid(samples["cd-1"][:100], out / "samples.png", nrow=10, marked=doubted)
    panel([list(samples[k][: cfg.n_show]) for k in rows], out / "same_noise.png", row_labels=list(rows))
    plot_fid_vs_calls(rows, out / "fid_vs_nfe.png", "MNIST: consistency models against the teacher")
    plot_toy(shown, toy, out / "toy.png")
    reference = f"teacher-{max(cfg.teacher_steps)}"
    aim = {"reference": reference, **{f"{k}_over_teacher": round(rows[k]["fid"] / rows[reference]["fid"], 3)
                                      for k in ("cd-1", "cd-2", "ct-1", "ct-2")}} if rows[reference]["fid"] else None
    metrics = {"day16_checkpoint": {"path": str(ckpt_path.relative_to(ROOT)) if ckpt_path.is_relative_to(ROOT)
                                    else str(ckpt_path), "step": ckpt["step"], "preset": ckpt["preset"]},
               "toy": toy, "settings": rows, "aim": aim,
               "cost": {"teacher_train_seconds": round(ckpt["elapsed_s"], 1),
                        "train_seconds": {name: round(part.train_seconds, 1) for name, part in parts.items()},
                        "teacher_calls_per_cd_step": 1},
               "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist()}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"CD one step: FID {rows['cd-1']['fid_ratio']}× floor; results in {out}")


if __name__ == "__main__":
    cli(main)
