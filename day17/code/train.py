"""Day 17 — the probability-flow ODE: the deterministic twin of a diffusion model, its solvers and its likelihood.

1. 2-D (toy.py), on the continuous VP path: Euler, Heun and RK4 on an ODE whose solution is known (their orders);
   the change-of-variables log-density of the 8 Gaussians with the exact field against the closed form; a small
   learned model's log-likelihood against the truth.
2. MNIST: day 6's trained DDPM (v target, cosine schedule, 1000 levels) as the ODE dx/dt = d_alpha x̂0 + d_sigma ε̂,
   solved by Euler, Heun, RK4 (common.samplers) and adaptive dopri5 (torchdiffeq) at several costs, against day 6's
   ancestral sampler (the reverse SDE) from the same noise: FID / floor, confident share / real share, network
   calls (NFE) and seconds per sample; how often the ODE and the SDE make the same digit from the same noise.
3. MNIST likelihood (likelihood.py): bits/dim of test digits through the ODE with Hutchinson's trace estimator,
   beside an independent-pixel histogram on the same 8-bit data and day 3's VAE bound (on binarised digits).
results/samples.npz holds the ODE's samples at the recommended setting: the fewest calls whose FID is within
`near` × the best ODE setting's.

References: Song et al. 2021 (arXiv:2011.13456); Chen et al. 2018 (arXiv:1806.07366); Grathwohl et al. 2019
(arXiv:1810.01367); Karras et al. 2022 (arXiv:2206.00364); Ho et al. 2020 (arXiv:2006.11239).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from figures import plot_density, plot_identity, plot_nfe, plot_orders
from likelihood import bits_per_dim, dequantise, drift, histogram_bits_per_dim, hutchinson, log_density, rademacher
from toy import ToyConfig, run_toys
from tqdm import tqdm

from common.checkpoint import load_ddpm
from common.config import cli, parse_args
from common.data import load_images
from common.evaluator import evaluator_for, load_evaluator, score_images, unconfident
from common.paths import edm_grid, uniform_grid
from common.plotting import panel, save_grid
from common.predictions import denoiser
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import Counted, ddpm, dopri5, euler, euler_step, heun, nfe, rk4, sample_batched
from common.samples import quantize, save_samples_npz

DAY = Path(__file__).resolve().parents[1]
GRIDS = {"uniform": uniform_grid, "edm": edm_grid}
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio")
ODE = {"euler": euler, "heun": heun, "rk4": rk4}


@dataclass
class Config:
    day6_results: str = "day06/results"  # day 6's run folder, from the repo root ("": a new one inside --out)
    day6_args: tuple[str, ...] = ()      # extra --key=value for day 6's train.py when it has to run
    grid: str = "uniform"                # the ODE solvers' time grid (GRIDS); DDPM's is uniform
    euler_steps: tuple[int, ...] = (10, 20, 50)      # one call a step
    heun_steps: tuple[int, ...] = (5, 10, 25)        # 2 n − 1 calls (the last step is Euler's)
    rk4_steps: tuple[int, ...] = (3, 5, 13)          # 4 n − 3 calls
    dopri_tols: tuple[float, ...] = (1e-2, 1e-3, 1e-4)   # rtol = atol of the adaptive solver
    ddpm_steps: tuple[int, ...] = (10, 20, 50)       # the ancestral sampler (reverse SDE), one call a step
    n_samples: int = 1000                # samples per setting, all from the same noises
    near: float = 1.1                    # recommended setting: FID within near × the best ODE setting's
    n_bpd: int = 500                     # test digits whose bits/dim are computed
    bpd_steps: int = 50                  # RK4 steps of the likelihood ODE, ρ-spaced (edm_grid) from 1/T to 1
    probes: int = 1                      # Hutchinson probes per digit
    n_show: int = 10                     # noises in the ODE-vs-SDE figure
    batch: int = 250
    bf16: bool = True                    # bf16 autocast while sampling (the likelihood runs in float32)
    seed: int = 0
    toy: ToyConfig = field(default_factory=ToyConfig)

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day6_args), "day6_args",
                "write day 6's options as --key=value, separated by commas")
        require(self.grid in GRIDS, "grid", f"choose one of {', '.join(GRIDS)}")
        for key in ("euler_steps", "heun_steps", "rk4_steps", "ddpm_steps"):
            require(all(n >= 1 for n in getattr(self, key)), key, "choose step counts ≥ 1")
        require(len(self.ddpm_steps) >= 1, "ddpm_steps", "sample the SDE at least once (the comparison needs it)")
        require(len(self.euler_steps + self.heun_steps + self.rk4_steps) >= 1, "euler_steps",
                "solve the ODE with Euler, Heun or RK4 at least once")
        require(all(0 < tol < 1 for tol in self.dopri_tols), "dopri_tols", "choose tolerances in (0, 1), e.g. 1e-3")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")
        require(self.near >= 1, "near", "choose a factor ≥ 1")
        for key in ("n_bpd", "bpd_steps", "probes", "n_show", "batch"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")


PRESETS = {
    "smoke": Config(day6_results="", day6_args=("--sample_every=0",), euler_steps=(3,), heun_steps=(2,),
                    rk4_steps=(2,), dopri_tols=(0.1,), ddpm_steps=(3,), n_samples=16, n_bpd=4, bpd_steps=3,
                    n_show=3, batch=16,
                    toy=ToyConfig(steps=30, batch_size=64, warmup=5, ckpt_every=15, log_every=5, n_train=256,
                                  n_eval=64, order_steps=(4, 8), identity_steps=(4,), nll_steps=4, probes=2,
                                  grid=8)),
    "cpu": Config(toy=ToyConfig(steps=3000, batch_size=256, lr=2e-3, warmup=100, ema_decay=0.995, ckpt_every=1500,
                                log_every=100)),
    "gpu": Config(n_samples=10_000, n_bpd=10_000, bpd_steps=50, probes=4, batch=1000,
                  euler_steps=(10, 20, 50, 100), heun_steps=(5, 10, 25, 50), rk4_steps=(3, 5, 13, 25),
                  dopri_tols=(1e-2, 1e-3, 1e-5), ddpm_steps=(10, 20, 50, 1000),
                  toy=ToyConfig(steps=20_000, batch_size=1024, ema_decay=0.999, n_eval=10_000, grid=120)),
}


# --- sampling ------------------------------------------------------------------------------------------------

@torch.no_grad()
def dopri5_to_data(denoise, x, ts, *, path, rtol, atol, generator=None):
    """dopri5 (torchdiffeq) from ts[0] to ts[-2] > 0, then Euler's step to ts[-1] = 0, as Heun's and RK4's last step:
    on a DDPM schedule d_sigma ~ 1/sigma is infinite at t = 0, where an adaptive solver's steps would shrink to
    nothing."""
    *_, x = dopri5(denoise, x, ts[:-1], path=path, rtol=rtol, atol=atol)
    yield x
    yield euler_step(denoise, x, ts[-2], ts[-1], path=path)


def settings(cfg: Config, path) -> dict[str, tuple]:
    """name -> (sampler, grid) for every sampled setting: the ODE solvers on cfg.grid, DDPM on its uniform grid."""
    grid = GRIDS[cfg.grid]
    out = {f"{name}-{n}": (ODE[name], grid(path, n))
           for name, steps in (("euler", cfg.euler_steps), ("heun", cfg.heun_steps), ("rk4", cfg.rk4_steps))
           for n in steps}
    span = torch.tensor([1.0, path.first_time, 0.0], dtype=torch.float64)   # the solver picks its steps to 1/T
    out |= {f"dopri5-{tol:g}": (partial(dopri5_to_data, rtol=tol, atol=tol), span) for tol in cfg.dopri_tols}
    out |= {f"ddpm-{n}": (ddpm, uniform_grid(path, n)) for n in cfg.ddpm_steps}
    return out


def sample_all(denoise, path, noise: torch.Tensor, cfg: Config, run, data_dir) -> tuple[dict, dict]:
    """Every setting from the same noise: rows of scores, calls and seconds, and the samples."""
    rows, samples = {}, {}
    for name, (sampler, ts) in settings(cfg, path).items():
        counted, start = Counted(denoise), time.time()
        x = sample_batched(sampler, counted, noise, ts, path=path, device=run.device, batch=cfg.batch, bf16=cfg.bf16,
                           generator=torch.Generator().manual_seed(cfg.seed + 2), desc=name).clamp(-1, 1)
        seconds, calls = time.time() - start, counted.calls / -(-len(noise) // cfg.batch)
        if sampler in ODE.values() or sampler is ddpm:
            assert calls == nfe(sampler, ts), (name, calls)               # what the counter saw is what nfe says
        scores = score_images(x, dataset=run.dataset, data_dir=data_dir)
        rows[name] = {"kind": "sde" if sampler is ddpm else "ode", "nfe": round(calls, 1),
                      "seconds_per_sample": round(seconds / len(x), 5), **{k: scores.get(k) for k in REALISM}}
        samples[name] = x
        print(f"{name}: {calls:.0f} calls, FID {scores.get('fid_ratio')}× floor, "
              f"confident {scores.get('confident_ratio')}× real")
    return rows, samples


def agreement(samples: dict, reference: str, dataset: str) -> dict | None:
    """Share of noises whose sample gets the evaluator's same class as the reference setting's (None: no
    evaluator); chance is about the sum of the squared class shares, ~0.1 for ten balanced classes."""
    if evaluator_for(dataset) is None:
        return None
    ev = load_evaluator(dataset)
    labels = {k: ev.probs(quantize(x)).argmax(1) for k, x in samples.items()}
    ref = labels[reference]
    share = torch.bincount(ref, minlength=10).double() / len(ref)
    return {"reference": reference, "chance": round(float(share.pow(2).sum()), 3),
            **{k: round(float((v == ref).double().mean()), 3) for k, v in labels.items() if k != reference}}


# --- likelihood ----------------------------------------------------------------------------------------------

def mnist_bits_per_dim(denoise, path, cfg: Config, run, data_dir) -> dict:
    """Bits/dim of the first n_bpd test digits under the ODE of `denoise`, Hutchinson's trace with `probes` probes,
    RK4 from t = 1/T to 1 on Karras et al.'s ρ-spaced grid (dense near the data, where the divergence changes
    fastest); and the baselines."""
    test = load_images(run.dataset, "test", data_dir).x[: cfg.n_bpd]
    train = load_images(run.dataset, "train", data_dir).x
    g = torch.Generator().manual_seed(cfg.seed + 3)
    field_ = drift(denoise, path)
    ts = edm_grid(path, cfg.bpd_steps)[:-1].flip(0)                       # 1/T ... 1, increasing
    dims = test[0].numel()
    bpd, start = [], time.time()
    for chunk in tqdm(test.split(cfg.batch // 4 or 1), desc="bits/dim", leave=False):
        x = dequantise(chunk, g).to(run.device)
        estimates = [log_density(field_, x, ts, hutchinson(rademacher(x.shape, g).to(x)))[0]
                     for _ in range(cfg.probes)]
        bpd.append(bits_per_dim(torch.stack(estimates).mean(0).cpu().double(), dims))
    bpd = torch.cat(bpd)
    half = 1.96 * float(bpd.std()) / math.sqrt(len(bpd)) if len(bpd) > 1 else float("nan")
    vae = json.loads((ROOT / "day03/results/metrics.json").read_text())["models"]["beta=1"]
    return {"n": len(bpd), "probes": cfg.probes, "solver": f"rk4, {cfg.bpd_steps} ρ-spaced steps",
            "nfe": 4 * cfg.bpd_steps, "t_start": float(ts[0]), "bpd": round(float(bpd.mean()), 4),
            "bpd_ci95": [round(float(bpd.mean()) - half, 4), round(float(bpd.mean()) + half, 4)],
            "seconds_per_digit": round((time.time() - start) / len(bpd), 3),
            "histogram_bpd": round(histogram_bits_per_dim(train, test), 4),
            "day3_vae_binarised_nll_bpd": vae["nll_bits_per_dim"]}


# --- the run -------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    if not run.is_main:  # nothing to train here but the 2-D model: under torchrun, rank 0 alone does the work
        return
    # --- 1. 2-D
    toys, maps = run_toys(cfg.toy, run, cfg.seed)
    # --- 2. MNIST: day 6's model, its ODE against its SDE from the same noise
    ckpt_path = earlier_checkpoint(6, cfg.day6_results, run, args.device, args.data_dir, cfg.day6_args,
                                   by="day 17")
    model, _, path, ckpt = load_ddpm(ckpt_path, run.device)
    denoise = denoiser(model, ckpt["config"]["prediction"], path)  # unclipped: the network's own ODE and SDE
    run.dataset = ckpt["dataset"]
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    noise = torch.randn(cfg.n_samples, *shape, generator=torch.Generator().manual_seed(cfg.seed + 1))
    rows, samples = sample_all(denoise, path, noise, cfg, run, args.data_dir)
    odes = {k: r for k, r in rows.items() if r["kind"] == "ode"}
    best = min(r["fid"] for r in odes.values()) if all(r["fid"] is not None for r in odes.values()) else None
    recommended = (min((k for k, r in odes.items() if r["fid"] <= cfg.near * best), key=lambda k: rows[k]["nfe"])
                   if best is not None else max(odes, key=lambda k: odes[k]["nfe"]))
    reference = max(odes, key=lambda k: odes[k]["nfe"])                    # the most accurate ODE solution
    same_noise = agreement(samples, reference, run.dataset)
    # --- 3. bits/dim
    bpd = mnist_bits_per_dim(denoise, path, cfg, run, args.data_dir)
    print(f"bits/dim: {bpd['bpd']:.3f} (histogram {bpd['histogram_bpd']:.3f})")
    # --- outputs
    out = run.out
    save_samples_npz(out / "samples.npz", samples[recommended])
    doubted = unconfident(samples[recommended][:100], run.dataset)
    save_grid(samples[recommended][:100], out / "samples.png", nrow=10, marked=doubted)
    sde = [k for k in rows if rows[k]["kind"] == "sde"]
    shown = [reference, *(k for k in odes if k.split("-")[0] != reference.split("-")[0])][:4] + sde[-1:]
    panel([list(samples[k][: cfg.n_show]) for k in shown], out / "ode_vs_sde.png", row_labels=shown)
    plot_nfe(rows, out / "nfe.png")
    plot_orders(toys["orders"], out / "orders.png")
    plot_identity(toys["identity"], out / "identity.png")
    plot_density(maps, out / "toy_density.png")
    metrics = {"day6_checkpoint": {"path": str(ckpt_path.relative_to(ROOT)) if ckpt_path.is_relative_to(ROOT)
                                   else str(ckpt_path), "step": ckpt["step"], "preset": ckpt["preset"]},
               "toy": toys, "settings": rows, "recommended": recommended, "same_noise": same_noise, "bits_per_dim": bpd,
               "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist()}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"recommended: {recommended} ({rows[recommended]['nfe']:.0f} calls); results in {out}")


if __name__ == "__main__":
    cli(main)
