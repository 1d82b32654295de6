"""Day 07 — Sampling from DDPM: day 6's model drawn with σ_t² = β_t and σ_t² = β̃_t on grids of 1000 down to 25 steps
(FID and seconds per sample for each), the path from noise to a digit with the model's running guess x̂_0, bitwise
determinism under a fixed seed, and the same noise decoded by checkpoints from early, middle and late training.

Nothing is trained here. The model is day 6's EMA U-Net, read from its self-describing checkpoint; when that is
missing, day 6's train.py is run once, as a subprocess, with the same preset.

References:
    Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (Alg. 2; §3.2: the
        two variances σ_t² = β_t and β̃_t of Eq. 7; Eq. 15: the guess x̂_0; §4.3: progressive generation).
    Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672 (§4:
        respaced sampling, β_{t|s} = 1 − ᾱ_t / ᾱ_s between two kept levels s < t).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.checkpoint import kept_checkpoints, load_ddpm
from common.config import UserError, cli, parse_args
from common.evaluator import score_images
from common.nets import count_params
from common.paths import DiscreteVP, uniform_grid
from common.plotting import panel, plot_curves, save_gif
from common.run import Run, earlier_checkpoint, write_metrics
from common.samples import save_samples_npz
from common.samplers import ddpm, sample_batched
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend

DAY = Path(__file__).resolve().parents[1]
ROOT = DAY.parent
SIGMA2 = {"posterior": r"$\tilde\beta$", "beta": r"$\beta$"}  # σ_t² of each variance choice (matplotlib mathtext)
SCORES = ("fid", "fid_ci95", "fid_floor", "fid_floor_ci95", "fid_ratio", "confident_frac", "confident_frac_floor",
          "confident_ratio", "class_entropy", "precision", "recall")


@dataclass
class Config:
    day6_results: str = "day06/results"  # day 6's run folder, from the repo root ("": a new one inside --out)
    day6_args: tuple[str, ...] = ()      # extra --key=value for day 6's train.py when it has to run
    variances: tuple[str, ...] = ("posterior", "beta")  # σ_t² = β̃_t (Eq. 7) or β_t
    steps: tuple[int, ...] = (1000, 250, 100, 50, 25)   # sampling steps: the respaced grids
    n_eval: int = 100                    # samples per setting ...
    nfe_budget: int = 25_000             # ... or fewer: at most this many network calls per setting
    npz: str = "posterior-25"            # the setting whose samples are saved as samples.npz ...
    n_npz: int = 1000                    # ... this many (the table scores the first ones)
    batch: int = 250
    trajectory_steps: int = 100          # the grid of the trajectory figure
    n_trajectory: int = 4                # digits followed along it
    checkpoint_steps: int = 25           # the grid used to compare day 6's early/middle/late checkpoints
    n_show: int = 10                     # fixed-noise samples per figure row
    bf16: bool = True                    # bf16 autocast for the network (CPU and CUDA)
    seed: int = 0

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samplers import VARIANCES
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day6_args), "day6_args",
                "write day 6's options as --key=value, separated by commas")
        require(len(self.variances) >= 1 and set(self.variances) <= set(VARIANCES), "variances",
                f"choose one or more of {','.join(VARIANCES)}")
        require(len(self.steps) >= 1 and min(self.steps) >= 1, "steps", "choose one or more step counts, e.g. 100,25")
        require(self.n_eval >= MIN_SCORED, "n_eval", f"the evaluator scores {MIN_SCORED} or more samples")
        fewest = MIN_SCORED * max(self.steps)
        require(self.nfe_budget >= fewest, "nfe_budget",
                f"allow at least {fewest} network calls ({MIN_SCORED} samples of the longest grid)")
        settings = [f"{v}-{k}" for v in self.variances for k in self.steps]
        require(self.npz in settings, "npz", f"choose one of the settings {','.join(settings)}")
        for key in ("batch", "n_trajectory", "checkpoint_steps", "n_show"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        require(self.trajectory_steps >= 2, "trajectory_steps", "choose at least 2 steps, e.g. 100")


PRESETS = {
    "smoke": Config(day6_results="", day6_args=("--keep_every=10", "--sample_every=0"), steps=(20, 5), n_eval=32,
                    nfe_budget=320, npz="posterior-5", n_npz=48, batch=32, trajectory_steps=10, n_trajectory=2,
                    checkpoint_steps=5, n_show=4),
    "cpu": Config(),
    "gpu": Config(n_eval=10_000, nfe_budget=10_000_000, n_npz=10_000, batch=1000, n_trajectory=8,
                  checkpoint_steps=100),
}


# --- sampling ------------------------------------------------------------------------------------------------

def draw(denoise, path: DiscreteVP, x1: torch.Tensor, steps: int, variance: str, seed: int, cfg: Config,
         device: torch.device) -> torch.Tensor:
    """Ancestral samples (N, 1, 28, 28) on the CPU from the initial noise x1, in batches.

    x1 fixes where each chain starts; `seed` fixes the noise added at every step (Alg. 2, line 4), drawn for a
    whole batch at once: the same (x1, seed, batch) gives the same samples bit for bit.
    """
    return sample_batched(ddpm, denoise, x1, uniform_grid(path, steps), path=path, device=device, batch=cfg.batch,
                          bf16=cfg.bf16, generator=torch.Generator().manual_seed(seed), variance=variance,
                          desc=f"{variance:>9} {steps:>4} steps")


def recording_x0(denoise, store: list):
    """A denoiser that also keeps its guess x̂_0 (Eq. 15 of Ho et al., clipped to [-1, 1] as the sampler uses it)
    in `store`. The sampler is a plain generator; wrapping the network is how we listen."""
    def fn(xt, t, **cond):
        pred = denoise(xt, t, **cond)
        store.append(pred.x0.float().cpu())
        return pred
    return fn


def trajectory(denoise, path: DiscreteVP, x1: torch.Tensor, cfg: Config, device: torch.device):
    """States x_t (K+1 of them, x_1 first) and guesses x̂_0 (K, one per step) of a few chains, on the CPU."""
    guesses: list[torch.Tensor] = []
    ts = uniform_grid(path, cfg.trajectory_steps)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        states = [x1] + [x.float().cpu() for x in ddpm(recording_x0(denoise, guesses), x1.to(device), ts, path=path,
                                                          generator=torch.Generator().manual_seed(cfg.seed))]
    return ts, states, guesses


def scored(x: torch.Tensor, seconds_per_sample: float, dataset: str, data_dir: str | None) -> dict:
    """Seconds per sample and the evaluator's verdict (FID next to the real-data floor at the same n)."""
    s = score_images(x, dataset=dataset, data_dir=data_dir)
    return {"n": len(x), "seconds_per_sample": round(seconds_per_sample, 5), **{k: s[k] for k in SCORES}}


def sweep(denoise, path: DiscreteVP, x1: torch.Tensor, cfg: Config, run: Run, data_dir: str | None):
    """Every (variance, steps) setting from the same x_1 and sampler seed. A 1000-step chain costs 40 times a
    25-step one, so each setting draws n = min(n_eval, nfe_budget / steps) samples; FID depends on n, so every
    setting is also scored on its first n_common = (smallest n) samples: compare FIDs only at equal n."""
    n_of = {k: min(cfg.n_eval, cfg.nfe_budget // k) for k in cfg.steps}
    n_common = min(n_of.values())
    if n_common < 2:
        raise UserError(f"nfe_budget={cfg.nfe_budget} leaves fewer than 2 samples for {max(cfg.steps)} steps")
    settings, shown, npz = {}, [], {}
    for variance in cfg.variances:
        for steps in cfg.steps:
            key = f"{variance}-{steps}"
            n = n_of[steps]
            t0 = time.time()
            x = draw(denoise, path, x1[:n], steps, variance, cfg.seed + 1, cfg, run.device)
            per_sample = (time.time() - t0) / n
            own = scored(x, per_sample, run.dataset, data_dir)
            at_common = own if n == n_common else scored(x[:n_common], per_sample, run.dataset, data_dir)
            s = settings[key] = {"variance": variance, "steps": steps, **own, "at_n_common": at_common}
            shown.append(x[: cfg.n_show])
            if key == cfg.npz:  # more samples of this setting: the rest of x_1, another sampler seed
                more = draw(denoise, path, x1[n: cfg.n_npz], steps, variance, cfg.seed + 3, cfg, run.device)
                x = torch.cat([x, more])
                save_samples_npz(run.out / "samples.npz", x)
                npz = {"setting": key, **scored(x, per_sample, run.dataset, data_dir)}
            c = s["at_n_common"]
            print(f"{key}: n={s['n']} FID {s['fid']:.2f} (floor {s['fid_floor']:.2f}); at n={n_common} "
                  f"{c['fid']:.2f} (floor {c['fid_floor']:.2f}); {per_sample:.4f} s/sample")
    return settings, shown, npz, n_common


def plot_fid(settings: dict, cfg: Config, n_common: int, path: Path) -> None:
    """FID against steps with 95% bootstrap intervals (bands), one panel per sample count n: every setting at the
    common n, and the settings that drew n_eval samples at n_eval; the real-data floor (grey) at the same n."""
    panels = {n_common: lambda s: s["at_n_common"]}
    if cfg.n_eval != n_common:
        panels[cfg.n_eval] = lambda s: s if s["n"] == cfg.n_eval else None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (n, at) in zip(axes[0], panels.items()):
        for v, colour in zip(cfg.variances, ("tab:blue", "tab:orange", "tab:green")):
            rows = [(s["steps"], at(s)) for s in settings.values() if s["variance"] == v and at(s)]
            steps, fid = [r[0] for r in rows], [r[1]["fid"] for r in rows]
            lo, hi = zip(*[r[1]["fid_ci95"] for r in rows])
            ax.plot(steps, fid, "o-", color=colour, ms=3, label=f"σ² = {SIGMA2[v]}")
            ax.fill_between(steps, lo, hi, color=colour, alpha=0.2)
        floor = [at(s) for s in settings.values() if s["variance"] == cfg.variances[0] and at(s)]
        lo, hi = floor[0]["fid_floor_ci95"]
        ax.axhline(floor[0]["fid_floor"], color="grey", ls="--", label="real digits (floor)")
        ax.axhspan(lo, hi, color="grey", alpha=0.15)
        ax.set(xscale="log", xlabel="sampling steps", title=f"n = {n} samples per setting")
        ax.set_xticks(cfg.steps, [str(k) for k in cfg.steps], minor=False)
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("FID (bands: 95% bootstrap intervals)")
    axes[0][0].legend(loc="upper center", bbox_to_anchor=(0.5 * len(panels), -0.16), ncol=3, frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def variance_ratio(path: DiscreteVP, steps: int) -> tuple[list[float], list[float]]:
    """β̃_{t|s} / β_{t|s} = (1 − ᾱ_s) / (1 − ᾱ_t) at each step t -> s of a grid: how much less noise σ² = β̃ adds."""
    ts = uniform_grid(path, steps)                                   # (steps + 1,) from t = 1 down to 0
    ab = path.alpha_bar_at(ts)
    return ts[:-1].tolist(), ((1 - ab[1:]) / (1 - ab[:-1])).tolist()


def same_noise_gap(shown: list[torch.Tensor], settings: dict, cfg: Config) -> dict:
    """Mean |x_0(σ² = β) − x_0(σ² = β̃)| per grid over the shown samples: same x_1, same sampler seed, so only the
    step variance differs. Small where β̃ / β ≈ 1 (fine grids), large where it is not (coarse grids)."""
    first = dict(zip(settings, shown))
    return {f"{k} steps": round((first[f"beta-{k}"] - first[f"posterior-{k}"]).abs().mean().item(), 4)
            for k in cfg.steps if f"beta-{k}" in first and f"posterior-{k}" in first}


# --- the run ---------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    if not run.is_main:  # nothing to train here: under torchrun, rank 0 alone does the work
        return
    run.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = earlier_checkpoint(6, cfg.day6_results, run, args.device, args.data_dir, cfg.day6_args,
                                   by="day 7")
    model, denoise, path, ckpt = load_ddpm(ckpt_path, run.device)
    run.dataset = ckpt["dataset"]
    if cfg.npz not in [f"{v}-{k}" for v in cfg.variances for k in cfg.steps]:
        raise UserError(f"npz={cfg.npz}: choose one of the settings, written variance-steps (e.g. posterior-50)")
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)   # what day 6 trained on
    x1 = torch.randn(max(cfg.n_eval, cfg.n_npz), *shape, generator=torch.Generator().manual_seed(cfg.seed))
    show = x1[: cfg.n_show]                                           # the fixed noise of every figure row

    # --- 1. two variances × respaced grids: FID and seconds per sample
    settings, shown, npz, n_common = sweep(denoise, path, x1, cfg, run, args.data_dir)
    panel(shown, run.out / "samples_by_setting.png",
          row_labels=[f"{SIGMA2[s['variance']]}, {s['steps']}" for s in settings.values()])
    plot_fid(settings, cfg, n_common, run.out / "fid_vs_steps.png")
    ratios = {f"{k} steps": variance_ratio(path, k) for k in cfg.steps}
    plot_curves(ratios, run.out / "variance_ratio.png", xlabel="t (each step t -> s)",
                ylabel=r"$\tilde\beta\,/\,\beta$",
                title=r"noise added by $\sigma^2=\tilde\beta$ relative to $\sigma^2=\beta$")

    # --- 2. the trajectory x_1 -> x_0 and the model's guess x̂_0 along it
    ts, states, guesses = trajectory(denoise, path, x1[: cfg.n_trajectory], cfg, run.device)
    cols = torch.linspace(0, cfg.trajectory_steps - 2, 8).round().long().tolist()  # guesses[i] is made from states[i]
    panel([row for k in range(cfg.n_trajectory)
           for row in ([states[i][k] for i in cols] + [states[-1][k]], [guesses[i][k] for i in cols])],
          run.out / "trajectory.png", col_labels=[f"t={ts[i].item():.2f}" for i in cols] + ["t=0 (end)"],
          row_labels=[name for _ in range(cfg.n_trajectory) for name in ("x_t", "guess x̂_0")])
    frames = list(range(0, cfg.trajectory_steps, max(1, cfg.trajectory_steps // 25))) + [cfg.trajectory_steps]
    save_gif([torch.cat([states[i], guesses[min(i, len(guesses) - 1)]]) for i in frames], run.out / "trajectory.gif",
             nrow=cfg.n_trajectory, duration_ms=150)         # top row x_t, bottom row x̂_0
    # how far each guess is from where the chain ends (the last step lands on its own guess: error 0, not shown)
    guess_error = [(g - states[-1]).pow(2).mean().item() for g in guesses[:-1]]
    plot_curves({"MSE(x̂_0 at t, final x_0)": (ts[:-2].tolist(), guess_error)}, run.out / "x0_guess_error.png",
                xlabel="t (sampling runs from 1 to 0)", ylabel="mean squared error", logy=True,
                title="when is the digit decided?")

    # --- 3. fixed noise: the same (x_1, seed) twice, then another sampler seed
    seeds = (cfg.seed + 1, cfg.seed + 1, cfg.seed + 2)
    again = [draw(denoise, path, show, cfg.steps[-1], "posterior", s, cfg, run.device) for s in seeds]
    panel([list(a) for a in again], run.out / "fixed_noise.png",
          row_labels=[f"seed {seeds[0]}", f"seed {seeds[1]} again", f"seed {seeds[2]}"])
    determinism = {"steps": cfg.steps[-1], "bitwise_equal_same_seed": torch.equal(again[0], again[1]),
                   "max_abs_diff_same_seed": (again[0] - again[1]).abs().max().item(),
                   "mean_abs_diff_other_seed": round((again[0] - again[2]).abs().mean().item(), 4)}

    # --- 4. early, middle and late training: the same noise through day 6's kept checkpoints
    checkpoints, rows = {}, []
    for p in kept_checkpoints(ckpt_path.parent):
        _, fn, _, c = load_ddpm(p, run.device, finished=False)
        t0 = time.time()
        x = draw(fn, path, x1[: cfg.n_eval], cfg.checkpoint_steps, "posterior", cfg.seed + 1, cfg, run.device)
        checkpoints[f"step {c['step']}"] = {"step": c["step"],
                                            **scored(x, (time.time() - t0) / len(x), run.dataset, args.data_dir)}
        rows.append(x[: cfg.n_show])
    if rows:
        panel(rows, run.out / "checkpoints.png", row_labels=list(checkpoints))
    else:
        checkpoints = {"note": f"skipped: {ckpt_path.parent.name} holds no checkpoint_step*.pt "
                               "(day 6 keeps them with --keep_every=N)"}
        print(checkpoints["note"])

    # --- outputs
    metrics = {
        "headline": {"name": f"FID of {cfg.npz} at n={npz['n']}",
                     "value": f"{npz['fid']:.2f} (floor {npz['fid_floor']:.2f})"},
        "model": {"checkpoint": str(ckpt_path.relative_to(ROOT) if ckpt_path.is_relative_to(ROOT) else ckpt_path),
                  "step": ckpt["step"], "preset": ckpt["preset"], "params": count_params(model),
                  **{k: ckpt["config"][k] for k in ("prediction", "schedule", "n_steps")}},
        "n_common": n_common, "settings": settings, "npz": npz,
        "beta_vs_posterior_mean_abs_diff": same_noise_gap(shown, settings, cfg),
        "variance_ratio_median": {k: round(sorted(r)[len(r) // 2], 4) for k, (_, r) in ratios.items()},
        "determinism": determinism, "checkpoints": checkpoints,
        "guess_error_by_t": {f"{ts[i].item():.2f}": round(guess_error[i], 5) for i in cols},
    }
    write_metrics(run.out, metrics, cfg, run, time.time() - start)
    print(f"{cfg.npz}: FID {npz['fid']:.2f} (floor {npz['fid_floor']:.2f}, n={npz['n']}); results in {run.out}")


if __name__ == "__main__":
    cli(main)
