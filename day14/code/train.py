"""Day 14 — super-resolution 16 → 32 (SR3): a diffusion model draws a sharp 32 × 32 image that explains a 16 × 16 one.

1. Data: the images framed to 32 × 32 (hr, resize.pad) and their 16 × 16 block means lr = A hr (resize.down).
2. SR3 (Saharia et al. 2022): a U-Net sees x_t and the bicubic-upsampled lr as two input channels and learns
   day 6's v target. With noise-conditioning augmentation (Ho et al. 2022, §4.2), a share p_aug of the training
   inputs lr is first noised to a level s > 0 of `aug_levels` on the same path, and the network is told the level
   (its class input); level 0 is the clean input.
3. Regression: the same U-Net without the x_t channel maps bicubic(lr) to hr under L2, for the same steps and
   batch. Its optimum is E[hr | lr], the mean of everything lr could have come from.
4. On n_eval held-out images: bicubic, regression and SR3 (level 0) — PSNR and SSIM to hr, consistency
   ‖A sr − lr‖, sharpness, FID / floor, confident share and class kept (evaluator on the central 28 × 28) — and
   the spread of k_diverse SR3 samples of one input.
5. A cascade: the committed samples of an earlier day's 28 × 28 model, brought to 16 × 16, are upsampled by SR3
   at each augmentation level: do samples, unlike real images, need the noised conditioning?

References: Saharia et al. 2022, "Image Super-Resolution via Iterative Refinement" (arXiv:2104.07636);
Ho et al. 2022, "Cascaded Diffusion Models for High Fidelity Image Generation" (arXiv:2106.15282).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from figures import save_cascade, save_comparison, save_spread
from measures import fidelity, realism
from resize import HR_SIDE, bicubic, crop, down, pad

from common.config import UserError, cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss
from common.loop import fit
from common.metrics import spread
from common.nets import UNet, UNetConfig, count_params
from common.paths import DiscreteVP, uniform_grid
from common.plotting import plot_loss_csv
from common.predictions import clipped, denoiser
from common.run import Run, write_metrics
from common.samplers import ddpm, sample_batched
from common.samples import load_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
ROOT = DAY.parent
# Earlier days' committed samples that a cascade can start from, tried in order; the first of this run's dataset.
CASCADE_SOURCES = ("day06/results/samples.npz", "day11/results/fashion-mnist/samples.npz")


def sr3_unet() -> UNetConfig:
    """x_t plus bicubic(lr) in, one class per augmentation level; no attention but the middle block's."""
    return UNetConfig(channels=16, n_res=1, attn_res=(), image_size=HR_SIDE, cond_channels=1, num_classes=5)


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    prediction: str = "v"            # what the SR3 network outputs (common.predictions)
    schedule: str = "cosine"
    n_steps: int = 1000
    unet: UNetConfig = field(default_factory=sr3_unet)  # the regression net: the same without x_t and classes
    aug_levels: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)  # noise levels s of the conditioning; the first is 0
    p_aug: float = 0.5               # share of training inputs noised to one of the levels s > 0
    sample_steps: int = 50           # ancestral steps of every SR3 sample
    n_eval: int = 1000               # held-out images upsampled by each method (and cascade samples)
    n_diverse: int = 100             # inputs drawn k_diverse times each, for the spread of SR3's samples
    k_diverse: int = 4
    cascade_from: str = "auto"       # base-stage samples (.npz, from the repo root); auto: CASCADE_SOURCES; "": none
    n_show: int = 6                  # inputs in the figures

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS
        from common.paths import SCHEDULES
        from common.predictions import PREDICTIONS
        from common.samples import MIN_SCORED

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(self.prediction in PREDICTIONS, "prediction", f"choose one of {', '.join(PREDICTIONS)}")
        require(self.schedule in SCHEDULES, "schedule", f"choose one of {', '.join(SCHEDULES)}")
        levels = self.aug_levels
        require(len(levels) >= 1 and levels[0] == 0 and all(0 <= a < b < 1 for a, b in zip(levels, levels[1:])),
                "aug_levels", "choose increasing levels in [0, 1) starting at 0, e.g. 0,0.1,0.2")
        require(self.unet.num_classes == len(levels), "unet.num_classes",
                f"choose {len(levels)}: one class per augmentation level")
        require(self.unet.cond_channels == self.unet.in_channels, "unet.cond_channels",
                f"choose {self.unet.in_channels}: the upsampled input has the image's channels")
        require(self.unet.image_size == HR_SIDE, "unet.image_size", f"choose {HR_SIDE}: the output side")
        require(0 <= self.p_aug <= 1 and (self.p_aug == 0 or len(levels) > 1), "p_aug",
                "choose a share in [0, 1] (0 when aug_levels is only 0)")
        require(self.n_steps >= self.sample_steps >= 1, "sample_steps", f"choose 1..n_steps={self.n_steps}")
        require(self.n_eval >= MIN_SCORED, "n_eval", f"score {MIN_SCORED} or more images")
        require(1 <= self.n_diverse <= self.n_eval and 1 <= self.n_show <= self.n_eval, "n_diverse",
                f"choose 1..n_eval={self.n_eval} inputs")
        require(self.k_diverse >= 2, "k_diverse", "choose 2 or more samples per input")
        require(self.cascade_from in ("auto", "") or (ROOT / self.cascade_from).is_file(), "cascade_from",
                "no such file: choose auto, nothing, or a samples .npz (from the repository root)")


PRESETS = {
    "smoke": Config(steps=20, batch_size=16, unet=replace(sr3_unet(), channels=8, num_classes=2), warmup=5,
                    sample_every=0, ckpt_every=10, log_every=5, aug_levels=(0.0, 0.3), sample_steps=4, n_eval=16,
                    n_diverse=2, k_diverse=2, n_show=2),
    "cpu": Config(steps=450, batch_size=128, lr=2e-3, warmup=50, ema_decay=0.995, sample_every=0, ckpt_every=150),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999, sample_every=0,
                  unet=replace(sr3_unet(), channels=64, n_res=2), ckpt_every=2000, sample_steps=250),
}


# --- the two models ------------------------------------------------------------------------------------------

def noised(lr: torch.Tensor, level: torch.Tensor, cfg: Config, path, generator) -> torch.Tensor:
    """The conditioning input at augmentation level index `level` (B,): alpha_s lr + sigma_s ε, s = aug_levels[i]
    (q(x_s | x_0) of the same path; level 0 is lr itself)."""
    s = torch.tensor(cfg.aug_levels, dtype=torch.float64)[level.cpu()]
    alpha, sigma = path.alpha_sigma(s, lr)
    return alpha * lr + sigma * torch.randn(lr.shape, generator=generator).to(lr)


def sr3_loss(cfg: Config, path):
    """SR3's training loss: day 6's denoising loss with bicubic(lr), noised to a random level, as a condition."""
    def loss_fn(net, hr, y, generator):
        lr = down(hr)
        augmented = torch.rand(len(hr), generator=generator) < cfg.p_aug
        level = torch.where(augmented, torch.randint(1, max(2, len(cfg.aug_levels)), (len(hr),),
                                                     generator=generator), 0).to(hr.device)
        cond = bicubic(noised(lr, level, cfg, path, generator))
        return diffusion_loss(net, hr, path, cfg.prediction, generator, cond=cond, y=level)[0].mean()
    return loss_fn


def regression_loss(net, hr, y, generator):
    """L2 between the network's single answer for bicubic(lr) and hr; its time input is held at 0."""
    guess = net(bicubic(down(hr)), torch.zeros(len(hr), device=hr.device))
    return (guess.float() - hr).pow(2).mean()


@torch.no_grad()
def regress(model, lr: torch.Tensor, device, batch: int = 500) -> torch.Tensor:
    out = [model(bicubic(part).to(device), torch.zeros(len(part), device=device)).float().cpu()
           for part in lr.split(batch)]
    return torch.cat(out)


def upsample(model, lr: torch.Tensor, level: int, cfg: Config, path, device, seed: int) -> torch.Tensor:
    """SR3 samples for lr (N, C, 16, 16) conditioned at augmentation level index `level`: ancestral steps from
    noise, with bicubic(lr noised to that level) concatenated to x_t at every step."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.full((len(lr),), level)
    cond = bicubic(noised(lr, levels, cfg, path, g))
    x1 = torch.randn(len(lr), lr.shape[1], HR_SIDE, HR_SIDE, generator=g)
    denoise = clipped(denoiser(model, cfg.prediction, path), path)
    return sample_batched(ddpm, denoise, x1, uniform_grid(path, cfg.sample_steps), path=path, device=device,
                          bf16=cfg.bf16, generator=g, desc=f"SR3 s={cfg.aug_levels[level]:g}",
                          cond={"cond": cond, "y": levels})


# --- the cascade's first stage -------------------------------------------------------------------------------

def cascade_source(cfg: Config, dataset: str) -> tuple[Path | None, str]:
    """The samples file the cascade starts from (None: no cascade) and a line saying which, or why none."""
    wanted = CASCADE_SOURCES if cfg.cascade_from == "auto" else (cfg.cascade_from,) if cfg.cascade_from else ()
    for name in wanted:
        path, about = ROOT / name, ROOT / name.replace("samples.npz", "metrics.json")
        made_on = json.loads(about.read_text()).get("dataset") if about.is_file() else None
        if path.is_file() and made_on == dataset:
            return path, f"cascade from {name} ({dataset})"
        if cfg.cascade_from != "auto":
            raise UserError(f"--cascade_from={name}: {'no such file' if not path.is_file() else f'made on {made_on}'}"
                            f"; choose samples of {dataset} with a metrics.json beside them, or --cascade_from=")
    return None, f"no cascade: no committed samples of {dataset} among {', '.join(wanted) or 'the sources'}"


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    # --- data and models
    data = load_images(cfg.dataset, "train", args.data_dir)
    test = load_images(cfg.dataset, "test", args.data_dir)
    side = data.x.shape[-1]
    source, about = cascade_source(cfg, data.name)   # before training: a wrong file stops the run now
    run = Run.from_args(args, data.name)
    path = DiscreteVP.named(cfg.schedule, cfg.n_steps)
    hr_train = pad(data.x)
    torch.manual_seed(cfg.seed)
    sr3, regression = UNet(cfg.unet), UNet(replace(cfg.unet, cond_channels=0, num_classes=0))
    # --- train both on the same budget
    parts = {"sr3": run.part("sr3"), "regression": run.part("regression")}
    _, sr3 = fit(sr3, sr3_loss(cfg, path), hr_train, None, cfg, parts["sr3"])
    _, regression = fit(regression, regression_loss, hr_train, None, cfg, parts["regression"])
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    # --- upsample held-out images three ways
    hr, labels = pad(test.x[:cfg.n_eval]), test.y[:cfg.n_eval]
    lr = down(hr)
    t_sample = time.time()
    outputs = {"bicubic": bicubic(lr), "regression": regress(regression, lr, run.device),
               "sr3": upsample(sr3, lr, 0, cfg, path, run.device, cfg.seed + 1)}
    sr3_seconds = time.time() - t_sample
    methods = {name: fidelity(x, hr, lr, side) | realism(x, labels, side, data.name, args.data_dir)
               for name, x in outputs.items()}
    draws = torch.stack([upsample(sr3, lr[:cfg.n_diverse], 0, cfg, path, run.device, cfg.seed + 2 + k)
                         for k in range(cfg.k_diverse)], dim=1)                  # (n_diverse, K, C, 32, 32)
    methods["sr3"]["spread"] = round(spread(crop(draws.clamp(-1, 1), side)), 4)
    # --- the cascade: an earlier day's samples, brought to 16 × 16, upsampled at each augmentation level
    print(about)
    cascade = {"source": about}
    if source is not None:
        base = pad(load_samples_npz(source)[0][:cfg.n_eval])
        cascade["base"] = realism(base, None, side, data.name, args.data_dir)   # the samples themselves
        ups = {s: upsample(sr3, down(base), i, cfg, path, run.device, cfg.seed + 100) for i, s in
               enumerate(cfg.aug_levels)}
        cascade["levels"] = {f"{s:g}": fidelity(x, base, down(base), side)
                             | realism(x, None, side, data.name, args.data_dir) for s, x in ups.items()}
        save_cascade(base[:cfg.n_show], down(base)[:cfg.n_show], ups, run.out / "cascade.png")
    # --- outputs
    out = run.out
    save_comparison(lr[:cfg.n_show], {name: x[:cfg.n_show] for name, x in outputs.items()}, hr[:cfg.n_show],
                    out / "comparison.png")
    save_spread(lr[:cfg.n_show], draws[:cfg.n_show], out / "sr3_samples.png")
    plot_loss_csv(out / "sr3" / "train_log.csv", out / "loss_sr3.png", title=f"SR3 ({cfg.prediction} target)")
    plot_loss_csv(out / "regression" / "train_log.csv", out / "loss_regression.png", title="regression (L2)")
    metrics = {
        "params": {"sr3": count_params(sr3), "regression": count_params(regression)},
        "train_seconds": {name: round(part.train_seconds, 1) for name, part in parts.items()},
        "sr3_seconds_per_image": round(sr3_seconds / cfg.n_eval, 4),
        "methods": methods, "cascade": cascade,
    }
    write_metrics(out, metrics, cfg, run, time.time() - start)
    for name, m in methods.items():
        print(f"{name:>10}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, consistency {m['consistency']:.4f}, "
              f"sharpness {m['sharpness_ratio']:.2f}× real, FID {m.get('fid_ratio', float('nan')):.2f}× floor")
    print(f"results in {out}")


if __name__ == "__main__":
    cli(main)
