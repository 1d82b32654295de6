"""Day 08 — Beta schedules: one U-Net trained once per schedule (linear, cosine, quadratic, sigmoid) on an equal
budget, changing nothing but β_1..β_T; compared by FID, by the denoising error on held-out digits per t band and
per noise level (SNR), by their SNR curves and by samples drawn from the same noise, in one summary table.

Initial weights, batch order, the t and ε of every training step, LR, steps and sampler seed are the same for every
schedule (common.loop draws them from (seed, step)), so each difference below is the schedule's, up to what one
seed at a small budget can resolve: the table reports every FID with its bootstrap interval and the real-data floor.

References:
    Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (§4: the linear schedule).
    Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672 (§3.2, Eq. 17:
        the cosine schedule, and why the linear one wastes its last steps).
    Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models", arXiv:2112.10752 (the
        "scaled linear" schedule, linear in √β: `quadratic` here).
    Xu et al. (2022), "GeoDiff", arXiv:2203.02923 (β_t on a sigmoid ramp: `sigmoid` here).
    Kingma, Salimans, Poole & Ho (2021), "Variational Diffusion Models", arXiv:2107.00630 (a schedule is a map from
        t to SNR(t); models are best compared at equal SNR).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.config import cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss
from common.evaluator import score_images, unconfident
from common.loop import fit
from common.nets import UNet, UNetConfig, count_params
from common.paths import DiscreteVP, band_times, uniform_grid
from common.plotting import centred_average, panel, plot_curves, save_gif, save_grid
from common.predictions import Coefficients, clipped, denoiser, to_pair
from common.run import Run, write_metrics
from common.samples import save_samples_npz
from common.samplers import ddpm, sample_batched
from common.training import TrainConfig
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend

DAY = Path(__file__).resolve().parents[1]


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    schedules: tuple[str, ...] = ("linear", "cosine", "quadratic")  # sigmoid too where the budget allows
    prediction: str = "v"                # what the network outputs (day 6's choice)
    n_steps: int = 1000                  # T
    # day 6's cpu U-Net (16 x (1, 2, 2) channels, one residual block per level, attention at 7x7)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1))
    sample_steps: int = 50               # respaced ancestral steps (σ² = β̃) for the FID samples
    n_samples: int = 1000                # FID samples per schedule (one n for all: FID is biased by n)
    n_trajectory: int = 8                # chains followed from noise to digit, per schedule (GIF and figure)
    n_heldout: int = 500                 # test digits for the denoising error
    t_bins: int = 10                     # equal t bands for the error per t
    snr_db: tuple[float, ...] = (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0)  # noise levels for the error per SNR

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS
        from common.paths import SCHEDULES
        from common.predictions import PREDICTIONS
        from common.samples import MIN_SCORED

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(len(self.schedules) >= 1 and set(self.schedules) <= set(SCHEDULES), "schedules",
                f"choose one or more of {','.join(SCHEDULES)}")
        require(len(set(self.schedules)) == len(self.schedules), "schedules", "name each schedule once")
        require(self.prediction in PREDICTIONS, "prediction", f"choose one of {', '.join(PREDICTIONS)}")
        require(self.n_steps >= 1, "n_steps", "choose at least 1 noise level, e.g. 1000")
        require(1 <= self.sample_steps <= self.n_steps, "sample_steps", f"choose 1..n_steps={self.n_steps} steps")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"the evaluator scores {MIN_SCORED} or more samples")
        require(1 <= self.n_trajectory <= self.n_samples, "n_trajectory", f"choose 1..n_samples={self.n_samples}")
        require(self.n_heldout >= 1, "n_heldout", "choose at least 1 test digit")
        require(self.t_bins >= 1, "t_bins", "choose at least 1 band")


PRESETS = {
    "smoke": Config(schedules=("linear", "cosine"), steps=20, batch_size=32, unet=UNetConfig(channels=8, n_res=1),
                    warmup=5, log_every=5, ckpt_every=20, sample_every=0, sample_steps=5, n_samples=32, n_heldout=32,
                    t_bins=4),
    "cpu": Config(steps=400, batch_size=64, lr=2e-3, warmup=50, ema_decay=0.995, sample_every=0, ckpt_every=200),
    "gpu": Config(schedules=("linear", "cosine", "quadratic", "sigmoid"), steps=40_000, batch_size=256, lr=2e-4,
                  warmup=1000, ema_decay=0.9999, unet=UNetConfig(channels=64, n_res=2, attn_res=(7, 14)),
                  sample_every=0, ckpt_every=2000, sample_steps=1000, n_samples=10_000,
                  n_heldout=1000),
}


# --- training: the same run for every schedule ------------------------------------------------------------

def train(schedule: DiscreteVP, x: torch.Tensor, cfg: Config, run: Run):
    """Day 6's loss (Alg. 1 of Ho et al.) under `schedule`; same initial weights, batches and noise for all."""
    torch.manual_seed(cfg.seed)
    model = UNet(cfg.unet)

    def loss_fn(net, x0, y, generator):
        return diffusion_loss(net, x0, schedule, cfg.prediction, generator)[0].mean()
    return fit(model, loss_fn, x, None, cfg, run)


# --- the denoising error on held-out digits, at times or noise levels every model sees alike ------------------

@torch.no_grad()
def x0_error(model, schedule: DiscreteVP, cfg: Config, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
             device) -> float:
    """Mean squared error of the clipped guess x̂_0 (what the sampler uses) at times t (B,) on x0 (B, 1, 28, 28).

    The x_0 error is in pixel units whatever the schedule; the training loss (here a v-MSE) is not: its
    target's scale depends on α_t and σ_t, so losses of different schedules cannot be compared directly.
    """
    c = Coefficients.at(schedule, t, x0)
    xt = c.alpha * x0 + c.sigma * eps                                 # (B, 1, 28, 28), Eq. 4 of Ho et al.
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
        out = model(xt.to(device), t.float().to(device)).float().cpu()
    return (to_pair(cfg.prediction, xt, out, c).x0.clamp(-1, 1) - x0).pow(2).mean().item()


def error_per_t(model, schedule, cfg, x0, eps, device) -> dict[str, float]:
    """x̂_0 error in cfg.t_bins equal bands of t (the same t draws, images and noise for every model)."""
    g = torch.Generator().manual_seed(cfg.seed)
    errors = {}
    for b in range(cfg.t_bins):
        t = band_times(schedule, b, cfg.t_bins, len(x0), g)              # on the lattice, t ≥ 1/T
        errors[f"{(b + 0.5) / cfg.t_bins:.3f}"] = x0_error(model, schedule, cfg, x0, t, eps, device)
    return errors


def error_per_snr(model, schedule, cfg, x0, eps, device) -> dict[str, float]:
    """x̂_0 error at fixed noise levels: for each SNR, the lattice time of this schedule nearest to it (within
    1 dB; levels the schedule never visits are left out). This compares models at the same x_t distribution."""
    snr = schedule.snr_db()                                           # (T,) at t = 1/T .. 1
    errors = {}
    for level in cfg.snr_db:
        i = int((snr - level).abs().argmin())
        if abs(snr[i].item() - level) <= 1:
            t = torch.full((len(x0),), (i + 1) / schedule.n_steps, dtype=torch.float64)
            errors[f"{level:g}"] = x0_error(model, schedule, cfg, x0, t, eps, device)
    return errors


# --- sampling and figures -------------------------------------------------------------------------------

def sample(model, schedule: DiscreteVP, cfg: Config, x1: torch.Tensor, device, batch: int = 250) -> torch.Tensor:
    """Respaced ancestral samples (Alg. 2 of Ho et al., §4 of Nichol & Dhariwal) from the noise x1, on the CPU."""
    denoise = clipped(denoiser(model, cfg.prediction, schedule), schedule)
    return sample_batched(ddpm, denoise, x1, uniform_grid(schedule, cfg.sample_steps), path=schedule, device=device,
                          batch=batch, bf16=cfg.bf16, generator=torch.Generator().manual_seed(cfg.seed + 1))


@torch.no_grad()
def trajectory(model, schedule: DiscreteVP, cfg: Config, x1: torch.Tensor, device) -> list[torch.Tensor]:
    """Every state x_t of a few chains, x_1 first, on the sampling grid (the sampler is a generator: list() it)."""
    denoise = clipped(denoiser(model, cfg.prediction, schedule), schedule)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
        chain = ddpm(denoise, x1.to(device), uniform_grid(schedule, cfg.sample_steps), path=schedule,
                     generator=torch.Generator().manual_seed(cfg.seed + 2))
        return [x1] + [x.float().cpu() for x in chain]


def plot_losses(folders: dict[str, Path], path: Path) -> None:
    """Each schedule's training loss (centred average of its log rows) on one axis. The v target's scale differs
    between schedules (it mixes α_t and σ_t), so compare the shapes, not the heights."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, folder in folders.items():
        rows = (folder / "train_log.csv").read_text().splitlines()[1:]
        steps, losses = zip(*[(float(r.split(",")[0]), float(r.split(",")[1])) for r in rows])
        ax.plot(steps, centred_average(torch.tensor(losses).numpy(), 5), label=name)
    ax.set(xlabel="step", ylabel="v-prediction loss (centred average)", yscale="log",
           title="training loss per schedule (target scales differ)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_fid(rows: list[dict], path: Path) -> None:
    """FID per schedule with its 95% bootstrap interval, and the real-data floor at the same n."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = [r["schedule"] for r in rows]
    fid = torch.tensor([r["fid"] for r in rows])
    lo, hi = torch.tensor([r["fid_ci95"] for r in rows]).T
    ax.errorbar(names, fid, yerr=[fid - lo, hi - fid], fmt="o", capsize=4, label="samples (95% interval)")
    ax.axhline(rows[0]["fid_floor"], color="grey", ls="--", label="real test digits (floor)")
    ax.set(ylabel=f"FID (n = {rows[0]['n']})", title="equal budget, one seed", xlim=(-0.5, len(rows) - 0.5))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def summary_table(rows: list[dict]) -> str:
    lines = ["| schedule | SNR at t=1 | FID (95% interval) | floor | confident > 0.9 | class entropy | precision | "
             "recall | mean x̂_0 error | train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['schedule']} | {r['snr_db_at_1']:.1f} dB | {r['fid']:.2f} ({r['fid_ci95'][0]:.2f}–"
                     f"{r['fid_ci95'][1]:.2f}) | {r['fid_floor']:.2f} | {r['confident_frac']:.1%} | "
                     f"{r['class_entropy']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['mean_x0_error']:.4f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


# --- the run ---------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    heldout = load_images(cfg.dataset, "test", args.data_dir).x[: cfg.n_heldout]   # (H, 1, 28, 28)
    run = Run.from_args(args, data.name)
    g = torch.Generator().manual_seed(cfg.seed)
    heldout_eps = torch.randn(heldout.shape, generator=g)             # one noise draw for every model's error
    x1 = torch.randn(cfg.n_samples, *data.x.shape[1:], generator=g)   # one starting noise for every sampler
    schedules = {name: DiscreteVP.named(name, cfg.n_steps) for name in cfg.schedules}

    # --- train (each schedule in its own folder; --resume: finished ones are kept, see Run.part)
    emas, train_s = {}, {}
    for name, schedule in schedules.items():
        sub = run.part(name)
        model, emas[name] = train(schedule, data.x, cfg, sub)
        train_s[name] = sub.train_seconds
    if not run.is_main:  # under torchrun, the other processes only helped train
        return

    rows, per_t, per_snr, show, drawn, paths = [], {}, {}, [], {}, []
    for name, schedule in schedules.items():
        # --- measure: held-out error per t and per SNR, then samples and the evaluator
        ema = emas[name]
        per_t[name] = error_per_t(ema, schedule, cfg, heldout, heldout_eps, run.device)
        per_snr[name] = error_per_snr(ema, schedule, cfg, heldout, heldout_eps, run.device)
        t0 = time.time()
        samples = sample(ema, schedule, cfg, x1, run.device)
        seconds = time.time() - t0
        scores = score_images(samples, dataset=data.name, data_dir=args.data_dir)
        doubted = unconfident(samples[:64], data.name)                 # framed in red: top class prob <= 0.9
        save_grid(samples[:64], run.out / f"samples_{name}.png", nrow=8, marked=doubted)
        states = trajectory(ema, schedule, cfg, x1[: cfg.n_trajectory], run.device)
        save_gif(states[:: max(1, len(states) // 20)] + [states[-1]], run.out / f"trajectory_{name}.gif",
                 nrow=cfg.n_trajectory, duration_ms=120)
        cols = torch.linspace(0, len(states) - 1, min(9, len(states))).round().long()  # moments of the first chain
        paths.append([states[i][0] for i in cols.tolist()])
        show.append(list(samples[:10]))
        drawn[name] = samples
        rows.append({"schedule": name, "snr_db_at_1": schedule.snr_db()[-1].item(),
                     "alpha_bar_1": schedule.alpha_bar[-1].item(), "train_seconds": round(train_s[name], 1),
                     "train_steps_per_s": round(cfg.steps / max(train_s[name], 1e-9), 2),
                     "sample_seconds": round(seconds, 1),
                     "grid_unconfident": None if doubted is None else int(doubted.sum()),
                     "mean_x0_error": sum(per_t[name].values()) / cfg.t_bins,
                     **{k: scores[k] for k in ("n", "fid", "fid_ci95", "fid_floor", "fid_floor_ci95", "fid_ratio",
                                               "confident_frac", "confident_frac_floor", "confident_ratio",
                                               "class_entropy", "precision", "recall")}})
        print(f"{name}: FID {scores['fid']:.2f} {scores['fid_ci95']} (floor {scores['fid_floor']:.2f})")

    # --- outputs: figures, the table, metrics.json
    out = run.out
    panel(show, out / "samples.png", row_labels=list(schedules))
    panel(paths, out / "trajectories.png", row_labels=list(schedules),
          col_labels=[f"t={t:.2f}" for t in uniform_grid(schedules[cfg.schedules[0]], cfg.sample_steps)[cols].tolist()])
    plot_losses({name: out / name for name in schedules}, out / "loss.png")
    plot_curves({n: (torch.arange(1, s.n_steps + 1) / s.n_steps, s.snr_db()) for n, s in schedules.items()},
                out / "snr.png", xlabel="t", ylabel="SNR(t) = ᾱ_t / (1 − ᾱ_t) in dB",
                title="the schedules as SNR curves")
    plot_curves({n: ([float(k) for k in e], list(e.values())) for n, e in per_t.items()}, out / "error_per_t.png",
                xlabel="t (centre of band)", ylabel="MSE of x̂_0 (held out)", logy=True,
                title="denoising error at the same t")
    plot_curves({n: ([float(k) for k in e], list(e.values())) for n, e in per_snr.items()},
                out / "error_per_snr.png", xlabel="SNR (dB)", ylabel="MSE of x̂_0 (held out)", logy=True,
                title="denoising error at the same noise level")
    plot_fid(rows, out / "fid.png")
    table = summary_table(rows)
    (out / "summary.md").write_text(table)
    best = min(rows, key=lambda r: r["fid"])
    if cfg.n_samples >= 1000:
        save_samples_npz(out / "samples.npz", drawn[best["schedule"]])
    overlapping = [r["schedule"] for r in rows if r is not best and r["fid_ci95"][0] <= best["fid_ci95"][1]]
    metrics = {
        "headline": {"name": f"best FID at n={cfg.n_samples} ({best['schedule']})",
                     "value": f"{best['fid']:.2f} (floor {best['fid_floor']:.2f})"},
        "params": count_params(model), "best": best["schedule"],
        "intervals_overlapping_best": overlapping,   # schedules the FID intervals cannot tell from the best
        "summary": rows, "x0_error_per_t": per_t, "x0_error_per_snr_db": per_snr,
        "samples_npz": "samples.npz (best schedule)" if cfg.n_samples >= 1000 else
                       f"not saved: n_samples={cfg.n_samples} < 1000 (the budget; see README)",
    }
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(table)


if __name__ == "__main__":
    cli(main)
