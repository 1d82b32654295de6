"""Day 02 — Denoising autoencoders: a network trained to undo Gaussian noise learns E[x0 | xt].

Four blind denoisers (a plain convolutional DAE and the shared U-Net, each trained at one noise
level σ and over a range of σ) are scored on a train-σ × test-σ PSNR/SSIM matrix, next to the noisy
input and the ideal denoiser of the training set. The radial power spectrum of their outputs
measures over-smoothing, and iterating a DAE from pure noise shows why a denoiser alone is not a
generator: the chains collapse (evaluator FID, class entropy, share of confident samples). A loss
ablation retrains the σ-range ConvDAE under L1 and Charbonnier penalties with the same budget, and the
held-out digits the U-Net denoises best and worst are shown with their classes.

References:
    Vincent, Larochelle, Bengio & Manzagol (2008), "Extracting and composing robust features with
        denoising autoencoders", ICML.
    Vincent (2011), "A connection between score matching and denoising autoencoders", Neural
        Computation 23(7).
    Efron (2011), "Tweedie's formula and selection bias", JASA 106(496).
    Zhang, Zuo, Chen, Meng & Zhang (2017), "Beyond a Gaussian denoiser: residual learning of deep
        CNN for image denoising" (DnCNN; blind denoising over a σ range), IEEE TIP 26(7).
    Charbonnier, Blanc-Féraud, Aubert & Barlaud (1994), "Two deterministic half-quadratic
        regularization algorithms for computed imaging", ICIP (the penalty √(e² + ε²)).
    Lai, Huang, Ahuja & Yang (2017), "Deep Laplacian pyramid networks for fast and accurate
        super-resolution", CVPR (Charbonnier loss with ε = 1e-3 for image restoration).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from common.config import UserError, cli, parse_args
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
    ablation_losses: tuple[str, ...] = ("l1", "charbonnier")  # conv-range retrained under each (L2 is conv-range)
    charbonnier_eps: float = 1e-3               # ε of the Charbonnier penalty √(e² + ε²)
    n_extremes: int = 8                         # best and worst denoised test digits shown

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        import math

        from common.config import require
        from common.data import DATASETS
        from common.samples import MIN_SCORED

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(self.conv_channels >= 1, "conv_channels", "choose a width of at least 1, e.g. 32")
        require(0 < self.sigma_fixed < math.inf, "sigma_fixed", "choose a positive noise level, e.g. 0.5")
        require(0 <= self.sigma_min < math.inf, "sigma_min", "choose a noise level >= 0, e.g. 0.1")
        require(0 < self.sigma_max < math.inf and self.sigma_max >= self.sigma_min, "sigma_max",
                f"choose a positive noise level >= sigma_min={self.sigma_min}")
        require(len(self.test_sigmas) >= 1 and all(0 < s < math.inf for s in self.test_sigmas), "test_sigmas",
                "choose one or more positive noise levels, e.g. 0.1,0.5,1")
        require(self.n_test >= 1, "n_test", "choose at least 1 test image")
        require(len(self.iterations) >= 1 and min(self.iterations) >= 1, "iterations",
                "choose one or more numbers of denoiser applications K >= 1, e.g. 1,2,5")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"the evaluator scores {MIN_SCORED} or more samples")
        require(0 < self.charbonnier_eps < math.inf, "charbonnier_eps", "choose a small positive ε, e.g. 0.001")
        for loss in self.ablation_losses:  # the penalties refuse an unknown name
            penalty(loss, self.charbonnier_eps)
        require(1 <= self.n_extremes <= self.n_test, "n_extremes", f"choose 1..n_test={self.n_test} images")


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
    return (cfg.sigma_min, cfg.sigma_max) if "-range" in name else (cfg.sigma_fixed, cfg.sigma_fixed)


def blind_t(x: torch.Tensor) -> torch.Tensor:
    """t = 0 for every image: the U-Net, like the ConvDAE, is never told σ (a blind denoiser)."""
    return torch.zeros(len(x), device=x.device)


def dae_loss(lo: float, hi: float, penalty: Callable[[torch.Tensor], torch.Tensor] = torch.square):
    """Vincent et al. (2008) with Gaussian corruption: E penalty(D(x0 + σ·eps) − x0), σ ~ U[lo, hi].

    With the square (L2) the best D is the posterior mean E[x0 | xt]; with |e| (L1) it is the per-pixel
    posterior median; Charbonnier's √(e² + ε²) is quadratic for |e| ≪ ε and like L1 beyond.
    """
    def loss_fn(model, x0, y, generator):
        xt = corrupt(x0, sample_sigma(len(x0), lo, hi, generator), generator)
        return penalty(model(xt, blind_t(xt)) - x0).mean()
    return loss_fn


def penalty(name: str, eps: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-pixel penalty of a loss name: l2 e², l1 |e|, charbonnier √(e² + ε²) (Charbonnier et al. 1994)."""
    penalties = {"l2": torch.square, "l1": torch.abs, "charbonnier": lambda e: torch.sqrt(e * e + eps**2)}
    if name not in penalties:
        raise UserError(f"--ablation_losses: unknown loss '{name}'; choose from {', '.join(penalties)}")
    return penalties[name]


def ablation_names(cfg: Config) -> list[str]:
    """The loss ablation's extra models: conv-range retrained under each other loss, same budget and seed."""
    return [f"conv-range-{loss}" for loss in cfg.ablation_losses]


def loss_for(name: str, cfg: Config):
    """The training loss of a model name: L2 for the four denoisers, the named penalty for the ablation."""
    loss = name.removeprefix("conv-range-") if name in ablation_names(cfg) else "l2"
    return dae_loss(*sigma_range(name, cfg), penalty(loss, cfg.charbonnier_eps))


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


def scores(outs: dict[float, torch.Tensor], x: torch.Tensor) -> dict:
    """Mean PSNR and SSIM of a denoiser's outputs {σ: x̂0} against the clean x, keyed by f"{σ:g}"."""
    return {metric: {f"{s:g}": round(float(fn(out, x).mean()), 4) for s, out in outs.items()}
            for metric, fn in (("psnr_db", psnr), ("ssim", ssim))}


def extremes(x_hat: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, k: int) -> dict:
    """The k test images denoised best and worst by per-image PSNR, with their classes; PSNR by class."""
    p = psnr(x_hat, x).cpu()                                                # (N,)
    order = p.argsort(descending=True)
    def pick(idx):
        return [{"index": int(i), "label": int(labels[i]), "psnr_db": round(float(p[i]), 2)} for i in idx]
    by_class = {str(c): round(float(p[labels == c].mean()), 2) for c in labels.unique().tolist()}
    return {"best": pick(order[:k]), "worst": pick(order[-k:].flip(0)), "psnr_by_class": by_class,
            "psnr_quartiles": [round(float(q), 2) for q in p.quantile(torch.tensor([0.25, 0.5, 0.75]))]}


def plot_collapse(iterated: dict[str, dict], real: dict, ks, path: Path) -> None:
    """One panel per score of the iterated chains against K, real test digits as a dashed reference line."""
    keys = ("confident_frac", "precision", "recall")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), sharey=True, layout="constrained")
    for ax, key in zip(axes, keys):
        for name, by_k in iterated.items():
            ax.plot(ks, [by_k[str(k)].get(key, np.nan) for k in ks], marker="o", ms=3, label=name)
        if key in real:
            ax.axhline(real[key], color="grey", ls="--", lw=1, label="real test digits")
        ax.set(xscale="log", xlabel="K (denoiser applications)", title=key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of samples")
    axes[0].legend(fontsize=8, loc="center left")  # the curves sit low, the real-data line high
    fig.suptitle("iterated DAE from pure noise")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --- the experiment -----------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    test = load_images(cfg.dataset, "test", args.data_dir)
    x_test, y_test = test.x[: cfg.n_test].to(run.device), test.y[: cfg.n_test]  # (N, 1, 28, 28), (N,)
    g = torch.Generator().manual_seed(cfg.seed)

    # --- train four blind denoisers and the loss ablation, each in its own folder (--resume: see Run.part)
    denoisers, models = {}, {}
    for name in (*MODELS, *ablation_names(cfg)):
        sub = run.part(name)
        torch.manual_seed(cfg.seed)  # initial weights fixed: the same in every process, run and resumed run
        _, ema = fit(build(name, cfg), loss_for(name, cfg), data.x, None, cfg, sub)
        denoisers[name] = denoiser(ema, cfg.bf16)
        models[name] = {"params": count_params(ema), "sigma_train": list(sigma_range(name, cfg)),
                        "train_seconds": round(sub.train_seconds, 1)}
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    plot_curves({name: read_log(run.out / name / "train_log.csv") for name in MODELS}, run.out / "losses.png",
                "step", "MSE", "training loss (x0 in [-1, 1])", logy=True)

    # --- noise mismatch: every denoiser at every test σ, next to the noisy input and the ideal denoiser
    noisy = {s: corrupt(x_test, torch.full((len(x_test),), s), g) for s in cfg.test_sigmas}
    train_x = data.x.to(run.device)
    outputs = {"noisy": noisy,  # not clamped: its PSNR is 20 log10(2 / σ)
               **{name: {s: D(xt) for s, xt in noisy.items()} for name, D in denoisers.items() if name in MODELS},
               "ideal": {s: ideal_denoiser(xt, train_x, s) for s, xt in noisy.items()}}
    by_row = {row: scores(outs, x_test) for row, outs in outputs.items()}
    table = {metric: {row: s[metric] for row, s in by_row.items()} for metric in ("psnr_db", "ssim")}
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

    def hf_power(x_hat):  # high-frequency power of x̂0 as a share of the clean images'
        return round(float(radial_power_spectrum(x_hat)[1][high].sum() / spectra["clean"][1][high].sum()), 4)
    hf_ratio = {row: hf_power(outs[s0]) for row, outs in outputs.items()}

    # --- loss ablation: conv-range trained with L2 (above), L1 and Charbonnier; same data, budget and σ range
    ablation = {"l2": {**by_row["conv-range"], "hf_power_ratio": hf_ratio["conv-range"]}}
    for name, loss in zip(ablation_names(cfg), cfg.ablation_losses):
        outs = {s: denoisers[name](xt) for s, xt in noisy.items()}
        ablation[loss] = {**scores(outs, x_test), "hf_power_ratio": hf_power(outs[s0])}
    plot_curves({loss: (cfg.test_sigmas, list(r["psnr_db"].values())) for loss, r in ablation.items()},
                run.out / "loss_ablation.png", "test σ", "PSNR (dB)",
                f"conv-range DAE trained with each loss ({len(x_test)} test images)")

    # --- best and worst cases: the U-Net's per-image PSNR at σ = sigma_fixed
    cases = extremes(outputs["unet-range"][s0], x_test, y_test, cfg.n_extremes)
    for which in ("best", "worst"):
        idx = [c["index"] for c in cases[which]]
        panel([list(x_test[idx].cpu()), list(noisy[s0][idx].cpu()), list(outputs["unet-range"][s0][idx].cpu())],
              run.out / f"{which}_cases.png", ["clean", f"σ = {s0:g}", "unet-range"],
              [f"{c['psnr_db']:.1f} dB\nclass {c['label']}" for c in cases[which]])

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
    plot_collapse(iterated, real, cfg.iterations, run.out / "collapse.png")

    # --- outputs
    metrics = {"models": models, **table, "hf_power_ratio": hf_ratio, "loss_ablation": ablation,
               "extremes": {"model": "unet-range", "sigma": s0, **cases}, "iterated": iterated, "samples": samples,
               "real_test": real}
    write_metrics(run.out, metrics, cfg, run, time.time() - start)


if __name__ == "__main__":
    cli(main)
