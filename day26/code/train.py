"""Day 26 — ControlNet: edge maps and coarse masks steer day 6's frozen MNIST DDPM.

Day 6's unconditional DDPM (v-prediction, cosine schedule) is the frozen base. Two ControlNets (controlnet.py) learn
to steer it, each on (digit, control) pairs of the training split with the base's own loss: one from edge maps
(Sobel, non-maximum suppression, threshold), one from 7 × 7 masks of the digit's silhouette (controls.py). Only the
copies, the condition encoders and the zero convs train; the run checks that the base's weights never change.
Controls of held-out digits, one sample each, all settings from the same noises, DDIM (η = 0) on uniform steps:
the base (s = 0), each ControlNet at every control scale s, and both at once (Multi-ControlNet, s = 1). Each
setting gets both fidelities (edge F1 with a 1-pixel tolerance, mask IoU, re-extracted from its samples), FID / floor,
confident share / real share and the share classified as the source digit. results/samples.npz holds the
edge-controlled samples at s = 1, labels = the source digits' labels.

References: Zhang, Rao & Agrawala 2023 (arXiv:2302.05543); Ho et al. 2020 (arXiv:2006.11239);
Song, Meng & Ermon 2021 (DDIM, arXiv:2010.02502).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from controlnet import ControlNet, controlled
from controls import FIDELITY, edges, masks
from figures import control_panel, plot_scale_sweep

from common.checkpoint import load_ddpm
from common.config import cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss
from common.evaluator import score_images, unconfident
from common.loop import fit
from common.nets import count_params
from common.paths import uniform_grid
from common.plotting import save_grid
from common.predictions import clipped, denoiser
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import ddim, sample_batched
from common.samples import save_samples_npz
from common.syllabus import times_floor
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio",
           "class_accuracy")
BOTH = "edges + masks"


@dataclass
class Config(TrainConfig):                          # one recipe for each ControlNet (steps: its optimiser steps)
    day6_results: str = "day06/results"             # day 6's run folder, from the repo root ("": one inside --out)
    day6_args: tuple[str, ...] = ()                 # extra --key=value for day 6's train.py when it has to run
    hint_width: int = 16                            # the condition encoder's hidden width
    edge_threshold: float = 0.3                     # Sobel magnitude (x in [-1, 1]) above which a pixel is an edge
    edge_nms: bool = True                           # thin the edges by non-maximum suppression
    mask_side: int = 7                              # the masks' grid: side × side cells
    mask_threshold: float = 0.25                    # share of ink above which a cell belongs to the mask
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # control scales s > 0 (s = 0, the base, is always sampled)
    sample_steps: int = 20                          # DDIM steps
    n_samples: int = 1000                           # held-out digits whose controls are sampled, one sample each
    batch: int = 250                                # sampling batch
    n_show: int = 6                                 # control grids: controls (rows) ...
    seeds: int = 4                                  # ... and noises (columns)

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day6_args), "day6_args",
                "write day 6's options as --key=value, separated by commas")
        require(self.hint_width >= 1, "hint_width", "choose 1 or more channels")
        require(self.edge_threshold > 0, "edge_threshold", "choose a positive gradient magnitude, e.g. 0.3")
        require(self.mask_side >= 1 and 28 % self.mask_side == 0, "mask_side", "choose a divisor of 28, e.g. 7")
        require(0 <= self.mask_threshold < 1, "mask_threshold", "choose a share of ink in [0, 1), e.g. 0.25")
        require(1.0 in self.scales and min(self.scales) > 0, "scales",
                "choose positive scales including 1 (the Multi-ControlNet and samples.npz scale), e.g. 0.5,1,2")
        require(self.sample_steps >= 1 and self.batch >= 1, "sample_steps", "choose 1 or more")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")
        require(self.n_show >= 1 and self.seeds >= 1, "n_show", "show 1 or more controls and seeds")


PRESETS = {
    "smoke": Config(day6_results="", steps=4, batch_size=16, warmup=1, sample_every=0, ckpt_every=2, log_every=2,
                    hint_width=8, scales=(1.0, 2.0), sample_steps=2, n_samples=16, batch=16, n_show=2, seeds=2),
    # ~4.8 steps/s per ControlNet and ~30 s per setting's 1,000 DDIM samples on 2 idle threads: ~10 min in all
    "cpu": Config(steps=600, batch_size=64, lr=1e-3, warmup=20, ema_decay=0.99, sample_every=0, ckpt_every=300),
    "gpu": Config(steps=10_000, batch_size=256, lr=1e-4, warmup=500, ema_decay=0.999, sample_every=0,
                  ckpt_every=2000, sample_steps=50, n_samples=10_000, batch=1000),
}


def extractors(cfg: Config) -> dict:
    """Control name -> its operator on images (B, 1, H, W) in [-1, 1], with the config's settings."""
    return {"edges": partial(edges, threshold=cfg.edge_threshold, nms=cfg.edge_nms),
            "masks": partial(masks, side=cfg.mask_side, threshold=cfg.mask_threshold)}


# --- training: only the ControlNet learns ------------------------------------------------------------------

def train(name: str, base, path, prediction: str, x: torch.Tensor, control: torch.Tensor, cfg: Config, run: Run):
    """A ControlNet for `base` (seeded; its copy from the base's weights), fitted on (x, control) pairs with the
    base's loss (Zhang et al., Eq. 5: the diffusion loss, c an input); its EMA copy and what training cost."""
    torch.manual_seed(cfg.seed)
    net = ControlNet.from_base(base, cfg.hint_width)

    def loss(net, x0, c, generator):                # fit hands the controls over as the batch's "labels"
        steered = controlled(base, {"control": net})
        return diffusion_loss(steered, x0, path, prediction, generator, control=c)[0].mean()
    part = run.part(name)
    ema = fit(net, loss, x, control, cfg, part)[1]
    return ema, {"trainable_params": count_params(net), "train_seconds": round(part.train_seconds, 1),
                 "seconds_per_step": round(part.train_seconds / cfg.steps, 3)}


def settings(cfg: Config) -> dict[str, tuple[tuple[str, ...], float]]:
    """Every sampled setting by name: (the ControlNets it uses, the control scale s)."""
    rows = {"base (s = 0)": ((), 0.0)}
    for name in ("edges", "masks"):
        rows |= {f"{name}, s = {s:g}": ((name,), s) for s in cfg.scales}
    return rows | {f"{BOTH}, s = 1": (("edges", "masks"), 1.0)}


def fidelity(x: torch.Tensor, controls: dict[str, torch.Tensor], extract: dict) -> dict[str, float]:
    """Both fidelities of samples x to their controls: mean edge F1 and mean mask IoU, controls re-extracted."""
    return {FIDELITY[name].__name__: round(float(FIDELITY[name](extract[name](x), c).mean()), 4)
            for name, c in controls.items()}


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    ckpt_path = earlier_checkpoint(6, cfg.day6_results, run, args.device, args.data_dir, cfg.day6_args, by="day 26")
    base, _, path, ckpt = load_ddpm(ckpt_path, run.device)
    base.requires_grad_(False)
    run.dataset, prediction = ckpt["dataset"], ckpt["config"]["prediction"]
    extract = extractors(cfg)
    # --- the two ControlNets, on the training split's digits and their controls
    train_x = load_images(run.dataset, "train", args.data_dir).x
    before = {k: v.clone() for k, v in base.state_dict().items()}
    nets, costs = {}, {}
    for name, operator in extract.items():
        nets[name], costs[name] = train(name, base, path, prediction, train_x, operator(train_x), cfg, run)
    unchanged = all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    # --- held-out digits' controls; every setting from the same noises
    test = load_images(run.dataset, "test", args.data_dir)
    source, labels = test.x[:cfg.n_samples], test.y[:cfg.n_samples]
    controls = {name: operator(source) for name, operator in extract.items()}              # (N, 1, 28, 28) each
    noise = torch.randn(len(source), *source.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 1))
    grid = uniform_grid(path, cfg.sample_steps)

    def sample(names: tuple[str, ...], scale: float, x1: torch.Tensor, given: dict) -> torch.Tensor:
        """DDIM from the noises x1 under the named controls (given[name], one per noise), x̂0 clipped."""
        denoise = clipped(denoiser(controlled(base, {n: nets[n] for n in names}, scale), prediction, path), path)
        return sample_batched(ddim, denoise, x1, grid, path=path, device=run.device, batch=cfg.batch, bf16=cfg.bf16,
                              cond={n: given[n] for n in names}, desc=" + ".join(names) or "base").clamp(-1, 1)

    rows, samples = {}, {}
    for key, (names, scale) in settings(cfg).items():
        began = time.time()
        samples[key] = sample(names, scale, noise, controls)
        seconds = (time.time() - began) / len(noise)
        scores = score_images(samples[key], labels, dataset=run.dataset, data_dir=args.data_dir)
        rows[key] = {"controls": list(names), "scale": scale, **fidelity(samples[key], controls, extract),
                     "seconds_per_sample": round(seconds, 5), **{k: scores.get(k) for k in REALISM}}
        print(f"{key}: edge F1 {rows[key]['edge_f1']}, mask IoU {rows[key]['mask_iou']}, "
              f"FID {scores.get('fid_ratio')}× floor")
    # --- outputs
    out, saved = run.out, "edges, s = 1"
    save_samples_npz(out / "samples.npz", samples[saved], labels)
    doubted = unconfident(samples[saved][:100], run.dataset)
    save_grid(samples[saved][:100], out / "samples.png", nrow=10, marked=doubted)
    shown = slice(0, cfg.n_show)
    seeds = torch.randn(cfg.seeds, *source.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 2))
    for names in (("edges",), ("masks",), ("edges", "masks")):
        x1 = seeds.repeat(cfg.n_show, 1, 1, 1)                                 # each control with every seed
        given = {n: controls[n][shown].repeat_interleave(cfg.seeds, 0) for n in names}
        x = sample(names, 1.0, x1, given).reshape(cfg.n_show, cfg.seeds, *source.shape[1:])
        control_panel([controls[n][shown] for n in names], x, source[shown], names,
                      out / f"control_grid_{'_'.join(names)}.png")
    plot_scale_sweep(rows, out / "scale_sweep.png")
    edge, base_row, both = rows[saved], rows["base (s = 0)"], rows[f"{BOTH}, s = 1"]
    metrics = {"day6_checkpoint": {"path": str(ckpt_path.relative_to(ROOT)) if ckpt_path.is_relative_to(ROOT)
                                   else str(ckpt_path), "step": ckpt["step"], "preset": ckpt["preset"],
                                   "prediction": prediction, "schedule": ckpt["config"]["schedule"]},
               "sampler": {"name": "ddim", "eta": 0.0, "steps": cfg.sample_steps, "n": len(source),
                           "controls_from": f"{run.dataset} test split (first {len(source)})"},
               "base_params": count_params(base), "base_unchanged": unchanged, "training": costs,
               "settings": rows,
               "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist()}
    if edge["fid"] is not None:  # the root README's syllabus row (common.syllabus)
        metrics["headline"] = (f"edge ControlNet, s = 1: edge F1 {edge['edge_f1']:.2f} (base "
                               f"{base_row['edge_f1']:.2f}), {times_floor(edge)}; both controls: F1 "
                               f"{both['edge_f1']:.2f}, mask IoU {both['mask_iou']:.2f}")
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"edges at s = 1: edge F1 {edge['edge_f1']} (base {base_row['edge_f1']}); base weights "
          f"unchanged: {unchanged}; results in {out}")


if __name__ == "__main__":
    cli(main)
