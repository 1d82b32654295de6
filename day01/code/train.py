"""Day 01 — Gaussian noise basics: add N(0, σ²) noise to MNIST over a ladder of σ and check every
measured MSE, PSNR, SNR against its closed form (including the exact effect of clipping back to
[-1, 1]); put variance-exploding x + σε next to variance-preserving √(1−β) x + √β ε; compare ladders
of noise levels (linear, quadratic, geometric, Karras) by what each level does to the image; and see
why we will *learn* denoisers: the best linear denoiser (Wiener), fitted in closed form, beats
blurring and clipping at every σ, yet stays far from clean at high noise.

References:
    Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (Eq. 2:
        the variance-preserving step √(1−β) x + √β ε).
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), "Score-Based Generative Modeling
        through Stochastic Differential Equations", arXiv:2011.13456 (§3.4: VE and VP).
    Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to
        structural similarity", IEEE TIP 13(4) (SSIM).
    Kay (1993), "Fundamentals of Statistical Signal Processing: Estimation Theory", §12 (Wiener).
    Song & Ermon (2019), "Generative Modeling by Estimating Gradients of the Data Distribution",
        arXiv:1907.05600 (§4.2: a geometric ladder of noise levels).
    Karras, Aittala, Aila & Laine (2022), "Elucidating the Design Space of Diffusion-Based Generative
        Models", arXiv:2206.00364 (Eq. 5: σ_i spaced uniformly in σ^(1/ρ), ρ = 7).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common.config import UserError, cli, parse_args
from common.data import load_images
from common.metrics import psnr, ssim
from common.plotting import panel, plot_curves, save_gif
from common.run import Run, write_metrics
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend
from denoisers import Wiener, clipped_fraction, clipped_mse, gaussian_blur  # day01/code/denoisers.py

DAY = Path(__file__).resolve().parents[1]


@dataclass
class Config:
    dataset: str = "mnist"
    sigmas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)  # the noise ladder
    n_fit: int = 4000        # train images for the Wiener covariance
    n_tune: int = 1000       # of those, the ones that choose the blur width and check the Wiener MSE in-sample
    n_eval: int = 1000       # test images: every reported number
    blur_widths: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)  # candidate stds (pixels)
    n_show: int = 4          # digits in the figures
    gif_frames: int = 24
    ladders: tuple[str, ...] = ("linear", "quadratic", "geometric", "karras")  # σ-progressions from min to max σ
    ladder_levels: int = 10  # noise levels in each progression
    seed: int = 0

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(len(self.sigmas) >= 1 and all(0 < s < math.inf for s in self.sigmas), "sigmas",
                "choose one or more positive noise levels, e.g. 0.1,0.5,1")
        require(self.n_fit >= 2, "n_fit", "fit the Wiener covariance on at least 2 images")
        require(1 <= self.n_tune <= self.n_fit, "n_tune", f"choose 1..n_fit={self.n_fit} of the fitted images")
        require(self.n_show >= 1, "n_show", "show at least 1 digit")
        require(self.n_eval >= max(2, self.n_show), "n_eval", f"choose at least max(2, n_show={self.n_show}) images")
        require(len(self.blur_widths) >= 1 and all(0 <= w < math.inf for w in self.blur_widths), "blur_widths",
                "choose one or more widths >= 0 in pixels, e.g. 0,1,2")
        require(self.gif_frames >= 1, "gif_frames", "choose at least 1 frame")
        for kind in self.ladders:  # the real progressions refuse an unknown name or fewer than 2 levels
            sigma_ladder(kind, self.ladder_levels, min(self.sigmas), max(self.sigmas))


PRESETS = {
    "smoke": Config(sigmas=(0.1, 1.0), n_fit=500, n_tune=200, n_eval=100, blur_widths=(0.0, 1.0), gif_frames=3,
                    ladder_levels=4),
    "cpu": Config(),
    "gpu": Config(n_fit=60000, n_eval=10000),  # full MNIST when torchvision has it
}


def db(ratio: float) -> float:
    return 10 * math.log10(ratio)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error over every pixel of the set."""
    return float((a.double() - b.double()).pow(2).mean())


def rms(a: torch.Tensor) -> float:
    return float(a.double().pow(2).mean().sqrt())


def vp_beta(sigma: float) -> float:
    """The β whose VP state √(1−β) x + √β ε equals (x + σε)/√(1+σ²): same SNR as VE at σ."""
    return sigma**2 / (1 + sigma**2)


# --- 1. the noise ladder: measured against closed forms -------------------------------------------------

def noise_metrics(x: torch.Tensor, eps: torch.Tensor, sigma: float, power: float) -> dict:
    """y = x + σε and clip(y): MSE = σ², PSNR = 10 log10(2² / σ²), SNR = 10 log10(P / σ²) in theory.

    Clipping moves pixels near ±1 back towards x, so its MSE is the mean of `clipped_mse` over the
    pixels; that depends only on the histogram of pixel values (256 levels), so we average over those.
    The same average of `clipped_fraction` predicts the share of pixels clipping changes.
    """
    y = x + sigma * eps
    yc = y.clamp(-1, 1)
    m, mc = mse(y, x), mse(yc, x)
    levels, counts = torch.unique(x, return_counts=True)
    weights = counts.double() / counts.sum()                      # the pixel-value histogram
    mc_theory = float(clipped_mse(levels, sigma) @ weights)
    return {"sigma": sigma, "mse_theory": sigma**2, "mse": m,
            "mse_clipped_theory": mc_theory, "mse_clipped": mc,
            "clip_frac_theory": float(clipped_fraction(levels, sigma) @ weights),
            "clip_frac": float((y != yc).double().mean()),
            "psnr_theory": db(4 / sigma**2), "psnr": float(psnr(y, x).mean()),
            "psnr_clipped": float(psnr(yc, x).mean()),
            "snr_db_theory": db(power / sigma**2), "snr_db": db(power / m), "snr_db_clipped": db(power / mc),
            "ssim": float(ssim(y, x).mean()), "ssim_clipped": float(ssim(yc, x).mean())}


# --- 2. variance exploding against variance preserving --------------------------------------------------

def ve_vp_states(x, eps, sigma):
    """VE: x + σε (RMS √(P + σ²), unbounded); VP: √(1−β) x + √β ε (RMS √((1−β) P + β), ≤ 1 if P ≤ 1)."""
    beta = vp_beta(sigma)
    return x + sigma * eps, math.sqrt(1 - beta) * x + math.sqrt(beta) * eps


def ve_vp_metrics(x, eps, sigma, power) -> dict:
    ve, vp = ve_vp_states(x, eps, sigma)
    beta = vp_beta(sigma)
    return {"sigma": sigma, "beta": beta,
            "rms_ve_theory": math.sqrt(power + sigma**2), "rms_ve": rms(ve),
            "rms_vp_theory": math.sqrt((1 - beta) * power + beta), "rms_vp": rms(vp)}


# --- 3. σ-progressions: the same range of noise, spaced four ways --------------------------------------

def sigma_ladder(kind: str, n: int, lo: float, hi: float) -> list[float]:
    """n noise levels from lo to hi; with s = i / (n − 1), i = 0 .. n − 1:

        linear     σ_i = lo + (hi − lo) s
        quadratic  σ_i = lo + (hi − lo) s²                        (the original challenge's "custom" ladder)
        geometric  σ_i = lo (hi / lo)^s                           (Song & Ermon 2019: a constant ratio)
        karras     σ_i = (lo^(1/ρ) + s (hi^(1/ρ) − lo^(1/ρ)))^ρ, ρ = 7   (Karras et al. 2022, Eq. 5)

    PSNR = 10 log10(4 / σ²) falls by 20 log10(σ_{i+1} / σ_i) dB from one level to the next, so only the
    geometric ladder takes equal steps in PSNR (and SNR); the others crowd their levels at one end.
    """
    if n < 2:
        raise UserError(f"--ladder_levels={n}: a σ-progression needs at least 2 levels")
    s = torch.linspace(0, 1, n, dtype=torch.float64)
    if kind == "linear":
        sig = lo + (hi - lo) * s
    elif kind == "quadratic":
        sig = lo + (hi - lo) * s**2
    elif kind == "geometric":
        sig = lo * (hi / lo) ** s
    elif kind == "karras":
        rho = 7.0
        sig = (lo ** (1 / rho) + s * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho
    else:
        raise UserError(f"--ladders: unknown σ-progression '{kind}'; choose from linear, quadratic, geometric, karras")
    return sig.tolist()


def ladder_metrics(x, eps, sigmas: list[float], power: float) -> dict:
    """Each level's PSNR (theory and measured, mean over images) and SNR; the PSNR step between levels."""
    psnr_theory = [db(4 / s**2) for s in sigmas]
    return {"sigmas": sigmas, "psnr_theory": psnr_theory,
            "psnr": [float(psnr(x + s * eps, x).mean()) for s in sigmas],
            "snr_db_theory": [db(power / s**2) for s in sigmas],
            "psnr_steps_db": [a - b for a, b in zip(psnr_theory, psnr_theory[1:])],
            "levels_above_0db_snr": sum(power > s**2 for s in sigmas)}


# --- 4. why we learn denoisers: the best linear one against blur, clipping and nothing -----------------

def best_blur_width(x: torch.Tensor, y: torch.Tensor, widths) -> float:
    """The blur width with the lowest MSE on (clean, noisy) pairs: chosen on train, used on test."""
    return min(widths, key=lambda w: mse(gaussian_blur(y, w), x))


def denoise(x, eps, sigma, wiener, blur_width) -> dict[str, torch.Tensor]:
    y = x + sigma * eps
    return {"nothing": y, "clip": y.clamp(-1, 1), "blur": gaussian_blur(y, blur_width), "wiener": wiener(y, sigma)}


def denoiser_metrics(x, outputs, sigma, wiener, blur_width, mse_wiener_train) -> dict:
    """Mean per-image PSNR of each denoiser on test; the Wiener MSE in theory, on train, on test."""
    return {"sigma": sigma, "blur_width": blur_width,
            **{f"psnr_{name}": float(psnr(x_hat, x).mean()) for name, x_hat in outputs.items()},
            "mse_wiener_theory": wiener.expected_mse(sigma), "mse_wiener_train": mse_wiener_train,
            "mse_wiener": mse(outputs["wiener"], x)}


# --- outputs ----------------------------------------------------------------------------------------------

def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """Rows as a Markdown table; `columns` maps each header to a key of the rows."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(f"{row[key]:.4g}" for key in columns.values()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


NOISE_COLUMNS = {"σ": "sigma", "MSE theory σ²": "mse_theory", "MSE": "mse",
                 "clipped MSE theory": "mse_clipped_theory", "clipped MSE": "mse_clipped",
                 "PSNR theory (dB)": "psnr_theory", "PSNR": "psnr", "clipped PSNR": "psnr_clipped",
                 "SNR theory (dB)": "snr_db_theory", "SNR": "snr_db", "clipped SNR": "snr_db_clipped",
                 "SSIM": "ssim", "clipped SSIM": "ssim_clipped"}
DENOISERS = {"nothing": "noisy", "clip": "clipped", "blur": "best blur", "wiener": "Wiener"}  # key: label
DENOISER_COLUMNS = {"σ": "sigma", "nothing": "psnr_nothing", "clip": "psnr_clip", "best blur": "psnr_blur",
                    "blur width (px)": "blur_width", "Wiener": "psnr_wiener",
                    "Wiener MSE theory": "mse_wiener_theory", "Wiener MSE train": "mse_wiener_train",
                    "Wiener MSE test": "mse_wiener"}


def own_range(y: torch.Tensor) -> torch.Tensor:
    """Each image mapped linearly from its own [min, max] to [-1, 1], so display does not clip it."""
    lo, hi = y.amin(dim=(1, 2, 3), keepdim=True), y.amax(dim=(1, 2, 3), keepdim=True)
    return 2 * (y - lo) / (hi - lo).clamp_min(1e-12) - 1


def clipping_rows(y: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a display that clips to [-1, 1] hides: y on its own range, clip(y), and where clipping acted,
    sign(y − clip(y)): white where y > 1 was cut down, black where y < −1 was lifted, grey where y is kept."""
    return {"noisy y\n(own range)": own_range(y), "clip(y)": y.clamp(-1, 1),
            "sign of\ny − clip(y)": torch.sign(y - y.clamp(-1, 1))}


def save_images(out: Path, cfg: Config, x, eps, examples: list[dict], ladders: dict[str, dict]) -> None:
    """Image panels and the GIF. Display clamps to [-1, 1], so a picture of y shows clip(y) unless the
    image is first mapped to its own range (denoisers.png does both, and shows the difference)."""
    sig, k = list(cfg.sigmas), cfg.n_show
    labels = [f"σ={s:g}" for s in sig]
    panel([[x[i]] + [x[i] + s * eps[i] for s in sig] for i in range(k)], out / "noise_progression.png",
          col_labels=["clean"] + labels)
    vevp = [ve_vp_states(x[:2], eps[:2], s) for s in sig]  # per σ: (VE (2, C, H, W), VP (2, C, H, W))
    panel([[states[kind][i] for states in vevp] for i in range(2) for kind in (0, 1)], out / "ve_vs_vp.png",
          row_labels=["VE", "VP"] * 2, col_labels=[f"σ={s:g}\nβ={vp_beta(s):.3g}" for s in sig])
    digit = {name: torch.cat([ex[name] for ex in examples]) for name in DENOISERS}  # each (len(sig), C, H, W)
    rows = clipping_rows(digit["nothing"]) | {"best blur": digit["blur"], "Wiener": digit["wiener"]}
    panel([list(r) for r in rows.values()], out / "denoisers.png", row_labels=list(rows), col_labels=labels)
    if ladders:
        plot_ladder_images(x[0], eps[0], ladders, out / "sigma_ladders.png")
    ramp = [max(sig) * (j / max(cfg.gif_frames - 1, 1)) ** 2 for j in range(cfg.gif_frames)]
    save_gif([torch.cat(ve_vp_states(x[:k], eps[:k], s)) for s in ramp], out / "noise.gif", nrow=k, duration_ms=120)


def plot_theory(curves: dict[str, tuple[list, list | None, list]], path: Path, ylabel: str, title: str,
                logy: bool = False) -> None:
    """Closed forms as lines, measurements as circles of the same colour, against σ on a log axis."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (xs, theory, measured) in curves.items():
        color = ax.plot(xs, theory, lw=1.2, label=f"{label}: theory")[0].get_color() if theory else None
        ax.plot(xs, measured, "o", ms=5, mfc="none", color=color, label=f"{label}: measured")
    ax.set(xscale="log", yscale="log" if logy else "linear", xlabel="σ", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_ladder_images(x0: torch.Tensor, eps0: torch.Tensor, ladders: dict[str, dict], path: Path) -> None:
    """One digit x0 (C, H, W) under every level of every σ-progression (same noise eps0), σ above each image."""
    n = max(len(lad["sigmas"]) for lad in ladders.values())
    fig, axes = plt.subplots(len(ladders), n, figsize=(0.9 * n + 0.6, 1.0 * len(ladders) + 0.5), squeeze=False)
    for row, (kind, lad) in zip(axes, ladders.items()):
        for ax, s in zip(row, lad["sigmas"]):
            ax.imshow((x0 + s * eps0).clamp(-1, 1)[0].cpu(), cmap="gray", vmin=-1, vmax=1)
            ax.set_title(f"σ={s:.3g}", fontsize=7)
        for ax in row:
            ax.set(xticks=[], yticks=[])
        row[0].set_ylabel(kind, fontsize=8)
    fig.suptitle("σ-progressions from the same noise: level 0 … last (display clips to [−1, 1])", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_ladder_psnr(ladders: dict[str, dict], power: float, path: Path) -> None:
    """PSNR against level index: closed form 10 log10(4 / σ²) as lines, measured means as circles."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind, lad in ladders.items():
        levels = range(len(lad["sigmas"]))
        color = ax.plot(levels, lad["psnr_theory"], lw=1.2, label=kind)[0].get_color()
        ax.plot(levels, lad["psnr"], "o", ms=5, mfc="none", color=color)
    ax.axhline(db(4 / power), color="grey", lw=0.8, ls="--", label="SNR = 0 dB (σ² = P)")
    ax.set(xlabel="level i", ylabel="PSNR (dB)", title="where each σ-progression spends its levels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_plots(out: Path, cfg: Config, noise_rows, vevp_rows, den_rows, wiener: Wiener) -> None:
    def col(rows, key):
        return [r[key] for r in rows]
    sig = list(cfg.sigmas)
    plot_theory({"noisy": (sig, col(noise_rows, "mse_theory"), col(noise_rows, "mse")),
                 "clipped": (sig, col(noise_rows, "mse_clipped_theory"), col(noise_rows, "mse_clipped"))},
                out / "mse_vs_sigma.png", "MSE per pixel", "MSE of the noisy image", logy=True)
    plot_theory({"noisy": (sig, col(noise_rows, "psnr_theory"), col(noise_rows, "psnr")),
                 "clipped": (sig, None, col(noise_rows, "psnr_clipped"))},
                out / "psnr_vs_sigma.png", "PSNR (dB)", "PSNR of the noisy image")
    plot_theory({"VE": (sig, col(vevp_rows, "rms_ve_theory"), col(vevp_rows, "rms_ve")),
                 "VP": (sig, col(vevp_rows, "rms_vp_theory"), col(vevp_rows, "rms_vp"))},
                out / "rms_ve_vp.png", "RMS pixel value", "VE grows with σ, VP stays ≤ 1 (β = σ²/(1+σ²))")
    plot_curves({"noisy": (sig, col(noise_rows, "ssim")), "clipped": (sig, col(noise_rows, "ssim_clipped"))},
                out / "ssim_vs_sigma.png", "σ", "SSIM", "SSIM of the noisy image", logx=True)
    plot_curves({label: (sig, col(den_rows, f"psnr_{name}")) for name, label in DENOISERS.items()},
                out / "denoiser_psnr.png", "σ", "PSNR on test (dB)", "denoisers against doing nothing", logx=True)
    rank = list(range(1, len(wiener.eigvals) + 1))
    plot_curves({f"σ={s:g}": (rank, wiener.gains(s).flip(0).tolist()) for s in sig[:: max(1, len(sig) // 4)]},
                out / "wiener_gains.png", "principal component (by variance)", "kept fraction λ/(λ+σ²)",
                "what the Wiener filter keeps", logx=True)


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    train, test = load_images(cfg.dataset, "train", args.data_dir), load_images(cfg.dataset, "test", args.data_dir)
    run = Run.from_args(args, train.name)
    if not run.is_main:  # nothing to train here: under torchrun, rank 0 alone does the work
        return
    gen = torch.Generator(run.device).manual_seed(cfg.seed)
    x = test.x[: cfg.n_eval].to(run.device)                       # (n_eval, C, H, W) in [-1, 1]
    x_fit = train.x[: cfg.n_fit].to(run.device)                   # (n_fit, C, H, W)
    eps = torch.randn(x.shape, generator=gen, device=run.device)  # one draw, reused at every σ
    eps_fit = torch.randn(x_fit.shape, generator=gen, device=run.device)
    power = rms(x) ** 2                                           # P = E[x²], the mean pixel power

    # --- 1. the noise ladder, and 2. VE against VP
    noise_rows = [noise_metrics(x, eps, s, power) for s in tqdm(cfg.sigmas, desc="noise ladder")]
    vevp_rows = [ve_vp_metrics(x, eps, s, power) for s in cfg.sigmas]

    # --- 3. σ-progressions between the smallest and the largest σ of the ladder
    lo, hi = min(cfg.sigmas), max(cfg.sigmas)
    ladders = {kind: ladder_metrics(x, eps, sigma_ladder(kind, cfg.ladder_levels, lo, hi), power)
               for kind in cfg.ladders}

    # --- 4. denoisers: Wiener fitted on train, blur width chosen on train, all scored on test
    wiener = Wiener.fit(x_fit)
    x_tune, eps_tune = x_fit[: cfg.n_tune], eps_fit[: cfg.n_tune]
    den_rows, examples = [], []
    for s in tqdm(cfg.sigmas, desc="denoisers"):
        y_tune = x_tune + s * eps_tune
        width = best_blur_width(x_tune, y_tune, cfg.blur_widths)
        outputs = denoise(x, eps, s, wiener, width)
        den_rows.append(denoiser_metrics(x, outputs, s, wiener, width, mse(wiener(y_tune, s), x_tune)))
        examples.append({name: x_hat[:1] for name, x_hat in outputs.items()})

    # --- outputs
    run.out.mkdir(parents=True, exist_ok=True)
    save_images(run.out, cfg, x, eps, examples, ladders)
    save_plots(run.out, cfg, noise_rows, vevp_rows, den_rows, wiener)
    if ladders:
        plot_ladder_psnr(ladders, power, run.out / "sigma_ladders_psnr.png")
    (run.out / "table.md").write_text(
        f"Noise on {len(x)} {run.dataset} test images, P = E[x²] = {power:.4f}; PSNR is the mean over images.\n\n"
        + markdown_table(noise_rows, NOISE_COLUMNS)
        + "\nDenoisers: PSNR (dB) on test; Wiener fitted and blur width chosen on train.\n\n"
        + markdown_table(den_rows, DENOISER_COLUMNS))
    metrics = {"n_eval": len(x), "n_fit": len(x_fit), "signal_power": power,
               "table": noise_rows, "ve_vp": vevp_rows, "sigma_ladders": ladders, "denoisers": den_rows}
    write_metrics(run.out, metrics, cfg, run, time.time() - start)
    print(f"wrote {run.out}")


if __name__ == "__main__":
    cli(main)
