"""Day 04 — Forward diffusion: the linear, cosine, quadratic and sigmoid schedules side by side
(β_t, ᾱ_t, SNR(t), when half the signal is gone, how close x_1 is to N(0, I)); per t, the MSE between
x_t and x_0 and two closed forms that bracket the KL from q(x_t) to N(0, I) (forward_stats.csv); the
closed form q(x_t | x_0) checked against iterating q(x_t | x_{t−1}) on real MNIST pixels; and pictures
of images dissolving into noise and of their pixel histograms drifting to N(0, 1).

Convention: t = i / T in [0, 1], t = 0 data, t = 1 noise; x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε.

References:
    Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (Eqs. 2,
        4 and 5; the linear schedule, §4).
    Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672
        (Eq. 17: the cosine schedule).
    Jabri, Fleet & Chen (2022), "Scalable Adaptive Computation for Iterative Generation",
        arXiv:2212.11972 (the sigmoid schedule).
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common.config import UserError, cli, parse_args
from common.data import load_images
from common.diffusion import kl_prior
from common.paths import SCHEDULES, DiscreteVP
from common.plotting import panel, save_gif
from common.run import Run, write_metrics
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend
from forward import (chain_vs_closed_form, kl_to_prior_bounds, marginal_density, milestones,  # day04/code/
                     mse_to_x0)

DAY = Path(__file__).resolve().parents[1]


@dataclass
class Config:
    dataset: str = "mnist"
    schedules: tuple[str, ...] = SCHEDULES
    n_steps: int = 1000        # T
    n_images: int = 1000       # train images for the KL average, the histograms and the grids
    chain_images: int = 2      # images whose chain q(x_t | x_{t−1}) is iterated step by step ...
    chain_copies: int = 256    # ... this many times each
    check_every: int = 10      # compare the chain with the closed form every this many steps
    stats_every: int = 10      # per-t MSE and KL bounds (forward_stats.csv) every this many steps
    show_schedule: str = "linear"  # the schedule of the histograms and the digit grid
    times: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # grid columns
    hist_times: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    n_show: int = 6            # digits in the grid
    n_gif: int = 3             # digits per schedule in the GIF
    gif_frames: int = 16
    seed: int = 0

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(len(self.schedules) >= 1 and set(self.schedules) <= set(SCHEDULES), "schedules",
                f"choose one or more of {','.join(SCHEDULES)}")
        require(self.show_schedule in SCHEDULES, "show_schedule", f"choose one of {', '.join(SCHEDULES)}")
        require(self.n_steps >= 1, "n_steps", "choose at least 1 noise level, e.g. 1000")
        require(self.n_images >= 2, "n_images", "choose at least 2 images (their variance is measured)")
        require(1 <= self.chain_images <= self.n_images, "chain_images", f"choose 1..n_images={self.n_images}")
        require(self.chain_copies >= 2, "chain_copies", "choose at least 2 copies (their variance is measured)")
        require(self.check_every >= 1, "check_every", "choose a positive number of steps")
        require(self.stats_every >= 1, "stats_every", "choose a positive number of steps")
        require(len(self.times) >= 1 and all(0 <= t <= 1 for t in self.times), "times",
                "choose one or more times in [0, 1], e.g. 0,0.5,1")
        require(len(self.hist_times) >= 2 and all(0 <= t <= 1 for t in self.hist_times), "hist_times",
                "choose two or more times in [0, 1], e.g. 0,0.5,1")
        require(self.n_show >= 1, "n_show", "show at least 1 digit")
        require(self.n_gif >= 1, "n_gif", "show at least 1 digit")
        require(self.gif_frames >= 1, "gif_frames", "choose at least 1 frame")


PRESETS = {
    "smoke": Config(n_images=64, chain_images=1, chain_copies=16, check_every=100, stats_every=100, gif_frames=3),
    "cpu": Config(),
    "gpu": Config(n_images=10000, chain_images=8, chain_copies=4096, check_every=1),
}


def noised(schedule: DiscreteVP, x0: torch.Tensor, eps: torch.Tensor, t: float) -> torch.Tensor:
    """x_t for every image of x0 at one time t, with the given noise (Eq. 4 of Ho et al.)."""
    return schedule.sample(x0, torch.full((len(x0),), t, dtype=torch.float64), eps)


# --- 1. the schedules ---------------------------------------------------------------------------------

def schedule_summary(schedule: DiscreteVP, x: torch.Tensor, data_var: float) -> dict:
    """Where the schedule ends (ᾱ_1, SNR), when half the signal is gone, KL(q(x_1 | x_0) ‖ N(0, I))."""
    kl = kl_prior(schedule, x.double())                           # (N,) nats per image (Eq. 5's L_T)
    steps = milestones(schedule, data_var)
    return {"alpha_bar_1": schedule.alpha_bar[-1].item(), "snr_db_1": schedule.snr_db()[-1].item(),
            **steps, **{k.replace("_step", "_t"): v / schedule.n_steps for k, v in steps.items()},
            "kl_prior_nats_per_image": kl.mean().item(), "kl_prior_nats_per_dim": kl.mean().item() / x[0].numel()}


def plot_schedules(schedules: dict[str, DiscreteVP], summary: dict, path: Path) -> None:
    """β_t, ᾱ_t and SNR(t) in dB against t, one line per schedule; dots where ᾱ_t first ≤ 1/2."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")  # labels never run into a neighbour
    for name, s in schedules.items():
        t = torch.arange(1, s.n_steps + 1) / s.n_steps
        line, = axes[0].plot(t, s.betas, label=name)
        axes[1].plot(t, s.alpha_bar[1:], color=line.get_color())
        axes[2].plot(t, s.snr_db(), color=line.get_color())
        half = summary[name]["half_power_step"]
        if half <= s.n_steps:  # T + 1 means ᾱ never falls to 1/2 (a short schedule): no dot
            axes[1].plot(half / s.n_steps, s.alpha_bar[half], "o", color=line.get_color())
            axes[2].plot(half / s.n_steps, s.snr_db()[half - 1], "o", color=line.get_color())
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[2].axhline(0, color="grey", lw=0.8, ls="--")
    axes[0].set(yscale="log", ylabel="β_t", title="per-step noise β_t")
    axes[1].set(ylabel="ᾱ_t", title="signal power left ᾱ_t (dot: ᾱ_t = 1/2)")
    axes[2].set(ylabel="SNR (dB)", ylim=(-50, 50), title="SNR(t) = 10 log10 ᾱ_t / (1 − ᾱ_t)")
    for ax in axes:
        ax.set_xlabel("t = i / T")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --- 2. per t: how far x_t is from x_0, and how far q(x_t) is from N(0, I) ------------------------------

STATS_COLUMNS = ("schedule", "step", "t", "alpha_bar", "snr_db", "mse_theory", "mse", "kl_lower_nats",
                 "kl_upper_nats")


def forward_stats(schedule: DiscreteVP, x0: torch.Tensor, eps: torch.Tensor, every: int) -> list[dict]:
    """Rows at steps every, 2·every, ..., T: MSE(x_t, x_0) per pixel (closed form, and measured on x0 with
    the noise eps) and the bounds of `kl_to_prior_bounds` in nats per image (D pixels)."""
    if every < 1:
        raise UserError(f"--stats_every={every}: must be a positive number of steps")
    steps = sorted(set(range(every, schedule.n_steps + 1, every)) | {schedule.n_steps})
    ab = schedule.alpha_bar[steps]                                      # (K,)
    power = x0.double().pow(2).mean().item()
    lower, upper = kl_to_prior_bounds(ab, x0)
    snr_db = schedule.snr_db()[[i - 1 for i in steps]]                 # snr_db() is indexed 1..T
    rows = []
    for k, i in enumerate(steps):
        a = ab[k].item()
        error = (a**0.5 - 1) * x0 + (1 - a) ** 0.5 * eps              # x_t − x_0, Eq. 4 of Ho et al.
        rows.append({"schedule": schedule.name, "step": i, "t": i / schedule.n_steps, "alpha_bar": a,
                     "snr_db": snr_db[k].item(), "mse_theory": mse_to_x0(ab[k], power).item(),
                     "mse": error.pow(2).mean(dtype=torch.float64).item(),
                     "kl_lower_nats": lower[k].item(), "kl_upper_nats": upper[k].item()})
    return rows


def first_t_below(rows: list[dict], key: str, level: float) -> float | None:
    """The first t of the rows at which `key` is at most `level` (None if it never is)."""
    return next((r["t"] for r in rows if r[key] <= level), None)


def stats_summary(rows: list[dict]) -> dict:
    """What the per-t table says in a few numbers: the MSE's agreement with its closed form, where it ends,
    and when each KL bound first drops to 1 nat per image."""
    return {"max_abs_mse_dev": max(abs(r["mse"] - r["mse_theory"]) for r in rows),
            "mse_at_1": rows[-1]["mse"], "mse_theory_at_1": rows[-1]["mse_theory"],
            "kl_upper_nats_at_1": rows[-1]["kl_upper_nats"], "kl_lower_nats_at_1": rows[-1]["kl_lower_nats"],
            "t_kl_upper_below_1nat": first_t_below(rows, "kl_upper_nats", 1.0),
            "t_kl_lower_below_1nat": first_t_below(rows, "kl_lower_nats", 1.0)}


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STATS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot_forward_stats(stats: dict[str, list[dict]], path: Path) -> None:
    """MSE(x_t, x_0) (closed form lines, measured dots) and the two KL bounds (solid upper, dashed lower)."""
    fig, (ax_m, ax_k) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for name, rows in stats.items():
        t = [r["t"] for r in rows]
        color = ax_m.plot(t, [r["mse_theory"] for r in rows], lw=1.2, label=name)[0].get_color()
        ax_m.plot(t[::5], [r["mse"] for r in rows][::5], "o", ms=3, color=color)
        ax_k.plot(t, [r["kl_upper_nats"] for r in rows], color=color)
        ax_k.plot(t, [r["kl_lower_nats"] for r in rows], color=color, ls="--")
    ax_k.plot([], [], color="k", label="upper: E_x0 KL(q(x_t | x_0) ‖ N(0, I))")   # legend entries for the styles
    ax_k.plot([], [], color="k", ls="--", label="lower: KL of the diagonal Gaussian fit")
    ax_m.set(xlabel="t = i / T", ylabel="MSE per pixel", title="E (x_t − x_0)²: closed form, measured (dots)")
    ax_k.set(xlabel="t = i / T", ylabel="nats per image", yscale="log",
             title="KL(q(x_t) ‖ N(0, I)) lies between solid and dashed")
    for ax in (ax_m, ax_k):
        ax.grid(alpha=0.3)
    ax_m.legend(fontsize=8)
    ax_k.legend(fontsize=8, loc="lower left")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --- 3. the chain against the closed form: plot ---------------------------------------------------------

def plot_chain(chains: dict[str, dict], schedules: dict[str, DiscreteVP], x0: torch.Tensor, path: Path) -> None:
    """Chain moments (dots) on the closed form (lines), pooled over pixels to beat Monte Carlo noise:
    the mean over the bright (x_0 > 0.9) and the black (x_0 = −1) pixels, against √ᾱ_t times their
    average x_0; the variance over all pixels, each of which should have 1 − ᾱ_t."""
    fig, (ax_m, ax_v) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for name, c in chains.items():
        s, t = schedules[name], torch.tensor(c["steps"]) / schedules[name].n_steps
        t_all = torch.arange(s.n_steps + 1) / s.n_steps
        color = ax_v.plot(t_all, 1 - s.alpha_bar, lw=1, label=name)[0].get_color()
        ax_v.plot(t, c["var"].flatten(1).mean(1), ".", ms=4, color=color)
        for mask in (x0 > 0.9, x0 == -1):  # bright ink, black background
            ax_m.plot(t_all, s.alpha_bar.sqrt() * x0[mask].mean(), lw=1, color=color)
            ax_m.plot(t, c["mean"][:, mask].mean(1), ".", ms=4, color=color)  # (K,)
    ax_m.set(xlabel="t", ylabel="mean of x_t", title="mean of ink and background: chain (dots), √ᾱ_t x_0")
    ax_v.set(xlabel="t", ylabel="variance of x_t", title="variance: chain (dots), 1 − ᾱ_t (lines)")
    ax_v.legend(fontsize=8)
    for ax in (ax_m, ax_v):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --- 4. pictures: trajectories, the GIF, pixel histograms ---------------------------------------------

def save_trajectories(x0, eps, schedules: dict[str, DiscreteVP], cfg: Config, out: Path, tag: str) -> None:
    """One image under every schedule; n_show images under the show schedule; a GIF of n_gif per schedule."""
    labels = [f"t={t:g}" for t in cfg.times]
    panel([[noised(s, x0[:1], eps[:1], t)[0] for t in cfg.times] for s in schedules.values()],
          out / f"trajectories_{tag}_schedules.png", row_labels=list(schedules), col_labels=labels)
    show = DiscreteVP.named(cfg.show_schedule, cfg.n_steps)
    frames = [noised(show, x0[: cfg.n_show], eps[: cfg.n_show], t) for t in cfg.times]  # each (n_show, C, H, W)
    panel([[f[i] for f in frames] for i in range(min(cfg.n_show, len(x0)))], out / f"trajectories_{tag}.png",
          col_labels=labels)
    ramp = [j / max(cfg.gif_frames - 1, 1) for j in range(cfg.gif_frames)]
    k = min(cfg.n_gif, len(x0))
    save_gif([torch.cat([noised(s, x0[:k], eps[:k], t) for s in schedules.values()]) for t in ramp],
             out / f"forward_{tag}.gif", nrow=k, duration_ms=150)  # one row per schedule


def pixel_histograms(x0, eps, schedule: DiscreteVP, times, path: Path) -> list[dict]:
    """Histograms of all pixels of x_t against N(0, 1) and the exact marginal; their mean and std.

    A pixel of x_t is √ᾱ v + √(1−ᾱ) ε with v drawn from the data's pixel values, so its mean is
    √ᾱ E[v] and its variance ᾱ Var[v] + 1 − ᾱ: both reach N(0, 1)'s only as ᾱ → 0.
    """
    levels, counts = torch.unique(x0.cpu(), return_counts=True)
    weights = counts.double() / counts.sum()
    mean_v = float(weights @ levels.double())
    var_v = float(weights @ (levels.double() - mean_v) ** 2)
    grid = torch.linspace(-4, 4, 401)
    normal = torch.exp(-grid**2 / 2) / (2 * torch.pi) ** 0.5
    fig, axes = plt.subplots(1, len(times), figsize=(2.6 * len(times), 2.6), sharey=True)
    rows = []
    for ax, t in zip(axes, times):
        xt = noised(schedule, x0, eps, t).flatten().cpu()
        ab = schedule.alpha_bar_at(t).item()
        ax.hist(xt.numpy(), bins=120, range=(-4, 4), density=True, color="tab:blue", alpha=0.6)
        ax.plot(grid, normal, "k--", lw=1, label="N(0, 1)")
        if ab < 1:
            ax.plot(grid, marginal_density(grid, levels, weights, ab), color="tab:red", lw=1, label="exact p(x_t)")
        ax.set(title=f"t={t:g}  ᾱ={ab:.3g}", ylim=(0, 1.0), xlabel="pixel value")
        rows.append({"t": t, "alpha_bar": ab, "mean": xt.double().mean().item(), "std": xt.double().std().item(),
                     "mean_theory": ab**0.5 * mean_v, "std_theory": (ab * var_v + 1 - ab) ** 0.5})
    axes[-1].legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return rows


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    if not run.is_main:  # nothing to train here: under torchrun, rank 0 alone does the work
        return
    run.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(run.device).manual_seed(cfg.seed)
    schedules = {name: DiscreteVP.named(name, cfg.n_steps) for name in cfg.schedules}
    x = data.x[: cfg.n_images].to(run.device)                        # (N, C, H, W) in [-1, 1]
    data_var = x.double().var(0).mean().item()                        # mean per-pixel variance

    # --- 1. the schedules: curves, milestones, KL to the prior
    summary = {name: schedule_summary(s, x, data_var) for name, s in schedules.items()}
    plot_schedules(schedules, summary, run.out / "schedules.png")

    # --- 2. iterating q(x_t | x_{t−1}) against the closed form q(x_t | x_0)
    x_chain = x[: cfg.chain_images].flatten(1)                        # (B, D)
    chains = {name: chain_vs_closed_form(s, x_chain, cfg.chain_copies, cfg.check_every, gen)
              for name, s in tqdm(schedules.items(), desc="forward chains")}
    plot_chain(chains, schedules, x_chain.cpu(), run.out / "chain_vs_closed_form.png")

    # --- 3. per t: MSE(x_t, x_0) and the bounds on KL(q(x_t) ‖ N(0, I)), as a CSV and a plot
    eps = torch.randn(x.shape, generator=gen, device=run.device)
    stats = {name: forward_stats(s, x, eps, cfg.stats_every) for name, s in schedules.items()}
    write_csv([row for rows in stats.values() for row in rows], run.out / "forward_stats.csv")
    plot_forward_stats(stats, run.out / "forward_stats.png")

    # --- 4. pictures on MNIST, and on CIFAR-10 when its files are present
    save_trajectories(x, eps, schedules, cfg, run.out, "mnist")
    hist_rows = pixel_histograms(x, eps, DiscreteVP.named(cfg.show_schedule, cfg.n_steps), cfg.hist_times,
                                 run.out / "pixel_histograms.png")
    try:
        cifar = load_images("cifar10", "train", args.data_dir).x[: max(cfg.n_show, cfg.n_gif)].to(run.device)
        save_trajectories(cifar, torch.randn(cifar.shape, generator=gen, device=run.device),
                          schedules, cfg, run.out, "cifar10")
        cifar_status = "used"
    except UserError as err:
        print(f"cifar10: skipped ({str(err).split(':')[0]})")
        cifar_status = "not available"

    metrics = {"n_images": len(x), "data_var": data_var, "schedules": summary,
               "chain": {name: {k: v for k, v in c.items() if k not in ("steps", "mean", "var")}
                         for name, c in chains.items()},
               "forward_stats": {name: stats_summary(rows) for name, rows in stats.items()},
               "histograms": hist_rows, "cifar10": cifar_status}
    write_metrics(run.out, metrics, cfg, run, time.time() - start)
    print(f"wrote {run.out}")


if __name__ == "__main__":
    cli(main)
