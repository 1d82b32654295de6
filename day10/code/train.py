"""Day 10 — DDIM: day 6's model sampled by DDIM (η = 0 … 1, uniform and quadratic grids) against DDPM at 10 to 100
steps (FID, confident share, seconds per sample), the deterministic map η = 0 defines (one x_1 at many step counts,
inversion of test digits, slerp between two noises).

Nothing is trained here. The model is day 6's EMA U-Net, read from its self-describing checkpoint; when that is
missing, day 6's train.py is run once, as a subprocess, with the same preset.

References:
    Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", arXiv:2010.02502 (Eq. 12: the update with
        σ_t(η); Eq. 14: η = 0 as an Euler step of an ODE; §5.4: inversion and interpolation; App. D.2: grids).
    Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (Alg. 2).
    Shoemake (1985), "Animating rotation with quaternion curves" (slerp).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.checkpoint import load_ddpm
from common.config import cli, parse_args
from common.data import load_images
from common.evaluator import evaluator_for, load_evaluator, score_images
from common.nets import count_params
from common.paths import quadratic_grid, uniform_grid
from common.plotting import panel
from common.run import Run, earlier_checkpoint, write_metrics
from common.samples import quantize, save_samples_npz
from common.samplers import ddim, ddpm, sample_batched
from common.syllabus import times_floor
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend

DAY = Path(__file__).resolve().parents[1]
ROOT = DAY.parent
GRIDS = {"uniform": uniform_grid, "quadratic": quadratic_grid}
SCORES = ("n", "fid", "fid_ci95", "fid_floor", "fid_floor_ci95", "fid_ratio", "confident_frac", "precision", "recall")
NPZ = {"samples.npz": "ddim-uniform-eta0-20", "samples_ddim10.npz": "ddim-uniform-eta0-10",
       "samples_ddpm20.npz": "ddpm-uniform-20"}


@dataclass
class Config:
    day6_results: str = "day06/results"  # day 6's run folder, from the repo root ("": a new one inside --out)
    day6_args: tuple[str, ...] = ()      # extra --key=value for day 6's train.py when it has to run
    steps: tuple[int, ...] = (10, 20, 50, 100)  # DDPM vs DDIM (η = 0), uniform grid
    quadratic_steps: tuple[int, ...] = (10, 20)  # DDIM (η = 0) on the quadratic grid (≤ 44 on 1000 levels)
    etas: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)  # the η sweep ...
    eta_steps: tuple[int, ...] = (10, 50)           # ... at these step counts (uniform grid)
    n_eval: int = 1000                   # samples scored per setting
    n_npz: int = 1000                    # samples saved for the three NPZ settings (the first n_eval are scored)
    ddpm_full: int = 100                 # samples of 1000-step DDPM (0: skip), scored at this smaller n
    same_noise_steps: tuple[int, ...] = (10, 20, 50, 100, 1000)  # DDIM η = 0 from one x_1; the last is the reference
    n_show: int = 8                      # noises followed in the same-noise figure
    inversion_steps: tuple[int, ...] = (10, 20, 50, 100)
    n_invert: int = 100                  # test digits encoded to x_1 and decoded
    slerp_steps: int = 50                # DDIM steps of the interpolation figure
    n_interp: int = 9                    # points from one noise to the other
    batch: int = 250
    bf16: bool = True                    # bf16 autocast for the network (CPU and CUDA)
    seed: int = 0

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day6_args), "day6_args",
                "write day 6's options as --key=value, separated by commas")
        for key in ("steps", "eta_steps", "same_noise_steps", "inversion_steps"):
            require(len(getattr(self, key)) >= 1 and min(getattr(self, key)) >= 1, key, "choose step counts ≥ 1")
        require({10, 20} <= set(self.steps), "steps", "include 10 and 20 (the saved NPZ settings)")
        require(set(self.quadratic_steps) <= set(self.steps), "quadratic_steps", "choose some of steps")
        require(len(self.etas) >= 1 and all(0 <= e <= 1 for e in self.etas), "etas", "choose values in [0, 1]")
        require(self.n_eval >= MIN_SCORED, "n_eval", f"the evaluator scores {MIN_SCORED} or more samples")
        require(self.n_npz >= self.n_eval, "n_npz", "save at least the n_eval scored samples")
        require(self.ddpm_full == 0 or self.ddpm_full >= MIN_SCORED, "ddpm_full", f"0 or ≥ {MIN_SCORED}")
        for key in ("n_show", "n_invert", "slerp_steps", "batch"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        require(self.n_interp >= 3, "n_interp", "choose 3 or more points")


PRESETS = {
    "smoke": Config(day6_results="", day6_args=("--sample_every=0",), steps=(10, 20), etas=(0.0, 1.0),
                    eta_steps=(10,), n_eval=32, n_npz=40, ddpm_full=0, same_noise_steps=(5, 20), n_show=3,
                    inversion_steps=(5, 10), n_invert=4, slerp_steps=5, n_interp=3, batch=32),
    "cpu": Config(),
    "gpu": Config(n_eval=10_000, n_npz=10_000, ddpm_full=10_000, n_show=10, n_invert=1000, batch=1000),
}


# --- sampling and scoring -------------------------------------------------------------------------------------

def draw(denoise, path, x1, sampler: str, grid: str, steps: int, eta: float, cfg: Config, device) -> torch.Tensor:
    """Samples (N, 1, 28, 28) from the noises x1: DDPM (σ² = β̃, Alg. 2) or DDIM (Eq. 12) with η on the grid.
    The sampler's own noise comes from a generator seeded by cfg.seed, so every setting is reproducible."""
    kw = {"eta": eta} if sampler == "ddim" else {}
    return sample_batched(ddim if sampler == "ddim" else ddpm, denoise, x1, GRIDS[grid](path, steps), path=path,
                          device=device, batch=cfg.batch, bf16=cfg.bf16, desc=f"{sampler} {steps}",
                          generator=torch.Generator().manual_seed(cfg.seed + 1), **kw)


def settings(cfg: Config) -> list[tuple[str, str, int, float]]:
    """(sampler, grid, steps, η) of every scored setting: DDPM and DDIM on the uniform grid, DDIM on the quadratic
    one (its first step, (1/n)² of the way, falls below half a level of a 1000-level schedule beyond 44 steps: the
    grid would repeat level 0), then the η sweep."""
    out = [(s, "uniform", k, 0.0) for s in ("ddpm", "ddim") for k in cfg.steps]
    out += [("ddim", "quadratic", k, 0.0) for k in cfg.quadratic_steps]
    out += [("ddim", "uniform", k, e) for k in cfg.eta_steps for e in cfg.etas if (e > 0 or k not in cfg.steps)]
    return out


def key(sampler: str, grid: str, steps: int, eta: float) -> str:
    return f"ddpm-{grid}-{steps}" if sampler == "ddpm" else f"ddim-{grid}-eta{eta:g}-{steps}"


def sweep(denoise, path, x1, cfg: Config, run: Run, data_dir) -> tuple[dict, dict]:
    """Score every setting on the first n_eval noises; the NPZ settings draw n_npz and keep them."""
    table, kept = {}, {}
    for sampler, grid, steps, eta in settings(cfg):
        name = key(sampler, grid, steps, eta)
        n = cfg.n_npz if name in NPZ.values() else cfg.n_eval
        t0 = time.time()
        x = draw(denoise, path, x1[:n], sampler, grid, steps, eta, cfg, run.device)
        per_sample = (time.time() - t0) / n
        s = score_images(x[: cfg.n_eval], dataset=run.dataset, data_dir=data_dir)
        table[name] = {"sampler": sampler, "grid": grid, "steps": steps, "eta": eta,
                       "seconds_per_sample": round(per_sample, 5), **{k: s[k] for k in SCORES if k in s}}
        if name in NPZ.values():
            kept[name] = x
        print(f"{name}: FID {s['fid']:.2f} {s['fid_ci95']} (floor {s['fid_floor']:.2f}), "
              f"confident {s['confident_frac']:.3f}, {per_sample:.4f} s/sample")
    if cfg.ddpm_full:  # 1000 steps cost 10x the 100-step grid: fewer samples, their own floor at that n
        t0 = time.time()
        x = draw(denoise, path, x1[: cfg.ddpm_full], "ddpm", "uniform", 1000, 0.0, cfg, run.device)
        per_sample = (time.time() - t0) / cfg.ddpm_full
        s = score_images(x, dataset=run.dataset, data_dir=data_dir)
        table["ddpm-uniform-1000"] = {"sampler": "ddpm", "grid": "uniform", "steps": 1000, "eta": 0.0,
                                      "seconds_per_sample": round(per_sample, 5),
                                      "note": f"scored at n={cfg.ddpm_full}, not n_eval={cfg.n_eval} (time budget)",
                                      **{k: s[k] for k in SCORES if k in s}}
    return table, kept


def plot_fid(table: dict, cfg: Config, path: Path) -> None:
    """Left: FID against steps per sampler, 95% bootstrap bands, the real-data floor in grey.
    Right: FID against η at each of eta_steps."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    lines = {"DDPM (σ² = β̃)": ("ddpm", "uniform"), "DDIM η=0, uniform": ("ddim", "uniform"),
             "DDIM η=0, quadratic": ("ddim", "quadratic")}
    for label, (sampler, grid) in lines.items():
        steps = cfg.quadratic_steps if grid == "quadratic" else cfg.steps
        rows = [table[key(sampler, grid, k, 0.0)] for k in steps]
        a.plot(steps, [r["fid"] for r in rows], "o-", ms=3, label=label)
        a.fill_between(steps, *zip(*[r["fid_ci95"] for r in rows]), alpha=0.2)
    floor = table[key("ddim", "uniform", cfg.steps[0], 0.0)]
    a.axhline(floor["fid_floor"], color="grey", ls="--", label=f"real digits (floor, n={floor['n']})")
    a.set(xscale="log", xlabel="sampling steps", ylabel="FID (bands: 95% bootstrap)", title=f"n = {cfg.n_eval}")
    a.set_xticks(cfg.steps, [str(k) for k in cfg.steps])
    a.minorticks_off()
    a.legend(fontsize=8)
    for k in cfg.eta_steps:
        rows = [table[key("ddim", "uniform", k, e)] for e in cfg.etas]
        b.errorbar(cfg.etas, [r["fid"] for r in rows], capsize=3, marker="o", label=f"{k} steps",
                   yerr=[[r["fid"] - r["fid_ci95"][0] for r in rows], [r["fid_ci95"][1] - r["fid"] for r in rows]])
    b.set(xlabel="η (0: deterministic, 1: DDPM's β̃)", ylabel="FID", title="DDIM η sweep, uniform grid")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --- the deterministic map (η = 0) ---------------------------------------------------------------------------

def ddim_map(denoise, path, x, ts, cfg: Config, device) -> torch.Tensor:
    """Run η = 0 DDIM along ts (decreasing: decode; increasing: encode), in float32 (no autocast: inversion
    is a round trip, and bf16 rounding would be part of its error)."""
    return sample_batched(ddim, denoise, x, ts, path=path, device=device, batch=cfg.batch, bf16=False, desc="map")


def encoding_grid(path, steps: int) -> torch.Tensor:
    """The uniform grid run backwards, from the first level 1/T (ε̂ is undefined at σ = 0) up to t = 1."""
    ts = uniform_grid(path, steps).flip(0)
    ts[0] = path.first_time
    return ts


def inversion(denoise, path, digits: torch.Tensor, cfg: Config, device) -> tuple[dict, list]:
    """Encode test digits to x_1 with the η = 0 ODE run forwards, decode them back; error per step count."""
    out, rows = {}, [list(digits[: cfg.n_show])]
    for k in cfg.inversion_steps:
        code = ddim_map(denoise, path, digits, encoding_grid(path, k), cfg, device)
        back = ddim_map(denoise, path, code, uniform_grid(path, k), cfg, device)
        mse = (back - digits).pow(2).flatten(1).mean(1)                         # (N,) in [-1, 1] units
        psnr = 10 * torch.log10(4 / mse)                                         # peak-to-peak range 2
        out[f"{k} steps"] = {"mse": round(mse.mean().item(), 5), "psnr_db": round(psnr.mean().item(), 2),
                             "code_mean": round(code.mean().item(), 4), "code_std": round(code.std().item(), 4)}
        rows += [list(code[: cfg.n_show]), list(back[: cfg.n_show])]
        print(f"inversion, {k} steps: MSE {out[f'{k} steps']['mse']}, PSNR {out[f'{k} steps']['psnr_db']} dB")
    return out, rows


def slerp(za: torch.Tensor, zb: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """sin((1−λ)θ)/sin θ · z_a + sin(λθ)/sin θ · z_b, θ the angle between the noises (Shoemake 1985).  (L, ...)"""
    theta = torch.arccos((za * zb).sum() / (za.norm() * zb.norm()))
    lam = lam.reshape(-1, *[1] * za.dim())
    return (torch.sin((1 - lam) * theta) * za + torch.sin(lam * theta) * zb) / torch.sin(theta)


# --- the run ---------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    if not run.is_main:  # nothing to train here: under torchrun, rank 0 alone does the work
        return
    ckpt_path = earlier_checkpoint(6, cfg.day6_results, run, args.device, args.data_dir, cfg.day6_args,
                                   by="day 10")
    model, denoise, path, ckpt = load_ddpm(ckpt_path, run.device)
    run.dataset = ckpt["dataset"]
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)    # what day 6 trained on
    gen = torch.Generator().manual_seed(cfg.seed)
    x1 = torch.randn(max(cfg.n_npz, cfg.ddpm_full), *shape, generator=gen)     # the noises of every setting

    # --- 1. DDPM vs DDIM at 10-100 steps, both grids, the η sweep: FID, confident share, s/sample
    table, kept = sweep(denoise, path, x1, cfg, run, args.data_dir)
    for file, name in NPZ.items():
        save_samples_npz(run.out / file, kept[name])
    plot_fid(table, cfg, run.out / "fid_vs_steps.png")

    # --- 2. one x_1, many step counts: nearly the same digit (η = 0 is a map from noise to data)
    show = x1[: cfg.n_show]
    same = {k: ddim_map(denoise, path, show, uniform_grid(path, k), cfg, run.device) for k in cfg.same_noise_steps}
    ref_k = cfg.same_noise_steps[-1]
    classes = {k: score_classes(x, run.dataset) for k, x in same.items()}
    same_noise = {f"{k} steps": {"mean_abs_diff_to_ref": round((x - same[ref_k]).abs().mean().item(), 4),
                                 "class_agreement": classes[k] if classes[k] is None
                                 else round((classes[k] == classes[ref_k]).float().mean().item(), 3)}
                  for k, x in same.items()}
    ddpm_same = draw(denoise, path, show, "ddpm", "uniform", ref_k, 0.0, cfg, run.device)
    gap = (ddpm_same - same[ref_k]).abs().mean().item()                  # DDPM from the same x_1: another digit
    same_noise["ddpm (for contrast)"] = {"mean_abs_diff_to_ref": round(gap, 4)}
    panel([list(same[k]) for k in cfg.same_noise_steps] + [list(ddpm_same)], run.out / "same_noise.png",
          row_labels=[f"DDIM {k}" for k in cfg.same_noise_steps] + [f"DDPM {ref_k}"])

    # --- 3. inversion of test digits: x_0 -> x_1 -> x_0
    digits = load_images(run.dataset, "test", args.data_dir).x[: cfg.n_invert]
    inv, rows = inversion(denoise, path, digits, cfg, run.device)
    panel(rows, run.out / "inversion.png",
          row_labels=["test digit"] + [f"{w} ({k})" for k in cfg.inversion_steps for w in ("code x_1", "decoded")])

    # --- 4. slerp (and lerp, for contrast) between two noises
    lam = torch.linspace(0, 1, cfg.n_interp, dtype=torch.float64)
    za, zb = x1[0].double(), x1[1].double()
    paths = {"slerp": slerp(za, zb, lam), "lerp": (1 - lam.reshape(-1, 1, 1, 1)) * za + lam.reshape(-1, 1, 1, 1) * zb}
    decoded = {n: ddim_map(denoise, path, z.float(), uniform_grid(path, cfg.slerp_steps), cfg, run.device)
               for n, z in paths.items()}
    panel([list(decoded["slerp"]), list(decoded["lerp"])], run.out / "slerp.png", row_labels=["slerp", "lerp"],
          col_labels=[f"λ={v:.2f}" for v in lam.tolist()])
    norms = {n: [round(v, 2) for v in z.flatten(1).norm(dim=1).tolist()] for n, z in paths.items()}

    # --- outputs
    head = table[NPZ["samples.npz"]]
    metrics = {
        "headline": "20 DDIM steps (η=0): " + times_floor(head),
        "model": {"checkpoint": str(ckpt_path.relative_to(ROOT) if ckpt_path.is_relative_to(ROOT) else ckpt_path),
                  "step": ckpt["step"], "preset": ckpt["preset"], "params": count_params(model),
                  **{k: ckpt["config"][k] for k in ("prediction", "schedule", "n_steps")}},
        "table": table, "aims": aims(table),
        "npz": {file: {"setting": name, "n": len(kept[name])} for file, name in NPZ.items()},
        "same_noise": {"reference_steps": ref_k, **same_noise},
        "inversion": inv, "interpolation": {"lambda": lam.tolist(), "norm": norms, "sqrt_dim": math.sqrt(za.numel())},
    }
    write_metrics(run.out, metrics, cfg, run, time.time() - start)
    print(f"DDIM 20 steps: FID {head['fid']:.2f} (floor {head['fid_floor']:.2f}); results in {run.out}")


def score_classes(x: torch.Tensor, dataset: str) -> torch.Tensor | None:
    """The evaluator's class of each image (None without an evaluator)."""
    if evaluator_for(dataset) is None:
        return None
    return load_evaluator(dataset).probs(quantize(x)).argmax(dim=1)


def aims(table: dict) -> dict:
    """The day's two aims, as ratios of measured FIDs (reported, not enforced)."""
    fid = {k: v["fid"] for k, v in table.items()}
    out = {}
    if "ddpm-uniform-100" in fid:
        out["ddim20_over_ddpm100"] = round(fid["ddim-uniform-eta0-20"] / fid["ddpm-uniform-100"], 3)
        out["ddpm10_over_ddim10"] = round(fid["ddpm-uniform-10"] / fid["ddim-uniform-eta0-10"], 3)
        out["ddpm20_over_ddim20"] = round(fid["ddpm-uniform-20"] / fid["ddim-uniform-eta0-20"], 3)
    return out


if __name__ == "__main__":
    cli(main)
