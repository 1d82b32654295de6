"""Day 02 — Denoising autoencoders: a network trained to undo Gaussian noise learns E[x0 | xt].

Four blind denoisers (a plain convolutional DAE and the shared U-Net, each trained at one noise
level σ and over a range of σ) are scored on a train-σ × test-σ PSNR/SSIM matrix, next to the noisy
input and the ideal denoiser of the training set. The radial power spectrum of their outputs
measures over-smoothing, and iterating a DAE from pure noise shows why a denoiser alone is not a
generator: the chains collapse (evaluator FID, class entropy, share of confident samples).

References:
    Vincent, Larochelle, Bengio & Manzagol (2008), "Extracting and composing robust features with
        denoising autoencoders", ICML.
    Vincent (2011), "A connection between score matching and denoising autoencoders", Neural
        Computation 23(7).
    Efron (2011), "Tweedie's formula and selection bias", JASA 106(496).
    Zhang, Zuo, Chen, Meng & Zhang (2017), "Beyond a Gaussian denoiser: residual learning of deep
        CNN for image denoising" (DnCNN; blind denoising over a σ range), IEEE TIP 26(7).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.config import cli, parse_args
from common.data import load_images
from common.denoisers import mixture_posterior_mean
from common.evaluator import score_images
from common.loop import fit
from common.metrics import psnr, ssim
from common.nets import UNet, UNetConfig, count_params
from common.plotting import panel, plot_curves, save_gif, save_grid
from common.run import Run, write_metrics
from common.samples import save_samples_npz
from common.training import TrainConfig
from dae import ConvDAE, ConvDAEConfig, corrupt, iterate, radial_power_spectrum, sample_sigma

DAY = Path(__file__).resolve().parents[1]
MODELS = ("conv-fixed", "conv-range", "unet-fixed", "unet-range")
KEPT_SCORES = ("fid", "fid_ci95", "fid_floor", "class_entropy", "confident_frac", "precision", "recall")


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    conv_channels: int = 32                     # ConvDAE width (2x in its 7x7 code)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1, attn_res=()))  # no attention
    sigma_fixed: float = 0.5                    # "-fixed" models see only this σ (images in [-1, 1])
    sigma_min: float = 0.1                      # "-range" models: σ ~ U[sigma_min, sigma_max] per image
    sigma_max: float = 1.0
    test_sigmas: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5)
    n_test: int = 1000                          # test images for PSNR / SSIM / spectra
    iterations: tuple[int, ...] = (1, 2, 5, 10, 20)  # K at which the iterated DAE is scored
    n_samples: int = 1000                       # chains started from pure noise


PRESETS = {
    "smoke": Config(steps=6, batch_size=16, warmup=2, bf16=False, log_every=2, sample_every=0, ckpt_every=6,
                    conv_channels=8, unet=UNetConfig(channels=8, mults=(1, 2), n_res=1, attn_res=()), n_test=64,
                    iterations=(1, 2), n_samples=64),
    "cpu": Config(steps=300, batch_size=64, warmup=30, ema_decay=0.995, sample_every=0, ckpt_every=150),
    "gpu": Config(steps=20_000, batch_size=256, lr=1e-3, warmup=500, ema_decay=0.9995, conv_channels=64,
                  unet=UNetConfig(channels=64, n_res=1, attn_res=()), sample_every=0, ckpt_every=2_000,
                  iterations=(1, 2, 5, 10, 20, 50), n_samples=10_000),
}


# --- the models and their objective -------------------------------------------------------------------

def build(name: str, cfg: Config) -> torch.nn.Module:
    if name.startswith("conv"):
        return ConvDAE(ConvDAEConfig(channels=cfg.conv_channels))
    return UNet(cfg.unet)


def sigma_range(name: str, cfg: Config) -> tuple[float, float]:
    return (cfg.sigma_min, cfg.sigma_max) if name.endswith("range") else (cfg.sigma_fixed, cfg.sigma_fixed)


def blind_t(x: torch.Tensor) -> torch.Tensor:
    """t = 0 for every image: the U-Net, like the ConvDAE, is never told σ (a blind denoiser)."""
    return torch.zeros(len(x), device=x.device)


def dae_loss(lo: float, hi: float):
    """Vincent et al. (2008) with Gaussian corruption: E ||D(x0 + σ·eps) − x0||², σ ~ U[lo, hi]."""
    def loss_fn(model, x0, y, generator):
        xt = corrupt(x0, sample_sigma(len(x0), lo, hi, generator), generator)
        return (model(xt, blind_t(xt)) - x0).pow(2).mean()
    return loss_fn


def denoiser(model: torch.nn.Module, bf16: bool):
    """The trained network as a function xt -> x̂0 in [-1, 1]: no gradients, batched, float32 out."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def denoise(xt: torch.Tensor) -> torch.Tensor:
        outs = []
        for chunk in xt.split(128):  # small batches stay in cache: ~2x faster on a CPU
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                outs.append(model(chunk, blind_t(chunk)).float().clamp(-1, 1))
        return torch.cat(outs)
    return denoise


def ideal_denoiser(xt: torch.Tensor, data: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | xt] for x0 uniform over `data` and xt = x0 + σ·eps: a softmax-weighted average of the data
    (common.denoisers' exact denoiser at alpha = 1). At small σ it snaps to the nearest training image."""
    one = torch.ones(len(xt), dtype=torch.float64)
    return mixture_posterior_mean(xt, data, 0.0, one, sigma * one).to(xt.dtype)


def evaluate(x: torch.Tensor, run: Run, data_dir: str | None) -> dict:
    """The scores of the run's dataset's evaluator; a dataset without one gets {"scores_skipped": why}."""
    return score_images(x.cpu(), dataset=run.dataset, data_dir=data_dir)


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    log = np.genfromtxt(path, delimiter=",", names=True)
    return log["step"], log["loss"]


# --- the experiment -----------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    x_test = load_images(cfg.dataset, "test", args.data_dir).x[: cfg.n_test].to(run.device)  # (N, 1, 28, 28)
    g = torch.Generator().manual_seed(cfg.seed)

    # --- train four blind denoisers, each in its own folder (own checkpoint; --resume applies per model)
    denoisers, models = {}, {}
    for name in MODELS:
        sub = Run(run.out / name, run.device, run.preset, run.dataset, run.resume)
        _, ema = fit(build(name, cfg), dae_loss(*sigma_range(name, cfg)), data.x, None, cfg, sub)
        denoisers[name] = denoiser(ema, cfg.bf16)
        models[name] = {"params": count_params(ema), "sigma_train": list(sigma_range(name, cfg)),
                        "train_seconds": round(sub.train_seconds, 1)}
    plot_curves({name: read_log(run.out / name / "train_log.csv") for name in MODELS}, run.out / "losses.png",
                "step", "MSE", "training loss (x0 in [-1, 1])", logy=True)

    # --- noise mismatch: every denoiser at every test σ, next to the noisy input and the ideal denoiser
    noisy = {s: corrupt(x_test, torch.full((len(x_test),), s), g) for s in cfg.test_sigmas}
    train_x = data.x.to(run.device)
    outputs = {"noisy": noisy,  # not clamped: its PSNR is 20 log10(2 / σ)
               **{name: {s: D(xt) for s, xt in noisy.items()} for name, D in denoisers.items()},
               "ideal": {s: ideal_denoiser(xt, train_x, s) for s, xt in noisy.items()}}
    table = {metric: {row: {f"{s:g}": round(float(fn(out, x_test).mean()), 4) for s, out in outs.items()}
                      for row, outs in outputs.items()}
             for metric, fn in (("psnr_db", psnr), ("ssim", ssim))}
    for metric, label in (("psnr_db", "PSNR (dB)"), ("ssim", "SSIM")):
        plot_curves({row: (cfg.test_sigmas, list(v.values())) for row, v in table[metric].items()},
                    run.out / f"{metric.split('_')[0]}_vs_sigma.png", "test σ", label,
                    f"{label} of x̂0 against x0 ({len(x_test)} test images)")
    s0 = cfg.sigma_fixed
    panel([list(x_test[:8].cpu())] + [list(outs[s0][:8].cpu()) for outs in outputs.values()],
          run.out / "reconstructions.png", ["clean", *outputs])
    panel([[outs[s][0].cpu() for s in cfg.test_sigmas] for outs in outputs.values()],
          run.out / "sigma_sweep.png", list(outputs), [f"σ = {s:g}" for s in cfg.test_sigmas])

    # --- over-smoothing: the posterior mean keeps less high-frequency power than the clean images
    spectra = {"clean": radial_power_spectrum(x_test)} | {row: radial_power_spectrum(outs[s0])
                                                         for row, outs in outputs.items()}
    plot_curves({row: (r.tolist(), p.cpu().tolist()) for row, (r, p) in spectra.items()}, run.out / "spectrum.png",
                "radius (cycles per image)", "mean power", f"radial power spectrum at σ = {s0:g}", logy=True)
    high = spectra["clean"][0] >= x_test.shape[-1] // 4  # the upper half of the frequency radii
    hf_ratio = {row: round(float(p[high].sum() / spectra["clean"][1][high].sum()), 4)
                for row, (_, p) in spectra.items() if row != "clean"}

    # --- a DAE is not a generator: iterate it from pure noise and measure the collapse
    x_noise = torch.randn((cfg.n_samples, *data.x.shape[1:]), generator=g).to(run.device)
    chains, iterated = {}, {}
    for name in ("conv-range", "unet-range"):
        chains[name] = list(iterate(denoisers[name], x_noise, max(cfg.iterations)))  # K + 1 states (N, 1, 28, 28)
        iterated[name] = {str(k): {key: v for key, v in evaluate(chains[name][k], run, args.data_dir).items()
                                   if key in KEPT_SCORES} for k in cfg.iterations}
        save_grid(chains[name][-1][:100].cpu(), run.out / f"iterated_{name}.png", nrow=10)
    final = chains["unet-range"][-1]
    save_gif([x[:16].cpu() for x in chains["unet-range"]], run.out / "iterated_unet-range.gif", nrow=4,
             duration_ms=150)
    save_samples_npz(run.out / "samples.npz", final)
    samples = {"model": "unet-range", "k": max(cfg.iterations), **evaluate(final, run, args.data_dir)}
    real = {key: v for key, v in evaluate(x_test, run, args.data_dir).items() if key in KEPT_SCORES}  # reference
    plot_curves({f"{name}: {key}": (cfg.iterations, [s.get(key, np.nan) for s in scores.values()])
                 for name, scores in iterated.items() for key in ("confident_frac", "precision", "recall")},
                run.out / "collapse.png", "K (denoiser applications from pure noise)", "share of samples",
                "iterated DAE from noise: confident, precision, recall", logx=True)

    # --- outputs
    metrics = {"models": models, **table, "hf_power_ratio": hf_ratio, "iterated": iterated, "samples": samples,
               "real_test": real}
    write_metrics(run.out, metrics, cfg, run, time.time() - start)


if __name__ == "__main__":
    cli(main)
