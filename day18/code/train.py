"""Day 18 — rectified flow and reflow: train a flow on its own (noise, sample) pairs and its paths straighten.

1. 2-D (toy.py): 1-, 2- and 3-rectified flows to 8 Gaussians and moons; straightness, coupling cost, and the
   distance to the toy after 1, 2, 4, 8 Euler steps.
2. MNIST: day 16's flow (conditional flow matching on day 6's U-Net) is the 1-rectified flow. Its ODE (Heun) turns
   n_pairs noises into samples; the 2-rectified flow starts from its weights and trains on those pairs; a one-step
   model starts from the 2-RF and regresses the 2-RF's own map (pairs made the same way). FID / floor and confident
   share / real share at 1, 2, 4, 8 and 50 Euler steps for 1-RF and 2-RF, one step for the distilled model;
   straightness and coupling cost of both flows; the cost of every pair set.
results/samples.npz holds the 2-RF's one-step samples, results/samples_2rf_2step.npz its two-step ones.

References: Liu, Gong & Liu 2023 (arXiv:2209.03003); Liu et al. 2024, InstaFlow (arXiv:2309.06380);
Lipman et al. 2023 (arXiv:2210.02747).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from figures import plot_toy_trajectories
from common.reflow import PATH, coupling_cost, distill_loss, paired_loss, reflow_pairs, trainable_copy
from toy import ToyConfig, run_toys

from common.checkpoint import load_model
from common.config import cli, parse_args
from common.evaluator import score_images, unconfident
from common.loop import fit
from common.metrics import straightness
from common.paths import uniform_grid
from common.plotting import panel, plot_fid_vs_calls, save_grid
from common.predictions import denoiser
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import euler, sample_batched
from common.samples import save_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio")


@dataclass
class Config(TrainConfig):                          # the recipe of the 2-RF and of the one-step model
    day16_results: str = "day16/results"            # day 16's run folder, from the repo root ("": one inside --out)
    day16_args: tuple[str, ...] = ()                # extra --key=value for day 16's train.py when it has to run
    n_pairs: int = 8000                             # reflow pairs (and distillation pairs)
    pair_steps: int = 8                             # Heun steps that make them (2 n − 1 calls a pair)
    distill_steps: int = 1000                       # training steps of the one-step model
    euler_steps: tuple[int, ...] = (1, 2, 4, 8, 50)   # FID of 1-RF and 2-RF after these many Euler steps
    n_samples: int = 1000                           # samples per setting, all from the same noises
    n_straight: int = 256                           # noises whose fine trajectories give straightness
    fine_steps: int = 100
    batch: int = 250                                # sampling batch
    n_show: int = 10
    toy: ToyConfig = field(default_factory=ToyConfig)

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day16_args), "day16_args",
                "write day 16's options as --key=value, separated by commas")
        require({1, 2} <= set(self.euler_steps) and min(self.euler_steps) >= 1, "euler_steps",
                "include 1 and 2 (the saved samples), all ≥ 1")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")
        for key in ("n_pairs", "pair_steps", "distill_steps", "n_straight", "batch", "n_show"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        require(self.fine_steps >= 2, "fine_steps", "choose 2 or more")


PRESETS = {
    "smoke": Config(day16_results="", steps=10, batch_size=16, warmup=2, sample_every=0, ckpt_every=5, log_every=5,
                    n_pairs=32, pair_steps=2, distill_steps=6, euler_steps=(1, 2), n_samples=16, n_straight=8,
                    fine_steps=4, batch=16, n_show=3,
                    toy=ToyConfig(toys=("moons",), rounds=2, steps=20, batch_size=64, warmup=5, ckpt_every=10,
                                  log_every=5, n_train=256, n_pairs=256, pair_steps=4, n_eval=64, euler_steps=(1, 2),
                                  fine_steps=8)),
    # from 1-RF's weights at a lower rate than day 16's 2e-3 (Liu et al. fine-tune, too)
    "cpu": Config(steps=1500, batch_size=128, lr=1e-3, warmup=50, ema_decay=0.995, sample_every=0, ckpt_every=500,
                  toy=ToyConfig(steps=2000, batch_size=256, lr=2e-3, warmup=100, ckpt_every=1000, log_every=100)),
    "gpu": Config(steps=20_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999, sample_every=0,
                  ckpt_every=2000, n_pairs=100_000, pair_steps=25, distill_steps=10_000, n_samples=10_000,
                  n_straight=2000, batch=1000, toy=ToyConfig(steps=20_000, batch_size=1024, n_eval=10_000)),
}


def sample(denoise, noise: torch.Tensor, steps: int, cfg: Config, run) -> tuple[torch.Tensor, float]:
    """Euler's method at `steps` uniform steps from each noise, clamped to [-1, 1]; and the seconds it took."""
    start = time.time()
    x = sample_batched(euler, denoise, noise, uniform_grid(PATH, steps), path=PATH, device=run.device, batch=cfg.batch,
                       bf16=cfg.bf16, desc=f"euler {steps}")
    return x.clamp(-1, 1), time.time() - start


def make_pairs(denoise, shape: tuple[int, ...], cfg: Config, run, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """n_pairs noises of `shape` and where the flow's ODE carries them; what making them cost."""
    noise = torch.randn(cfg.n_pairs, *shape, generator=torch.Generator().manual_seed(seed))
    start = time.time()
    x0 = reflow_pairs(denoise, noise, cfg.pair_steps, device=run.device, batch=cfg.batch, bf16=cfg.bf16)
    cost = {"pairs": cfg.n_pairs, "solver": f"heun, {cfg.pair_steps} steps", "nfe_per_pair": 2 * cfg.pair_steps - 1,
            "seconds": round(time.time() - start, 1)}
    return x0, noise, cost


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    # --- 1. 2-D
    toys, trajectories = run_toys(cfg.toy, run, cfg.seed)
    # --- 2. MNIST: 1-RF is day 16's flow
    ckpt_path = earlier_checkpoint(16, cfg.day16_results, run, args.device, args.data_dir, cfg.day16_args,
                                   file="flow/checkpoint.pt", by="day 18")
    rf1, ckpt = load_model(ckpt_path, run.device, finished=True)
    run.dataset = ckpt["dataset"]
    shape = (rf1.cfg.in_channels, rf1.cfg.image_size, rf1.cfg.image_size)
    parts = {"2-rf": run.part("2rf"), "distill": run.part("distill")}
    flows = {"1-rf": rf1}
    x0, x1, pair_cost = make_pairs(denoiser(rf1, "velocity", PATH), shape, cfg, run, cfg.seed + 10)
    torch.manual_seed(cfg.seed)
    flows["2-rf"] = fit(trainable_copy(rf1), paired_loss, x0, x1, cfg, parts["2-rf"])[1].eval()
    d0, d1, distill_cost = make_pairs(denoiser(flows["2-rf"], "velocity", PATH), shape, cfg, run, cfg.seed + 20)
    torch.manual_seed(cfg.seed)
    distill_cfg = replace(cfg, steps=cfg.distill_steps, warmup=min(cfg.warmup, cfg.distill_steps),
                          ckpt_every=min(cfg.ckpt_every, cfg.distill_steps))
    student = fit(trainable_copy(flows["2-rf"]), distill_loss, d0, d1, distill_cfg, parts["distill"])[1].eval()
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    # --- 3. quality against Euler steps, from the same noises
    noise = torch.randn(cfg.n_samples, *shape, generator=torch.Generator().manual_seed(cfg.seed + 1))
    rows, samples = {}, {}
    settings = [(name, n, flows[name]) for name in flows for n in cfg.euler_steps] + [("distilled", 1, student)]
    for name, n, model in settings:
        x, seconds = sample(denoiser(model, "velocity", PATH), noise, n, cfg, run)
        scores = score_images(x, dataset=run.dataset, data_dir=args.data_dir)
        key = f"{name}-{n}"
        rows[key] = {"model": name, "nfe": n, "seconds_per_sample": round(seconds / len(x), 5),
                     **{k: scores.get(k) for k in REALISM}}
        samples[key] = x
        print(f"{key}: FID {scores.get('fid_ratio')}× floor, confident {scores.get('confident_ratio')}× real")
    # --- 4. straightness and coupling cost of each flow, on a fine Euler grid
    ts = uniform_grid(PATH, cfg.fine_steps)
    z1 = noise[: cfg.n_straight]
    paths = {}
    for name, model in flows.items():
        states = [z1, *(s.float().cpu() for s in euler(denoiser(model, "velocity", PATH), z1.to(run.device), ts,
                                                      path=PATH))]
        paths[name] = {"straightness": round(straightness(states, ts), 3),
                       "coupling_cost": round(coupling_cost(states[-1], z1), 2)}
    print(", ".join(f"{k}: straightness {v['straightness']}" for k, v in paths.items()))
    # --- outputs
    out = run.out
    save_samples_npz(out / "samples.npz", samples["2-rf-1"])
    save_samples_npz(out / "samples_2rf_2step.npz", samples["2-rf-2"])
    doubted = unconfident(samples["2-rf-1"][:100], run.dataset)
    save_grid(samples["2-rf-1"][:100], out / "samples.png", nrow=10, marked=doubted)
    panel([list(samples[k][: cfg.n_show]) for k in rows], out / "same_noise.png", row_labels=list(rows))
    plot_fid_vs_calls(rows, out / "fid_vs_nfe.png", "MNIST: rectified flows against steps",
                      "network calls per sample (Euler steps)")
    plot_toy_trajectories(trajectories, out / "toy_trajectories.png")
    reference = f"1-rf-{max(cfg.euler_steps)}"
    aim = {"fid_2rf_1step_over_1rf": round(rows["2-rf-1"]["fid"] / rows[reference]["fid"], 3),
           "distilled_over_1rf": round(rows["distilled-1"]["fid"] / rows[reference]["fid"], 3),
           "reference": reference} if rows[reference]["fid"] else None
    metrics = {"day16_checkpoint": {"path": str(ckpt_path.relative_to(ROOT)) if ckpt_path.is_relative_to(ROOT)
                                    else str(ckpt_path), "step": ckpt["step"], "preset": ckpt["preset"]},
               "toy": toys, "settings": rows, "flows": paths, "aim": aim,
               "cost": {"reflow_pairs": pair_cost, "distill_pairs": distill_cost,
                        "train_seconds": {name: round(part.train_seconds, 1) for name, part in parts.items()}},
               "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist()}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"2-RF one step: FID {rows['2-rf-1']['fid_ratio']}× floor; results in {out}")


if __name__ == "__main__":
    cli(main)
