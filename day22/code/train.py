"""Day 22 — diffusion transformers: a ViT over image patches, conditioned by adaLN-Zero, against the U-Net.

Every model learns class-conditional flow matching on the linear path (day 16's loss, the label an input of the
network) with the same recipe, steps and batch, and is sampled by Heun's method from the same noises and labels
(100 per class). Models: the course's U-Net and DiTs (common.dit) in three studies, each varying one thing of a
reference DiT: its size (width × depth, for the FID-against-GFLOPs trend of Peebles & Xie), its patch size, and its
conditioning (adaLN-Zero, in-context tokens, cross-attention). Every model's cost is its training FLOPs per image
(one batch's forward and backward, counted: flops.py); the DiT nearest the U-Net in FLOPs is their matched pair.
results/samples.npz holds the best DiT's samples, with their labels.

References: Peebles & Xie 2023 (arXiv:2212.09748); Lipman et al. 2023 (arXiv:2210.02747);
Karras et al. 2022 (Heun's sampler, arXiv:2206.00364).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from figures import label, plot_fid_vs_gflops

from common.config import cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss
from common.dit import CONDITIONINGS, DiT, DiTConfig
from common.evaluator import score_images, unconfident
from common.flops import training_flops
from common.loop import fit
from common.nets import UNet, UNetConfig, count_params
from common.paths import Linear, uniform_grid
from common.plotting import panel, save_grid
from common.predictions import denoiser
from common.run import Run, write_metrics
from common.samplers import euler, heun, nfe, sample_batched
from common.samples import save_samples_npz
from common.syllabus import times_floor
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
CLASSES = 10
PATH = Linear()
SAMPLERS = {"euler": euler, "heun": heun}
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio",
           "class_accuracy")


@dataclass
class Config(TrainConfig):                       # one recipe (steps, batch, lr, ...) for every model
    dataset: str = "mnist"
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1, num_classes=CLASSES))
    dit: DiTConfig = field(default_factory=lambda: DiTConfig(num_classes=CLASSES))  # the reference DiT
    widths: tuple[int, ...] = (32, 64, 112)      # the size study: DiTs of these widths ...
    depths: tuple[int, ...] = (2, 4, 6)          # ... and depths, pairwise
    patches: tuple[int, ...] = (2, 4, 7)         # the patch study: the reference DiT at these patch sizes
    conditionings: tuple[str, ...] = CONDITIONINGS   # the conditioning study: the reference DiT with each
    sampler: str = "heun"                        # euler | heun, on the probability-flow ODE
    sample_steps: int = 10                       # uniform steps (Heun: 2 n − 1 network calls)
    per_class: int = 100                         # samples per class and model, from the same noises
    batch: int = 250                             # sampling batch

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS
        from common.samples import MIN_SCORED

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        for key in ("unet.num_classes", "dit.num_classes"):
            net, name = key.split(".")
            require(getattr(getattr(self, net), name) == CLASSES, key, f"choose {CLASSES}: the datasets' classes")
        require((self.dit.image_size, self.dit.in_channels) == (self.unet.image_size, self.unet.in_channels),
                "dit.image_size", "give the DiT and the U-Net the same image size and channels (one dataset)")
        require(len(self.widths) == len(self.depths) >= 1, "widths", "give one width per depth, e.g. 32,64 and 2,4")
        require(all(w % 8 == 0 and w % self.dit.heads == 0 for w in self.widths), "widths",
                f"choose multiples of 8 that dit.heads={self.dit.heads} divides")
        require(min(self.depths) >= 1, "depths", "choose 1 or more blocks")
        require(len(self.patches) >= 1 and all(p >= 1 and self.dit.image_size % p == 0 for p in self.patches),
                "patches", f"choose divisors of dit.image_size={self.dit.image_size}")
        require(len(self.conditionings) >= 1 and set(self.conditionings) <= set(CONDITIONINGS), "conditionings",
                f"choose among {', '.join(CONDITIONINGS)}")
        require(self.sampler in SAMPLERS, "sampler", f"choose one of {', '.join(SAMPLERS)}")
        require(self.sample_steps >= 1 and self.batch >= 1, "sample_steps", "choose 1 or more")
        require(CLASSES * self.per_class >= MIN_SCORED, "per_class", f"score {MIN_SCORED} or more samples in all")


PRESETS = {
    "smoke": Config(steps=4, batch_size=8, warmup=1, sample_every=0, ckpt_every=2, log_every=2,
                    unet=UNetConfig(channels=8, n_res=1, num_classes=CLASSES),
                    dit=DiTConfig(width=16, depth=1, heads=2, num_classes=CLASSES), widths=(16,), depths=(1,),
                    patches=(4, 7), sample_steps=2, per_class=2, batch=20),
    # 8 models, each 200 steps of 64 images: their measured seconds per step (metrics.json) sum to the budget
    "cpu": Config(steps=200, batch_size=64, lr=1e-3, warmup=25, ema_decay=0.995, sample_every=0, ckpt_every=100),
    # CIFAR-10 (no evaluator: FIDs are skipped); the reference is DiT-S/2 (Peebles & Xie, Table 1)
    "gpu": Config(dataset="cifar10", steps=40_000, batch_size=256, lr=1e-4, warmup=1000, ema_decay=0.9999,
                  sample_every=0, ckpt_every=2000,
                  unet=UNetConfig(in_channels=3, image_size=32, channels=64, mults=(1, 2, 2, 2), attn_res=(16,),
                                  num_classes=CLASSES),
                  dit=DiTConfig(image_size=32, in_channels=3, patch=2, width=384, depth=12, heads=6,
                                num_classes=CLASSES),
                  widths=(192, 384, 768), depths=(6, 12, 12), patches=(2, 4, 8), sample_steps=25, per_class=1000,
                  batch=1000),
}


# --- the models and their loss --------------------------------------------------------------------------------

def dit_name(c: DiTConfig) -> str:
    """dit-{width}x{depth}-p{patch}, the conditioning appended when it is not adaLN-Zero."""
    return f"dit-{c.width}x{c.depth}-p{c.patch}" + ("" if c.conditioning == "adaln-zero" else f"-{c.conditioning}")


def lineup(cfg: Config) -> tuple[dict[str, UNetConfig | DiTConfig], dict[str, list[str]]]:
    """Every network to train by name, the U-Net first; and each study's DiTs by name."""
    studies = {"scaling": [replace(cfg.dit, width=w, depth=d) for w, d in zip(cfg.widths, cfg.depths)],
               "patch": [replace(cfg.dit, patch=p) for p in cfg.patches],
               "conditioning": [replace(cfg.dit, conditioning=c) for c in cfg.conditionings]}
    nets = {"unet": cfg.unet} | {dit_name(c): c for group in studies.values() for c in group}
    return nets, {study: [dit_name(c) for c in group] for study, group in studies.items()}


def loss_fn(net, x0, y, generator):
    """Conditional flow matching with the class as input: ‖v_θ(x_t, t, y) − (x1 − x0)‖² (Lipman et al., Eq. 9)."""
    return diffusion_loss(net, x0, PATH, "velocity", generator, y=y)[0].mean()


def train(name: str, net_cfg: UNetConfig | DiTConfig, data, cfg: Config, run: Run):
    """Build the network (seeded), count one training batch's FLOPs, fit it; its EMA copy and what it cost."""
    torch.manual_seed(cfg.seed)
    net = (UNet(net_cfg) if isinstance(net_cfg, UNetConfig) else DiT(net_cfg)).to(run.device)
    first = slice(0, cfg.batch_size)
    gflops = training_flops(net, loss_fn, data.x[first].to(run.device), data.y[first].to(run.device)) / 1e9
    part = run.part(name)
    ema = fit(net, loss_fn, data.x, data.y, cfg, part)[1]
    cost = {"model": "unet" if isinstance(net_cfg, UNetConfig) else "dit", "params": count_params(net),
            "gflops_per_image": float(f"{gflops:.4g}"), "train_seconds": round(part.train_seconds, 1),
            "seconds_per_step": round(part.train_seconds / cfg.steps, 3)}
    shape = {} if cost["model"] == "unet" else {k: getattr(net_cfg, k) for k in ("width", "depth", "patch",
                                                                                  "conditioning")}
    return ema, cost | shape


# --- sampling, scoring, and what the studies show ---------------------------------------------------------

def draw(net, noise: torch.Tensor, labels: torch.Tensor, cfg: Config, run: Run) -> tuple[torch.Tensor, float]:
    """Samples for `labels` from `noise` by cfg.sampler, clamped to [-1, 1]; and the seconds per sample."""
    start = time.time()
    x = sample_batched(SAMPLERS[cfg.sampler], denoiser(net, "velocity", PATH), noise,
                       uniform_grid(PATH, cfg.sample_steps), path=PATH, device=run.device, batch=cfg.batch,
                       bf16=cfg.bf16, cond={"y": labels})
    return x.clamp(-1, 1), (time.time() - start) / len(noise)


def falls(rows: dict, names: list[str]) -> bool | None:
    """Whether FID falls at every step up in training GFLOPs across `names`; None without FIDs."""
    points = sorted((rows[n]["gflops_per_image"], rows[n]["fid"]) for n in names)
    if any(fid is None for _, fid in points):
        return None
    return all(b < a for (_, a), (_, b) in zip(points, points[1:]))


def aims(rows: dict, studies: dict) -> dict:
    """The matched pair (the DiT of the size and patch studies nearest the U-Net in log-FLOPs) and each study's
    verdict on Peebles & Xie's claims."""
    unet = rows["unet"]
    match = min(studies["scaling"] + studies["patch"],
                key=lambda n: abs(math.log(rows[n]["gflops_per_image"] / unet["gflops_per_image"])))
    scored = unet["fid"] is not None
    return {"matched_dit": match,
            "gflops_dit_over_unet": round(rows[match]["gflops_per_image"] / unet["gflops_per_image"], 2),
            "fid_dit_over_unet": round(rows[match]["fid"] / unet["fid"], 2) if scored else None,
            "scaling_fid_falls_with_gflops": falls(rows, studies["scaling"]),
            "patch_fid_falls_with_gflops": falls(rows, studies["patch"]),
            "best_conditioning": min(studies["conditioning"], key=lambda n: rows[n]["fid"]) if scored else None}


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    nets, studies = lineup(cfg)
    trained = {name: train(name, net_cfg, data, cfg, run) for name, net_cfg in nets.items()}
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    # --- every model from the same noises and labels, 100 per class
    labels = torch.arange(CLASSES).repeat_interleave(cfg.per_class)                     # (N,), sorted by class
    noise = torch.randn(len(labels), *data.x.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 1))
    calls = nfe(SAMPLERS[cfg.sampler], uniform_grid(PATH, cfg.sample_steps))
    rows, samples = {}, {}
    for name, (ema, cost) in trained.items():
        samples[name], seconds = draw(ema, noise, labels, cfg, run)
        scores = score_images(samples[name], labels, dataset=data.name, data_dir=args.data_dir)
        rows[name] = {**cost, "nfe": calls, "seconds_per_sample": round(seconds, 5),
                      **{k: scores.get(k) for k in REALISM}}
        print(f"{name}: {cost['gflops_per_image']:.3f} GFLOPs per training image, FID {scores.get('fid_ratio')}× "
              f"floor, class accuracy {scores.get('class_accuracy')}")
    dits = [n for n in rows if rows[n]["model"] == "dit"]
    best = min(dits, key=lambda n: rows[n]["fid"]) if rows["unet"]["fid"] is not None else dit_name(cfg.dit)
    # --- outputs
    out = run.out
    save_samples_npz(out / "samples.npz", samples[best], labels)
    grid = torch.cat([samples[best][labels == c][:10] for c in range(CLASSES)])        # one row per class
    doubted = unconfident(grid, data.name)
    save_grid(grid, out / "samples.png", nrow=len(grid) // CLASSES, marked=doubted)
    first = [int(torch.nonzero(labels == c)[0]) for c in range(CLASSES)]                 # one noise per class
    panel([[samples[n][i] for i in first] for n in rows], out / "same_noise.png",
          row_labels=[label(r) for r in rows.values()], col_labels=[str(c) for c in range(CLASSES)])
    plot_fid_vs_gflops(rows, studies, out / "fid_vs_gflops.png")
    aim = aims(rows, studies)
    metrics = {"settings": rows, "studies": studies, "best_dit": best, "aim": aim,
               "sampler": {"name": cfg.sampler, "steps": cfg.sample_steps, "nfe": calls},
               "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist()}
    if aim["fid_dit_over_unet"] is not None:  # the root README's syllabus row (common.syllabus)
        metrics["headline"] = (f"{best}: {times_floor(rows[best])}; at the U-Net's FLOPs, {aim['matched_dit']}: "
                               f"{aim['fid_dit_over_unet']:.2f}× the U-Net's FID")
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"best DiT: {best} (FID {rows[best]['fid_ratio']}× floor); the U-Net's match in FLOPs: "
          f"{aim['matched_dit']}; results in {out}")


if __name__ == "__main__":
    cli(main)
