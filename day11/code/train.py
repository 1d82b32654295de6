"""Day 11 — Latent diffusion: compress with an autoencoder, diffuse in its small latent space, decode.

Three models: the KL-regularised autoencoder (autoencoder.py), a U-Net trained with day 6's loss on the scaled
latents z̃0 = mu(x) / s (Rombach et al. 2022, Eq. 2), and, for comparison, the same U-Net recipe on pixels with
about the same training wall-clock as the whole latent pipeline (autoencoder + latent U-Net). Both diffusion
models sample with the same sampler and steps; the latent samples are decoded, x = D(s z̃0).

Measured: training and sampling images/s and FLOPs per training step of both U-Nets; FID vs floor and confident
share of both; the autoencoder's ceiling (PSNR/SSIM and the FID of its reconstructions); the latent space.

References: Rombach et al. 2022 (arXiv:2112.10752); Ho, Jain & Abbeel 2020 (arXiv:2006.11239).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from autoencoder import Autoencoder, AutoencoderConfig, autoencoder_loss, latent_scale
from latents import plot_latent_channels, plot_latent_projection, training_flops

from common.config import cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss
from common.evaluator import score_images, unconfident
from common.loop import fit
from common.metrics import psnr, ssim
from common.nets import UNet, UNetConfig, count_params
from common.paths import DiscreteVP, uniform_grid
from common.plotting import panel, plot_loss_csv, save_grid
from common.predictions import clipped, denoiser
from common.run import Run, write_metrics
from common.samplers import ddpm, sample_batched
from common.samples import save_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
SCORED = ("n", "fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor",
          "confident_ratio", "precision", "recall", "class_entropy")


@dataclass
class Config(TrainConfig):
    """The latent U-Net's recipe (the TrainConfig fields), the autoencoder's and the pixel baseline's."""
    dataset: str = "mnist"
    prediction: str = "v"
    schedule: str = "cosine"
    n_steps: int = 1000
    ae: AutoencoderConfig = field(default_factory=lambda: AutoencoderConfig(channels=16))
    ae_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, sample_every=0, ema_decay=0.99))
    kl_weight: float = 1e-4           # β, per latent number, against the mean per-pixel L1 error
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=4, image_size=7, channels=32,
                                                                mults=(1, 2), attn_res=()))
    pixel_unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1))  # day 6's cpu U-Net
    # day 6's recipe on pixels, its steps chosen so that it trains about as long as autoencoder + latent U-Net
    pixel_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1350, warmup=100, ema_decay=0.995,
                                                                         sample_every=0))
    sample_steps: int = 50            # ancestral steps, the same for both models
    n_samples: int = 1000
    batch: int = 250

    def check(self) -> None:
        from common.config import require
        from common.data import DATASETS
        from common.paths import SCHEDULES
        from common.predictions import PREDICTIONS

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(self.prediction in PREDICTIONS, "prediction", f"choose one of {', '.join(PREDICTIONS)}")
        require(self.schedule in SCHEDULES, "schedule", f"choose one of {', '.join(SCHEDULES)}")
        require(self.kl_weight >= 0, "kl_weight", "choose 0 (no KL term) or a small positive weight, e.g. 1e-4")
        require(self.unet.in_channels == self.ae.latent_channels, "unet.in_channels",
                f"choose ae.latent_channels={self.ae.latent_channels}: the latent U-Net diffuses the latents")
        side = -(-(32 if self.dataset == "cifar10" else 28) // self.ae.factor)   # each stride-2 stage: ceil(n / 2)
        require(self.unet.image_size == side, "unet.image_size",
                f"choose {side}: the latents of {self.dataset} at ae.factor={self.ae.factor} are {side}×{side}")
        require(1 <= self.sample_steps <= self.n_steps, "sample_steps", f"choose 1..n_steps={self.n_steps}")
        require(self.n_samples >= 4, "n_samples", "the evaluator scores 4 or more samples")


PRESETS = {
    "smoke": Config(steps=20, batch_size=32, warmup=5, sample_every=0, ckpt_every=10, log_every=5,
                    ae=AutoencoderConfig(channels=8), ae_train=TrainConfig(steps=20, batch_size=32, warmup=5,
                                                                           sample_every=0, log_every=5),
                    unet=UNetConfig(in_channels=4, image_size=7, channels=16, n_res=1, mults=(1, 2), attn_res=()),
                    pixel_train=TrainConfig(steps=20, batch_size=32, warmup=5, sample_every=0, log_every=5),
                    sample_steps=10, n_samples=32),
    "cpu": Config(steps=1500, batch_size=256, lr=2e-3, warmup=100, ema_decay=0.995, sample_every=0, ckpt_every=500),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999, sample_every=0,
                  ae=AutoencoderConfig(channels=64), ae_train=TrainConfig(steps=20_000, batch_size=256, sample_every=0),
                  unet=UNetConfig(in_channels=4, image_size=7, channels=64, mults=(1, 2), attn_res=(7,)),
                  pixel_unet=UNetConfig(channels=64, attn_res=(7, 14)),
                  pixel_train=TrainConfig(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999,
                                          sample_every=0),
                  sample_steps=250, n_samples=10_000),
}


def diffusion_trainer(cfg: Config, path: DiscreteVP, net_cfg: UNetConfig):
    """A U-Net (seeded) and day 6's loss on whatever it is given: pixels, or scaled latents."""
    torch.manual_seed(cfg.seed)

    def loss_fn(net, x0, y, generator):
        return diffusion_loss(net, x0, path, cfg.prediction, generator)[0].mean()
    return UNet(net_cfg), loss_fn


def draw(denoise, shape, cfg: Config, path, device) -> tuple[torch.Tensor, float]:
    """cfg.n_samples ancestral samples of `shape` from fixed noise; seconds per sample."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    x1 = torch.randn(cfg.n_samples, *shape, generator=g)
    start = time.time()
    x = sample_batched(ddpm, denoise, x1, uniform_grid(path, cfg.sample_steps), path=path, device=device,
                       batch=cfg.batch, bf16=cfg.bf16, generator=g)
    return x, (time.time() - start) / cfg.n_samples


@torch.no_grad()
def decode(ae: Autoencoder, z: torch.Tensor, s: float, size, device, batch: int = 500) -> torch.Tensor:
    """Images in [-1, 1] from scaled latents: D(s z̃), clipped."""
    return torch.cat([ae.decode(s * chunk.to(device), size).clamp(-1, 1).cpu() for chunk in z.split(batch)])


@torch.no_grad()
def encode(ae: Autoencoder, x: torch.Tensor, s: float, device, batch: int = 500) -> torch.Tensor:
    """Scaled latent means mu(x) / s, on the CPU."""
    return torch.cat([ae.encode(chunk.to(device))[0].cpu() for chunk in x.split(batch)]) / s


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    test = load_images(cfg.dataset, "test", args.data_dir)
    run = Run.from_args(args, data.name)
    path = DiscreteVP.named(cfg.schedule, cfg.n_steps)
    size = tuple(data.x.shape[-2:])

    # --- 1. the autoencoder, and the scale that brings its latents to unit variance
    ae_run = run.part("autoencoder")
    torch.manual_seed(cfg.seed)
    ae, ae_ema = fit(Autoencoder(cfg.ae), autoencoder_loss(cfg.kl_weight), data.x, None, cfg.ae_train, ae_run)
    s = latent_scale(ae_ema, data.x[:2000].to(run.device))
    z_train = encode(ae_ema, data.x, s, run.device)                           # (N, c, H/f, W/f), std ~1

    # --- 2. the latent U-Net, then 3. the pixel U-Net on about the same wall-clock
    latent_run, pixel_run = run.part("latent"), run.part("pixel")
    net, loss_fn = diffusion_trainer(cfg, path, cfg.unet)
    _, latent_ema = fit(net, loss_fn, z_train, None, cfg, latent_run)
    pixel_net, pixel_loss = diffusion_trainer(cfg, path, cfg.pixel_unet)
    _, pixel_ema = fit(pixel_net, pixel_loss, data.x, None, cfg.pixel_train, pixel_run)
    if not run.is_main:  # under torchrun, the other processes only helped train
        return

    # --- sample both with the same sampler and steps; latents are not clipped, decoded images are
    z, latent_s = draw(denoiser(latent_ema, cfg.prediction, path), z_train.shape[1:], cfg, path, run.device)
    t0 = time.time()
    samples = decode(ae_ema, z, s, size, run.device)
    latent_s += (time.time() - t0) / cfg.n_samples
    pixel_samples, pixel_s = draw(clipped(denoiser(pixel_ema, cfg.prediction, path), path), data.x.shape[1:], cfg,
                                  path, run.device)

    # --- the autoencoder's ceiling: reconstructions of held-out images
    x_test = test.x[: cfg.n_samples]
    recon = decode(ae_ema, encode(ae_ema, x_test, s, run.device), s, size, run.device)
    scores = {name: score_images(x, dataset=data.name, data_dir=args.data_dir)
              for name, x in (("latent", samples), ("pixel", pixel_samples), ("reconstructions", recon))}

    # --- outputs
    out = run.out
    save_samples_npz(out / "samples.npz", samples)
    for name, x in (("samples", samples), ("samples_pixel", pixel_samples)):
        save_grid(x[:100], out / f"{name}.png", nrow=10, marked=unconfident(x[:100], data.name))
    panel([list(x_test[:10]), list(recon[:10])], out / "recon.png", row_labels=["test image", "reconstruction"])
    plot_latent_channels(z_train[:8], data.x[:8], out / "latents.png")
    plot_latent_projection(z_train[:2000], data.y[:2000], out / "latent_pca.png")
    plot_loss_csv(latent_run.out / "train_log.csv", out / "loss.png", title="latent U-Net training loss")
    times = {"autoencoder": ae_run.train_seconds, "latent": latent_run.train_seconds, "pixel": pixel_run.train_seconds}
    images = {"autoencoder": cfg.ae_train.steps * cfg.ae_train.batch_size, "latent": cfg.steps * cfg.batch_size,
              "pixel": cfg.pixel_train.steps * cfg.pixel_train.batch_size}
    per_s = {k: round(images[k] / max(times[k], 1e-9), 1) for k in times}
    flops = {"latent": training_flops(latent_ema, z_train[:1]), "pixel": training_flops(pixel_ema, data.x[:1])}
    metrics = {
        "autoencoder": {"params": count_params(ae), "factor": cfg.ae.factor, "latent_shape": list(z_train.shape[1:]),
                        "compression": data.x[0].numel() / z_train[0].numel(), "scale_s": round(s, 5),
                        "scaled_latent_std": round(z_train.std().item(), 4),
                        "psnr_db": round(psnr(recon, x_test).mean().item(), 2),
                        "ssim": round(ssim(recon, x_test).mean().item(), 4),
                        **{f"recon_{k}": scores["reconstructions"].get(k) for k in SCORED}},
        "latent": {"params": count_params(latent_ema), "train_seconds": round(times["latent"], 1),
                   "pipeline_train_seconds": round(times["latent"] + times["autoencoder"], 1),
                   "train_images_per_s": per_s["latent"], "flops_per_image_step": flops["latent"],
                   "sample_seconds_per_image": round(latent_s, 5), **{k: scores["latent"].get(k) for k in SCORED}},
        "pixel": {"params": count_params(pixel_ema), "train_seconds": round(times["pixel"], 1),
                  "train_images_per_s": per_s["pixel"], "flops_per_image_step": flops["pixel"],
                  "sample_seconds_per_image": round(pixel_s, 5), **{k: scores["pixel"].get(k) for k in SCORED}},
        "autoencoder_train_images_per_s": per_s["autoencoder"],
        "aims": {"latent_over_pixel_train_images_per_s": round(per_s["latent"] / per_s["pixel"], 2)},
    }
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"latent: FID {scores['latent'].get('fid_ratio')}× floor at {per_s['latent']} training images/s; "
          f"pixel: {scores['pixel'].get('fid_ratio')}× at {per_s['pixel']}; reconstructions "
          f"{scores['reconstructions'].get('fid_ratio')}×; results in {out}")


if __name__ == "__main__":
    cli(main)
