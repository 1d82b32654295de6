"""Day 16 — flow matching: a network learns the velocity that carries noise to data along straight lines.

1. 2-D (toy.py): I-CFM and OT-CFM from N(0, I) to 8 Gaussians, moons and a checkerboard — trajectories,
   straightness, and the Euler steps each flow needs to come within reach of its toy.
2. MNIST: day 6's U-Net trained by conditional flow matching on the linear path (the velocity target, flows.py),
   and day 6's DDPM recipe (v target, cosine schedule) trained here for the same steps and batch. Samples of the
   flow by Euler, Heun and adaptive dopri5 (torchdiffeq) at several numbers of network calls (NFE), of the DDPM
   by its ancestral sampler; FID / floor and confident share / real share of each. results/samples.npz holds the
   flow's samples at the recommended NFE: the fewest calls whose FID is within `near` × the best of the flow's.

References: Lipman et al. 2023 (arXiv:2210.02747); Tong et al. 2024 (arXiv:2302.00482); Ho et al. 2020
(arXiv:2006.11239); Dormand & Prince 1980 (dopri5).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from figures import plot_nfe, plot_toy_distances, plot_toy_trajectories
from flows import PATH, PAIRINGS, cfm_loss
from toy import ToyConfig, run_toys

from common.config import cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss
from common.evaluator import score_images, unconfident
from common.loop import fit
from common.nets import UNet, UNetConfig, count_params
from common.paths import DiscreteVP, uniform_grid
from common.plotting import save_grid
from common.predictions import clipped, denoiser
from common.run import Run, write_metrics
from common.samplers import Counted, ddpm, dopri5, euler, heun, sample_batched
from common.samples import save_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio",
           "class_entropy")


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1))  # day 6's cpu network
    pairing: str = "icfm"                            # the MNIST flow's pairing (flows.PAIRINGS)
    schedule: str = "cosine"                         # the DDPM's (day 6's recipe: v target, 1000 levels)
    euler_steps: tuple[int, ...] = (4, 10, 20, 50)   # one call each
    heun_steps: tuple[int, ...] = (5, 10, 25)        # 2 n − 1 calls (the last step is Euler's)
    dopri_tols: tuple[float, ...] = (1e-2, 1e-3)     # rtol = atol of the adaptive solver
    ddpm_steps: tuple[int, ...] = (10, 50)           # the DDPM's ancestral steps, one call each
    n_samples: int = 1000                            # samples per setting, scored against real test images
    near: float = 1.1                                # recommended NFE: FID within near × the flow's best
    toy: ToyConfig = field(default_factory=ToyConfig)

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS
        from common.paths import SCHEDULES
        from common.samples import MIN_SCORED

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(self.pairing in PAIRINGS, "pairing", f"choose one of {', '.join(PAIRINGS)}")
        require(self.schedule in SCHEDULES, "schedule", f"choose one of {', '.join(SCHEDULES)}")
        for key in ("euler_steps", "heun_steps", "ddpm_steps"):
            require(all(n >= 1 for n in getattr(self, key)), key, "choose step counts ≥ 1")
        require(all(0 < tol < 1 for tol in self.dopri_tols), "dopri_tols", "choose tolerances in (0, 1), e.g. 1e-3")
        require(len(self.euler_steps + self.heun_steps + self.dopri_tols) >= 1, "euler_steps",
                "sample the flow at least once")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")
        require(self.near >= 1, "near", "choose a factor ≥ 1")


PRESETS = {
    "smoke": Config(steps=20, batch_size=16, unet=UNetConfig(channels=8, n_res=1), warmup=5, sample_every=0,
                    ckpt_every=10, log_every=5, euler_steps=(2,), heun_steps=(2,), dopri_tols=(0.1,),
                    ddpm_steps=(3,), n_samples=16,
                    toy=ToyConfig(steps=20, batch_size=64, warmup=5, ckpt_every=10, log_every=5, n_train=256,
                                  n_eval=64, euler_steps=(1, 4), fine_steps=8, toys=("8gaussians", "moons"))),
    # day 6's recipe, for fewer steps (both models get the same)
    "cpu": Config(steps=700, batch_size=128, lr=2e-3, warmup=100, ema_decay=0.995, sample_every=0, ckpt_every=350,
                  toy=ToyConfig(steps=2000, batch_size=256, lr=2e-3, warmup=100, ckpt_every=1000, log_every=100)),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999, sample_every=0,
                  unet=UNetConfig(channels=64, attn_res=(7, 14)), ckpt_every=2000, n_samples=10_000,
                  euler_steps=(4, 10, 20, 50, 100), heun_steps=(5, 10, 25, 50), dopri_tols=(1e-2, 1e-3, 1e-5),
                  ddpm_steps=(10, 50, 1000), toy=ToyConfig(steps=20_000, batch_size=1024, n_eval=10_000)),
}


def draw(sampler, denoise, noise: torch.Tensor, ts: torch.Tensor, path, cfg: Config, device, seed: int,
         batch: int) -> tuple[torch.Tensor, float, float]:
    """Samples from `noise`, clamped to [-1, 1] as an image file holds them; the network calls per sample path
    (averaged over the batches) and the seconds."""
    counted, start = Counted(denoise), time.time()
    x = sample_batched(sampler, counted, noise, ts, path=path, device=device, batch=batch, bf16=cfg.bf16,
                       generator=torch.Generator().manual_seed(seed))
    return x.clamp(-1, 1), counted.calls / -(-len(noise) // batch), time.time() - start


def settings(cfg: Config, ddpm_path: DiscreteVP) -> dict[str, tuple]:
    """name -> (model, sampler, grid) for every sampled setting; 'model' is "flow" or "ddpm" (on ddpm_path)."""
    out = {f"euler-{n}": ("flow", euler, uniform_grid(PATH, n)) for n in cfg.euler_steps}
    out |= {f"heun-{n}": ("flow", heun, uniform_grid(PATH, n)) for n in cfg.heun_steps}
    out |= {f"dopri5-{tol:g}": ("flow", partial(dopri5, rtol=tol, atol=tol), torch.tensor([1.0, 0.0],
                                dtype=torch.float64)) for tol in cfg.dopri_tols}
    out |= {f"ddpm-{n}": ("ddpm", ddpm, uniform_grid(ddpm_path, n)) for n in cfg.ddpm_steps}
    return out


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    # --- 1. 2-D
    toys, trajectories = run_toys(cfg.toy, run, cfg.seed)
    # --- 2. MNIST: the flow and day 6's DDPM recipe, same network, steps and batch
    ddpm_path = DiscreteVP.named(cfg.schedule, 1000)
    parts = {"flow": run.part("flow"), "ddpm": run.part("ddpm")}
    losses = {"flow": cfm_loss(cfg.pairing),
              "ddpm": lambda net, x0, y, g: diffusion_loss(net, x0, ddpm_path, "v", g)[0].mean()}
    nets = {}
    for name, part in parts.items():
        torch.manual_seed(cfg.seed)
        nets[name] = fit(UNet(cfg.unet), losses[name], data.x, None, cfg, part)[1]
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    denoisers = {"flow": denoiser(nets["flow"], "velocity", PATH),
                 "ddpm": clipped(denoiser(nets["ddpm"], "v", ddpm_path), ddpm_path)}
    paths = {"flow": PATH, "ddpm": ddpm_path}
    noise = torch.randn(cfg.n_samples, *data.x.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 1))
    rows, samples = {}, {}
    for name, (model, sampler, ts) in settings(cfg, ddpm_path).items():
        x, calls, seconds = draw(sampler, denoisers[model], noise, ts, paths[model], cfg, run.device, cfg.seed + 2,
                                 batch=250)
        scores = score_images(x, dataset=data.name, data_dir=args.data_dir)
        rows[name] = {"model": model, "nfe": round(calls, 1), "seconds_per_sample": round(seconds / len(x), 5),
                      **{k: scores[k] for k in REALISM}}
        samples[name] = x
        print(f"{name}: {calls:.0f} calls, FID {scores['fid_ratio']:.2f}× floor, "
              f"confident {scores['confident_ratio']:.2f}× real")
    flow_rows = {k: r for k, r in rows.items() if r["model"] == "flow"}
    best = min(r["fid"] for r in flow_rows.values())
    recommended = min((k for k, r in flow_rows.items() if r["fid"] <= cfg.near * best), key=lambda k: rows[k]["nfe"])
    # --- outputs
    out = run.out
    save_samples_npz(out / "samples.npz", samples[recommended])
    doubted = unconfident(samples[recommended][:100], data.name)
    save_grid(samples[recommended][:100], out / "samples.png", nrow=10, marked=doubted)
    save_grid(torch.cat([samples[k][:10] for k in rows]), out / "samples_by_setting.png", nrow=10)
    plot_nfe(rows, out / "nfe.png")
    plot_toy_trajectories(trajectories, out / "toy_trajectories.png")
    plot_toy_distances(toys, out / "toy_steps.png")
    metrics = {
        "params": count_params(nets["flow"]),
        "train_seconds": {name: round(part.train_seconds, 1) for name, part in parts.items()},
        "toys": toys, "settings": rows, "recommended": recommended,
        "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist(),
    }
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"recommended: {recommended} ({rows[recommended]['nfe']:.0f} calls, FID "
          f"{rows[recommended]['fid_ratio']:.2f}× floor); results in {out}")


if __name__ == "__main__":
    cli(main)
