"""Day 30 starter — your experiment: one question, one `variant` field, the baseline is the same code with it off.

Trains day 6's small U-Net (v-prediction, cosine schedule) on MNIST with common.loop.fit, samples it by DDIM, scores
FID / floor with the evaluator and writes metrics.json. Edit `loss_fn` (or `sample`) where the variant differs; run
every variant on the same seeds: `python day30/template/train.py --variant=yours --seed=1 --out=runs/yours-1`.

References: Ho et al. 2020 (arXiv:2006.11239); Song, Meng & Ermon 2021 (arXiv:2010.02502).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.config import cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss, min_snr_weight
from common.evaluator import score_images
from common.loop import fit
from common.nets import UNet, UNetConfig
from common.paths import DiscreteVP, uniform_grid
from common.predictions import clipped, denoiser
from common.run import Run, write_metrics
from common.samplers import ddim, sample_batched
from common.training import TrainConfig

HERE = Path(__file__).resolve().parent
VARIANTS = ("baseline", "min-snr")          # add yours here


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    variant: str = "baseline"                # the one thing your experiment changes
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1))
    sample_steps: int = 10                   # DDIM steps (network calls per sample)
    n_samples: int = 1000                    # compare variants at the same n: FID is biased at finite n

    def check(self) -> None:
        from common.config import require
        from common.samples import MIN_SCORED

        require(self.variant in VARIANTS, "variant", f"choose one of {', '.join(VARIANTS)}")
        require(self.sample_steps >= 1, "sample_steps", "choose 1 or more")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")


PRESETS = {
    "smoke": Config(steps=2, batch_size=8, warmup=1, sample_every=0, ckpt_every=2, log_every=1,
                    unet=UNetConfig(channels=8, n_res=1, mults=(1, 2), attn_res=()), sample_steps=2, n_samples=8),
    "cpu": Config(steps=1500, batch_size=128, lr=2e-3, warmup=100, ema_decay=0.995, sample_every=0, ckpt_every=500),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999, sample_every=0,
                  ckpt_every=2000, unet=UNetConfig(channels=64, attn_res=(7, 14)), n_samples=10_000),
}
PATH = DiscreteVP.named("cosine", 1000)


def loss_fn(cfg: Config):
    """The training loss: v-prediction MSE (baseline) or with Min-SNR-5 weights (Hang et al. 2023)."""
    weight = min_snr_weight("v", 5.0) if cfg.variant == "min-snr" else None

    def loss(net, x0, y, generator):
        return diffusion_loss(net, x0, PATH, "v", generator, weight=weight)[0].mean()
    return loss


def sample(model, cfg: Config, shape, run: Run) -> torch.Tensor:
    """n_samples by DDIM from noises fixed by the seed: every variant of a seed starts from the same noises."""
    noise = torch.randn(cfg.n_samples, *shape, generator=torch.Generator().manual_seed(cfg.seed + 1000))
    denoise = clipped(denoiser(model, "v", PATH), PATH)
    return sample_batched(ddim, denoise, noise, uniform_grid(PATH, cfg.sample_steps), path=PATH, device=run.device,
                          bf16=cfg.bf16).clamp(-1, 1)


def main(argv=None):
    cfg, args = parse_args(PRESETS, HERE / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    # --- train
    torch.manual_seed(cfg.seed)
    _, ema = fit(UNet(cfg.unet), loss_fn(cfg), data.x, None, cfg, run)
    # --- sample and score
    x = sample(ema.eval(), cfg, data.x.shape[1:], run)
    scores = score_images(x, dataset=data.name, data_dir=args.data_dir)
    metrics = {"variant": cfg.variant, "seed": cfg.seed, "train_seconds": round(run.train_seconds, 1),
               "nfe": cfg.sample_steps, **{k: scores.get(k) for k in ("fid", "fid_ci95", "fid_floor", "fid_ratio",
                                                                      "confident_ratio")}}
    metrics["headline"] = f"{cfg.variant}, seed {cfg.seed}: FID {scores.get('fid_ratio')}× floor"
    write_metrics(run.out, metrics, cfg, run, time.time() - start)
    print(metrics["headline"])


if __name__ == "__main__":
    cli(main)
