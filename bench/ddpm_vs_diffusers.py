"""Day 6's DDPM against diffusers' standard recipe: same data, same machine, same wall-clock budget.

Both trainers are step-based, so each first times runs of k and 3k of its own steps and turns the budget B
into a step count B / (seconds per step); then both train, sample 1 -> 0 with the same number of ancestral
steps and the same n, and are scored by the shared MNIST evaluator (FID with its real-vs-real floor).

    ours       day 6's cpu preset as it is (imported from day06/code/train.py): common.nets.UNet
               (16 channels, one ResBlock per level), v-prediction, cosine schedule, AdamW lr 2e-3,
               batch 128, EMA 0.995, bf16 autocast, trained by common.loop.fit and sampled by day 6's
               `sample` (common.diffusion.ddpm)
    diffusers  examples/unconditional_image_generation/train_unconditional.py without accelerate:
               UNet2DModel (sized for CPU: day 6's layout, width matched to our parameter count),
               DDPMScheduler(1000, "linear"), eps-prediction, AdamW lr 1e-4, betas (0.95, 0.999),
               weight decay 1e-6, 500 warm-up steps then cosine, gradient clipping at 1, EMAModel
               (max decay 0.9999, warm-up power 3/4), batch 16, fp32; sampled like DDPMPipeline
               (set_timesteps(n) and a step() loop)

    python bench/ddpm_vs_diffusers.py [--quick] [--out DIR] [--data-dir D] [--minutes=3] [--key=value ...]

References: Ho et al. 2020 (arXiv:2006.11239); Nichol & Dhariwal 2021 (arXiv:2102.09672); Salimans & Ho
2022 (arXiv:2202.00512); diffusers' unconditional training example (github.com/huggingface/diffusers).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from day06_shapes import load_day6
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm import tqdm
from unet_throughput import diffusers_unet, load_average, machine, matched_diffusers_unet

from common.config import apply_overrides, cli, to_dict
from common.data import load_images
from common.evaluator import score_images
from common.loop import batch_indices, fit
from common.nets import UNetConfig, count_params
from common.paths import DiscreteVP
from common.plotting import save_grid
from common.run import Run, pick_device

BENCH = Path(__file__).resolve().parent


@dataclass
class Config:
    minutes: float = 3.0             # training budget B per model, wall clock
    calib_steps: int = 10            # k: each trainer times k and 3k steps to turn B into its step count
    sample_steps: int = 50           # ancestral steps for both samplers
    n_samples: int = 500             # samples per model (sampled, timed and scored)
    ours_preset: str = "cpu"         # which day 6 preset is "ours" (steps are replaced by the calibrated count)
    theirs_batch: int = 16           # train_unconditional.py: --train_batch_size 16
    theirs_lr: float = 1e-4          # --learning_rate
    theirs_warmup: int = 500         # --lr_warmup_steps
    theirs_bf16: bool = False        # --mixed_precision no
    dataset: str = "mnist"
    device: str = "cpu"
    threads: int = 0                 # torch intra-op threads (0: torch's default)
    seed: int = 0


DEFAULT = Config()
QUICK = Config(minutes=0.02, calib_steps=2, sample_steps=4, n_samples=16, ours_preset="smoke", theirs_warmup=5,
               threads=1)


# --- ours: day 6, unchanged ---------------------------------------------------------------------------

def train_ours(day6, cfg6, x, steps: int, device, data_name: str):
    """Day 6's model and loss, built as its main() builds them, trained by common.loop.fit for `steps`.

    Returns (EMA model, train seconds).
    """
    cfg6 = dataclasses.replace(cfg6, steps=steps, sample_every=0)   # no progress grids: they are not training
    model, _, loss_fn = day6.build(cfg6)

    with tempfile.TemporaryDirectory() as tmp:                        # checkpoint + log: not results
        run = Run(Path(tmp), device, "bench", data_name)
        _, ema = fit(model, loss_fn, x, None, cfg6, run)
    return ema, run.train_seconds


def sample_ours(day6, cfg6, ema, n: int, steps: int, device, seed: int) -> torch.Tensor:
    path = DiscreteVP.named(cfg6.schedule, cfg6.n_steps)
    return day6.sample(ema, cfg6, path, n, (1, 28, 28), device, seed, steps)[0]


# --- diffusers: the unconditional training example ----------------------------------------------------

def train_theirs(ucfg: UNetConfig, width: int, cfg: Config, x, steps: int, device):
    """train_unconditional.py's loop for `steps`; returns (EMA UNet2DModel, train seconds).

    Per step: t ~ U{0..999}, x_t = add_noise(x0, eps, t), loss = MSE(unet(x_t, t), eps) (Alg. 1 of Ho et
    al.), backward, clip to norm 1, AdamW, LR schedule, EMA. Batches come from the same epoch sampler as
    ours; no horizontal flips (the example flips its images; flipped digits are not digits).
    """
    torch.manual_seed(cfg.seed)
    unet = diffusers_unet(ucfg, width).to(device).train()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.theirs_lr, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr = get_scheduler("cosine", optimizer=opt, num_warmup_steps=cfg.theirs_warmup, num_training_steps=steps)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    g = torch.Generator().manual_seed(cfg.seed)
    start = time.time()
    for step in tqdm(range(steps), desc="train diffusers", leave=False):
        x0 = x[batch_indices(len(x), cfg.theirs_batch, cfg.seed, step)].to(device)   # (B, 1, 28, 28)
        eps = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, 1000, (len(x0),), generator=g).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.theirs_bf16):
            pred = unet(scheduler.add_noise(x0, eps, t), t).sample
        loss = F.mse_loss(pred.float(), eps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr.step()
        ema.step(unet.parameters())
        opt.zero_grad(set_to_none=True)
    seconds = time.time() - start
    ema.copy_to(unet.parameters())
    return unet.eval(), seconds


@torch.no_grad()
def sample_theirs(unet, n: int, steps: int, device, seed: int, batch: int = 250) -> torch.Tensor:
    """DDPMPipeline's loop: x_1 ~ N(0, I), then scheduler.step on `steps` "leading" timesteps."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in tqdm(range(0, n, batch), desc="sample diffusers", leave=False):
        x = torch.randn(min(batch, n - start), 1, 28, 28, generator=g).to(device)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t.to(device)).sample, t, x, generator=g).prev_sample
        out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out)


# --- the race -----------------------------------------------------------------------------------------

def race(name: str, train, sample, budget_s: float, cfg: Config, batch: int) -> dict:
    """Calibrate steps to the budget, train, sample and time: the same treatment for both."""
    train(1)                                  # untimed: the first step builds kernels and caches
    # seconds per step = the difference of a k-step and a 3k-step run over 2k steps, so what a run costs once
    # (building the EMA copy, the final checkpoint) does not inflate the per-step time of a small network
    _, short_s = train(cfg.calib_steps)
    _, long_s = train(3 * cfg.calib_steps)
    step_s = max(long_s - short_s, 1e-9) / (2 * cfg.calib_steps)
    steps = max(1, round(budget_s / step_s))
    print(f"{name}: {step_s:.3f} s/step from {cfg.calib_steps} and {3 * cfg.calib_steps} calibration steps "
          f"-> {steps} steps of batch {batch} in {budget_s:.0f} s")
    cpu_start = time.process_time()
    model, train_s = train(steps)
    cpu_s = time.process_time() - cpu_start
    if abs(train_s / budget_s - 1) > 0.15:
        print(f"{name}: trained {train_s:.0f} s for a {budget_s:.0f} s budget (did other processes load the CPU?)")
    start = time.time()
    samples = sample(model)
    sample_s = time.time() - start
    return {"samples": samples, "params": count_params(model), "batch": batch, "steps": steps,
            "calib_seconds_per_step": round(step_s, 4), "train_seconds": round(train_s, 1),
            "train_cpu_seconds": round(cpu_s, 1),
            "train_images_per_s": round(steps * batch / train_s, 1), "sample_seconds": round(sample_s, 1),
            "samples_per_s": round(len(samples) / sample_s, 2)}


SCORE_KEYS = ("fid", "fid_ci95", "fid_floor", "confident_frac", "class_entropy", "precision", "recall")
ROWS = [("parameters", "params", "{:,}"), ("train steps", "steps", "{:,}"), ("batch", "batch", "{}"),
        ("train seconds", "train_seconds", "{:.0f}"), ("train images/s", "train_images_per_s", "{:.1f}"),
        ("samples/s", "samples_per_s", "{:.2f}"), ("FID (lower is better)", "fid", "{:.2f}"),
        ("FID floor (real digits)", "fid_floor", "{:.2f}"), ("confident fraction", "confident_frac", "{:.3f}"),
        ("class entropy", "class_entropy", "{:.3f}"), ("precision", "precision", "{:.3f}"),
        ("recall", "recall", "{:.3f}")]


def table(ours: dict, theirs: dict) -> str:
    lines = [f"{'':<26}{'ours (day 6)':>14}{'diffusers':>14}{'ours/diffusers':>16}"]
    for label, key, fmt in ROWS:
        ratio = ours[key] / theirs[key] if theirs[key] else float("nan")
        lines.append(f"{label:<26}{fmt.format(ours[key]):>14}{fmt.format(theirs[key]):>14}{ratio:>16.3f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=f"config keys (--key=value): {', '.join(to_dict(DEFAULT))}")
    parser.add_argument("--quick", action="store_true", help="tiny models, seconds of training (tests)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="folder for the JSON and sample grids")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $D30_DATA_DIR or ./data)")
    args, rest = parser.parse_known_args(argv)
    cfg = apply_overrides(QUICK if args.quick else DEFAULT, rest)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start, load_start = time.time(), load_average()
    device = pick_device(cfg.device)
    made_by = machine(device)            # commit and date as the run starts: it rewrites tracked result files
    day6 = load_day6("train")
    cfg6 = day6.PRESETS[cfg.ours_preset]
    ucfg = cfg6.unet
    data = load_images(cfg.dataset, "train", args.data_dir)
    budget_s = 60 * cfg.minutes

    # --- race: the same budget, the same sampler settings
    ours = race("ours", lambda steps: train_ours(day6, cfg6, data.x, steps, device, data.name),
                lambda m: sample_ours(day6, cfg6, m, cfg.n_samples, cfg.sample_steps, device, cfg.seed + 1),
                budget_s, cfg, cfg6.batch_size)
    width = matched_diffusers_unet(ucfg)[0].config.block_out_channels[0]
    theirs = race("diffusers", lambda steps: train_theirs(ucfg, width, cfg, data.x, steps, device),
                  lambda m: sample_theirs(m, cfg.n_samples, cfg.sample_steps, device, cfg.seed + 1),
                  budget_s, cfg, cfg.theirs_batch)

    # --- score with the shared evaluator, report
    args.out.mkdir(parents=True, exist_ok=True)
    for name, result in (("ours", ours), ("diffusers", theirs)):
        scores = score_images(result["samples"], data_dir=args.data_dir)
        result.update({k: scores[k] for k in SCORE_KEYS}, n_samples=scores["n"])
        save_grid(result.pop("samples")[:64], args.out / f"ddpm_vs_diffusers_{name}.png", nrow=8)
    print(table(ours, theirs))
    print(f"FID 95 % intervals ({ours['n_samples']} samples each): ours {ours['fid_ci95']}, "
          f"diffusers {theirs['fid_ci95']}")
    ratios = {key: round(ours[key] / theirs[key], 3) for key in ("fid", "train_images_per_s", "samples_per_s")}
    command = " ".join(["python", "bench/ddpm_vs_diffusers.py", *(sys.argv[1:] if argv is None else argv)])
    cfg6 = dataclasses.replace(cfg6, steps=ours["steps"], sample_every=0)            # what ours ran with
    record = {**made_by, "command": command,
              "load_average_1min": {"start": load_start, "end": load_average()},
              "dataset": data.name, "budget_seconds": budget_s, "wall_time_s": round(time.time() - start, 1),
              "config": to_dict(cfg), "ours_config": to_dict(cfg6), "results": {"ours": ours, "diffusers": theirs},
              "ratios_ours_over_diffusers": ratios}
    (args.out / "ddpm_vs_diffusers.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out / 'ddpm_vs_diffusers.json'} ({record['wall_time_s']:.0f} s in all)")


if __name__ == "__main__":
    cli(main)
