"""Day 23 — score distillation sampling: a frozen class-conditional diffusion model as the loss of a differentiable
generator, first of an image's own pixels, then of a 3-D voxel scene seen from every side.

Nothing is trained here but θ. The prior is day 9's class-conditional U-Net (v-prediction, cosine DiscreteVP, label
dropout, null token 10), read from its checkpoint, with classifier-free guidance in day 9's convention ε̃ = ε_∅ +
w (ε_c − ε_∅) (w = 1: the conditional model; DreamFusion's ω = 100 is w = 101 here).

(a) x = tanh(θ), `per_class` images of every class per guidance weight w: SDS's mode-seeking result against ancestral
    samples of the same classes from the same model. Per w: class accuracy, label probability, confident share / real
    share, saturation (share of |x| > 0.95) / real, diversity (mean pairwise L2 within a class) / real, FID / floor
    (at this small n the floor is high and the interval wide: read the ratios, not the FID itself).
(b) A D³ voxel grid of density and intensity rendered by emission–absorption (render.py) from `scene_views` random
    azimuths per step, every view pushed towards the class `scene_class`. Measured on `turn_views` evenly spaced
    azimuths: the evaluator's label and confidence per view, and the Janus test: how the view at φ + 180° compares
    with the view at φ mirrored left–right.

References: Poole, Jain, Barron & Mildenhall 2023 (DreamFusion, arXiv:2209.14988); Ho & Salimans 2022
(arXiv:2207.12598); Mildenhall et al. 2020 (NeRF, arXiv:2003.08934).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from figures import plot_trends, plot_views, save_by_w, save_front_back, save_turntable
from render import VoxelScene
from sds import WEIGHTINGS, optimise

from common.checkpoint import load_ddpm
from common.config import cli, parse_args
from common.data import load_images
from common.evaluator import load_evaluator, score_images
from common.metrics import rmse
from common.paths import uniform_grid
from common.predictions import clipped, denoiser, guided
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import ddpm, sample_batched
from common.samples import quantize, save_samples_npz

DAY = Path(__file__).resolve().parents[1]
CLASSES = 10                        # day 9's labels; CLASSES itself is its null token ∅
SATURATED = 0.95                    # |x| above this counts as a saturated pixel
SCORES = ("n", "class_accuracy", "label_prob", "confident_frac", "confident_ratio", "fid", "fid_ci95", "fid_floor",
          "fid_ratio")


@dataclass
class Config:
    day9_results: str = "day09/results"  # day 9's run folder, from the repo root ("": a new one inside --out)
    day9_args: tuple[str, ...] = ()      # extra --key=value for day 9's train.py when it has to run
    ws: tuple[float, ...] = (1, 3, 10, 30, 100)  # guidance weights of pixel SDS (w = 1: conditional)
    ancestral_ws: tuple[float, ...] = (1, 3)     # ... and of the ancestral samples shown next to them
    ancestral_steps: int = 50            # DDPM steps of an ancestral sample (day 9's)
    per_class: int = 16                  # images per class and setting
    steps: int = 300                     # SDS steps (Adam) on the pixels
    lr: float = 0.05
    t_min: float = 0.02                  # SDS times uniform on [t_min, t_max] (DreamFusion's range)
    t_max: float = 0.98
    weighting: str = "sigma2"            # w(t): sigma2 (σ_t²) or uniform
    scene_class: int = 3                 # what every view of the scene should show
    scene_w: float = 30.0                # guidance weight of the scene's SDS
    scene_size: int = 20                 # voxels per side
    scene_samples: int = 32              # depth samples per ray
    scene_density: float = 10.0          # σ = scene_density · softplus(ρ), in units of the grid's half-width
    scene_views: int = 4                 # random azimuths per step
    scene_steps: int = 2000
    scene_lr: float = 0.05
    turn_views: int = 36                 # evenly spaced azimuths of the measurement and the GIF (even: φ + 180°)
    batch: int = 250                     # ancestral sampling batch
    bf16: bool = True                    # bf16 autocast for the U-Net (CPU and CUDA)
    seed: int = 0

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day9_args), "day9_args",
                "write day 9's options as --key=value, separated by commas")
        require(len(self.ws) >= 1 and min(self.ws + self.ancestral_ws + (self.scene_w,)) >= 0, "ws",
                "choose guidance weights ≥ 0 (1: the conditional model)")
        require(self.per_class >= 2 and CLASSES * self.per_class >= MIN_SCORED, "per_class",
                "choose 2 or more per class (a class's diversity needs two)")
        require(0 < self.t_min < self.t_max <= 1, "t_min", "choose 0 < t_min < t_max ≤ 1")
        require(self.weighting in WEIGHTINGS, "weighting", f"choose one of {', '.join(WEIGHTINGS)}")
        require(0 <= self.scene_class < CLASSES, "scene_class", f"choose a class 0..{CLASSES - 1}")
        require(self.turn_views >= 2 and self.turn_views % 2 == 0, "turn_views",
                "choose an even number ≥ 2 (each view is compared with the one at φ + 180°)")
        for key in ("ancestral_steps", "steps", "scene_size", "scene_samples", "scene_views", "scene_steps", "batch"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        for key in ("lr", "scene_lr", "scene_density"):
            require(getattr(self, key) > 0, key, "choose a positive value")


PRESETS = {
    "smoke": Config(day9_results="", day9_args=("--ws=0,1", "--cg_scales=1", "--per_class_sweep=2", "--per_class=2",
                                                "--toy_n=200", "--toy_steps=5", "--sample_steps=5"),
                    ws=(1, 10), ancestral_ws=(1,), ancestral_steps=4, per_class=2, steps=3, scene_size=8,
                    scene_samples=8, scene_views=2, scene_steps=3, turn_views=8, batch=20),
    # on 2 idle threads a pixel-SDS step of 160 images takes ~0.3 s and a scene step ~0.04 s: ~10 min in all
    "cpu": Config(),
    "gpu": Config(per_class=100, steps=500, ancestral_steps=250, scene_size=32, scene_samples=64, scene_views=8,
                  scene_steps=3000, turn_views=72, batch=1000),
}


# --- measuring images -------------------------------------------------------------------------------------

def saturation(x: torch.Tensor) -> float:
    """The share of pixels with |x| > SATURATED."""
    return (x.abs() > SATURATED).float().mean().item()


def diversity(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images of the same class, averaged over the classes."""
    per_class = []
    for c in labels.unique():
        f = x[labels == c].flatten(1)                                            # (n, H·W)
        d = torch.cdist(f, f)
        per_class.append(d.sum() / (len(f) * (len(f) - 1)))                      # the diagonal is 0
    return torch.stack(per_class).mean().item()


def measure(x: torch.Tensor, labels: torch.Tensor, real: dict, dataset: str, data_dir) -> dict:
    """The evaluator's scores plus saturation and diversity, each also as a ratio to real test digits'."""
    s = score_images(x, labels, dataset=dataset, data_dir=data_dir)
    sat, div = saturation(x), diversity(x, labels)
    return {**{k: s.get(k) for k in SCORES}, "saturation": round(sat, 4),
            "saturation_ratio": round(sat / real["saturation"], 4), "diversity": round(div, 3),
            "diversity_ratio": round(div / real["diversity"], 4)}


def real_reference(dataset: str, data_dir, n_per_class: int = 100) -> dict:
    """Saturation and within-class diversity of n_per_class real test digits of every class."""
    test = load_images(dataset, "test", data_dir)
    pick = torch.cat([torch.nonzero(test.y == c).flatten()[:n_per_class] for c in range(CLASSES)])
    x, y = test.x[pick], test.y[pick]
    return {"n_per_class": n_per_class, "saturation": round(saturation(x), 4), "diversity": round(diversity(x, y), 3)}


# --- the two generators: pixels, and a voxel scene ---------------------------------------------------------

def pixel_sds(denoise, labels: torch.Tensor, path, cfg: Config, device, desc: str) -> tuple[torch.Tensor, float]:
    """SDS on x = tanh(θ), one image per label, from the same seeded start for every denoiser; (x, seconds)."""
    start = time.time()
    theta = 0.1 * torch.randn(len(labels), 1, 28, 28, generator=torch.Generator().manual_seed(cfg.seed + 2))
    theta = theta.to(device).requires_grad_(True)                               # (N, 1, 28, 28): x ≈ grey at first
    optimise(lambda g: torch.tanh(theta), [theta], denoise, labels.to(device), path=path, steps=cfg.steps, lr=cfg.lr,
             t_range=(cfg.t_min, cfg.t_max), weighting=cfg.weighting,
             generator=torch.Generator().manual_seed(cfg.seed + 3), bf16=cfg.bf16, desc=desc)
    return torch.tanh(theta).detach().cpu(), time.time() - start


def scene_sds(denoise, path, cfg: Config, device) -> tuple[VoxelScene, float]:
    """SDS on the voxel scene: each step renders scene_views random azimuths, all labelled scene_class."""
    start = time.time()
    scene = VoxelScene(cfg.scene_size, cfg.scene_density, torch.Generator().manual_seed(cfg.seed)).to(device)
    y = torch.full((cfg.scene_views,), cfg.scene_class, device=device)

    def views(generator):
        azimuth = 2 * math.pi * torch.rand(cfg.scene_views, generator=generator)
        return scene(azimuth.to(device), cfg.scene_samples)                      # (V, 1, 28, 28)
    optimise(views, list(scene.parameters()), guided(denoise, cfg.scene_w, CLASSES), y, path=path,
             steps=cfg.scene_steps, lr=cfg.scene_lr, t_range=(cfg.t_min, cfg.t_max), weighting=cfg.weighting,
             generator=torch.Generator().manual_seed(cfg.seed + 3), bf16=cfg.bf16, desc="sds scene")
    return scene, time.time() - start


# --- (b) the scene: the evaluator on every view, and the Janus test ----------------------------------------

@torch.no_grad()
def read_views(views: torch.Tensor, target: int, evaluator) -> dict:
    """The evaluator's label, top probability and target probability per view; the view at φ + 180° against the
    view at φ mirrored left–right (RMSE), against the unmirrored view at φ, and against a view 90° away."""
    probs = evaluator.probs(quantize(views))                                     # (V, 10)
    confidence, label = probs.max(1)
    half, back = len(views) // 2, views.roll(-len(views) // 2, 0)                # back[i]: the view at φ_i + 180°
    mirrored_probs = evaluator.probs(quantize(views.flip(-1)))
    return {"label": label.tolist(), "confidence": [round(c, 4) for c in confidence.tolist()],
            "p_target": [round(p, 4) for p in probs[:, target].tolist()],
            "target_share": round((label == target).float().mean().item(), 4),
            "mean_confidence": round(confidence.mean().item(), 4),
            "mean_p_target": round(probs[:, target].mean().item(), 4),
            "mirrored_target_share": round((mirrored_probs.argmax(1) == target).float().mean().item(), 4),
            "rmse_back_vs_mirrored": round(rmse(back, views.flip(-1)).mean().item(), 4),
            "rmse_back_vs_front": round(rmse(back, views).mean().item(), 4),
            "rmse_quarter_turn": round(rmse(views.roll(-half // 2, 0), views).mean().item(), 4)}


def headline(sds: dict, ancestral: dict, read: dict, cfg: Config) -> str:
    """Mode seeking at the smallest w (diversity next to ancestral samples'), and what the back of the scene shows:
    a mirrored front (semi-transparent volume) or a second front (the Janus face)."""
    w = f"w={min(cfg.ws):g}"
    back = read["rmse_back_vs_front"], read["rmse_back_vs_mirrored"]
    seen = ("a second front, not a mirrored one (Janus)" if back[0] < back[1] else "≈ the mirrored front")
    line = f"pixel SDS at {w}: diversity {sds[w]['diversity_ratio']:.2f}× real"
    if w in ancestral:
        line += f" (ancestral {ancestral[w]['diversity_ratio']:.2f}×)"
    return (f"{line}; 3-D: {read['target_share']:.0%} of {cfg.turn_views} views read as a {cfg.scene_class}, the back "
            f"view {seen}: RMSE {back[0]:.2f} to the front, {back[1]:.2f} to the mirrored front")


# --- the run ---------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    ckpt_path = earlier_checkpoint(9, cfg.day9_results, run, args.device, args.data_dir, cfg.day9_args,
                                   file="unet/checkpoint.pt", by="day 23")
    model, _, path, ckpt = load_ddpm(ckpt_path, run.device)
    model.requires_grad_(False)
    run.dataset = ckpt["dataset"]
    base = denoiser(model, ckpt["config"]["prediction"], path)                  # unclipped: SDS needs the raw ε̂
    real = real_reference(run.dataset, args.data_dir)
    labels = torch.arange(CLASSES).repeat_interleave(cfg.per_class)            # (N,), sorted by class
    shape = (len(labels), 1, 28, 28)
    images, ancestral, sds = {}, {}, {}

    # --- (a) reference: ancestral samples of the same classes from the same model (day 9's sampler)
    for w in cfg.ancestral_ws:
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed))
        tic = time.time()
        x = sample_batched(ddpm, clipped(guided(base, w, CLASSES), path), noise,
                           uniform_grid(path, cfg.ancestral_steps), path=path, device=run.device, batch=cfg.batch,
                           bf16=cfg.bf16, generator=torch.Generator().manual_seed(cfg.seed + 1), cond={"y": labels})
        images[f"ancestral w={w:g}"] = x
        ancestral[f"w={w:g}"] = {"w": w, "steps": cfg.ancestral_steps,
                                 "seconds_per_image": round((time.time() - tic) / len(x), 4),
                                 **measure(x, labels, real, run.dataset, args.data_dir)}

    # --- (a) SDS on pixels, x = tanh(θ), from the same start for every w
    for w in cfg.ws:
        x, seconds = pixel_sds(guided(base, w, CLASSES), labels, path, cfg, run.device, f"sds w={w:g}")
        images[f"SDS w={w:g}"] = x
        row = sds[f"w={w:g}"] = {"w": w, "steps": cfg.steps, "seconds_per_image": round(seconds / len(x), 4),
                                 **measure(x, labels, real, run.dataset, args.data_dir)}
        print(f"SDS w={w:g}: class accuracy {row['class_accuracy']:.1%}, saturation {row['saturation_ratio']:.2f}× "
              f"real, diversity {row['diversity_ratio']:.2f}× real")

    # --- (b) the scene
    scene, scene_seconds = scene_sds(base, path, cfg, run.device)
    azimuths = torch.arange(cfg.turn_views) * 2 * math.pi / cfg.turn_views
    with torch.no_grad():
        views = scene(azimuths.to(run.device), cfg.scene_samples).cpu()          # (V, 1, 28, 28)
    read = read_views(views, cfg.scene_class, load_evaluator(run.dataset))
    degrees = [round(math.degrees(a), 1) for a in azimuths.tolist()]

    # --- outputs
    out = run.out
    w_last = f"w={cfg.ws[-1]:g}"
    save_samples_npz(out / "samples.npz", images[f"SDS {w_last}"], labels)
    save_by_w(images, labels, out / "sds_grid_by_w.png")
    plot_trends(sds, out / "sds_vs_w.png")
    save_turntable(views, out / "scene_turntable.gif")
    save_front_back(views, degrees, out / "scene_front_back.png")
    plot_views(degrees, read["p_target"], read["confidence"], read["label"], cfg.scene_class, out / "scene_views.png")
    about = {"path": str(ckpt_path.relative_to(ROOT)) if ckpt_path.is_relative_to(ROOT) else str(ckpt_path),
             "step": ckpt["step"], "preset": ckpt["preset"],
             **{k: ckpt["config"][k] for k in ("prediction", "schedule", "n_steps")}}
    scene_row = {"class": cfg.scene_class, "w": cfg.scene_w, "steps": cfg.scene_steps, "seconds": round(
        scene_seconds, 1), "azimuth_deg": degrees, **read}
    metrics = {"day9_checkpoint": about, "real": real, "ancestral": ancestral, "sds": sds, "scene": scene_row,
               "headline": headline(sds, ancestral, read, cfg)}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"{metrics['headline']}; results in {out}")


if __name__ == "__main__":
    cli(main)
