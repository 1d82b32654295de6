"""Day 21 — denoising diffusion GANs: four large denoising steps, each one a conditional GAN.

A generator G(x_t, z, t) proposes a clean digit x̂0, the Gaussian posterior q(x_s | x_t, x̂0) takes it one step down
the grid 1, 0.75, 0.5, 0.25, 0 of day 6's path, and a discriminator D(x_s, x_t, t) judges the pair (ddgan.py). Both
train from scratch on day 6's data. Against day 6's DDPM, from the same noises: DDIM at the same 4 steps and the
ancestral sampler at its own number of steps; FID / floor, confident share / real share, precision and recall of
each and the seconds per sample; how much G's proposals change with z at each step; the losses of G and D.
results/samples.npz holds the DDGAN's samples.

The two networks train in the day's own loop (gan_loop.py: two optimisers, seeded per step, `--resume` exact).

References: Xiao, Kreis & Vahdat 2022 (arXiv:2112.07804); Mescheder, Geiger & Nowozin 2018 (arXiv:1801.04406); Ho,
Jain & Abbeel 2020 (arXiv:2006.11239); Song, Meng & Ermon 2021 (arXiv:2010.02502).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common.ddgan import PATH, Discriminator, DiscriminatorConfig, draw_z, gan_denoiser, generate
from common.gan_loop import interval_means, train_gan

from common.checkpoint import load_ddpm
from common.config import cli, parse_args
from common.data import load_images
from common.evaluator import score_images, unconfident
from common.nets import UNet, UNetConfig, count_params
from common.paths import uniform_grid
from common.plotting import panel, plot_curves, save_grid
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import ddim, ddpm, sample_batched
from common.samples import save_samples_npz

DAY = Path(__file__).resolve().parents[1]
SCORES = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio",
          "precision", "recall", "recall_floor")


@dataclass
class Config:
    day6_results: str = "day06/results"      # day 6's run folder, from the repo root ("": one inside --out)
    day6_args: tuple[str, ...] = ()          # extra --key=value for day 6's train.py when it has to run
    denoising_steps: int = 4                 # T: G's steps on uniform_grid(PATH, T), and DDIM's on day 6's model
    # G: day 6's small U-Net; z enters as cond_channels extra input channels of noise (its `cond`)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1, cond_channels=1))
    disc: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    steps: int = 1000                        # updates of D, and as many of G
    batch_size: int = 64
    lr_g: float = 2e-4                       # Adam's learning rates, constant
    lr_d: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.9)    # Adam's (β1, β2), as Xiao et al.
    r1_gamma: float = 0.05                   # γ of the R1 penalty γ/2 E‖∇_{x_s} D‖² on real pairs
    r1_every: int = 4                        # lazy R1: on every r1_every-th step only (as Xiao et al.'s code)
    ema_decay: float = 0.999                 # samples come from an EMA of G's weights
    bf16: bool = True                        # bf16 autocast, training and sampling
    log_every: int = 50                      # a row of train_log.csv: the means of this many steps
    ckpt_every: int = 500
    ddpm_steps: int = 100                    # day 6's ancestral sampler is scored at this many steps (day 6's own)
    n_samples: int = 1000                    # samples per setting, all from the same noises
    n_z: int = 8                             # latents per noisy test digit when measuring how G's proposals vary
    batch: int = 250                         # sampling batch
    n_show: int = 8
    seed: int = 0

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        require(all(a.startswith("--") and "=" in a for a in self.day6_args), "day6_args",
                "write day 6's options as --key=value, separated by commas")
        require(self.unet.cond_channels >= 1, "unet.cond_channels", "z enters G as noise channels: choose 1 or more")
        require(self.disc.in_channels == self.unet.in_channels, "disc.in_channels",
                f"choose G's unet.in_channels={self.unet.in_channels}")
        for key in ("denoising_steps", "steps", "batch_size", "r1_every", "log_every", "ckpt_every", "ddpm_steps",
                    "batch", "n_show"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        for key in ("lr_g", "lr_d"):
            require(0 < getattr(self, key) < math.inf, key, "choose a positive learning rate, e.g. 2e-4")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
                "choose two values in [0, 1), e.g. 0.5,0.9")
        require(0 <= self.r1_gamma < math.inf, "r1_gamma", "choose 0 (no R1) or a positive weight, e.g. 0.05")
        require(0 <= self.ema_decay < 1, "ema_decay", "choose a decay in [0, 1), e.g. 0.999")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"score {MIN_SCORED} or more samples")
        require(self.n_z >= 2, "n_z", "choose 2 or more latents (a spread needs two)")


PRESETS = {
    "smoke": Config(day6_results="", day6_args=("--sample_every=0",),
                    unet=UNetConfig(channels=8, n_res=1, cond_channels=1), disc=DiscriminatorConfig(channels=8),
                    steps=6, batch_size=8, r1_every=2, log_every=2, ckpt_every=3, ddpm_steps=5, n_samples=16, n_z=2,
                    batch=16, n_show=3),
    "cpu": Config(),                                # the defaults above
    "gpu": Config(unet=UNetConfig(channels=64, attn_res=(7, 14), cond_channels=1),
                  disc=DiscriminatorConfig(channels=64), steps=50_000, batch_size=256, lr_g=1.6e-4, lr_d=1.25e-4,
                  r1_gamma=0.02, r1_every=15, ema_decay=0.9999, ckpt_every=2000, ddpm_steps=1000, n_samples=10_000,
                  batch=1000),
}


# --- evaluation -------------------------------------------------------------------------------------------------

def sample(sampler, denoise, path, noise: torch.Tensor, ts: torch.Tensor, cfg: Config, run: Run, seed: int):
    """Samples from each noise on the grid ts (clamped to [-1, 1], as an image file holds them) and the seconds."""
    start = time.time()
    x = sample_batched(sampler, denoise, noise, ts, path=path, device=run.device, batch=cfg.batch, bf16=cfg.bf16,
                       generator=torch.Generator().manual_seed(seed), desc=f"{sampler.__name__} {len(ts) - 1}")
    return x.clamp(-1, 1), time.time() - start


@torch.no_grad()
def proposals(G, x0: torch.Tensor, grid: torch.Tensor, cfg: Config, run: Run) -> tuple[dict, list]:
    """Real digits x0 noised to each level t of the grid, and G's proposals x̂0 = G(x_t, z, t) for n_z latents each:
    the pixel standard deviation across z, averaged over pixels and digits (0: G ignores z, and its step is a single
    Gaussian, DDPM's); and, for the first digit, x_t and its first n_show proposals."""
    g = torch.Generator().manual_seed(cfg.seed + 4)
    spread, shown = {}, []
    for t in grid[:-1]:
        x_t = PATH.sample(x0, t, torch.randn(x0.shape, generator=g)).repeat_interleave(cfg.n_z, 0).to(run.device)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            x_hat = generate(G, x_t, t.expand(len(x_t)), draw_z(G, x_t, g)).float().cpu()
        x_hat = x_hat.unflatten(0, (len(x0), cfg.n_z))                        # (digits, n_z, C, H, W)
        spread[f"{float(t):.2f}"] = round(float(x_hat.std(1).mean()), 4)
        shown.append([x_t[0].float().cpu(), *x_hat[0, : cfg.n_show]])
    return spread, shown


def evaluate(G_ema, base, vp, grid, cfg: Config, run: Run, data_dir) -> tuple[dict, dict]:
    """The DDGAN, DDIM at as many steps on day 6's model and day 6's ancestral sampler at ddpm_steps, all from the
    same noises: a row of scores for each, and the samples."""
    shape = G_ema.cfg.in_channels, G_ema.cfg.image_size, G_ema.cfg.image_size
    noise = torch.randn(cfg.n_samples, *shape, generator=torch.Generator().manual_seed(cfg.seed + 1))
    n, k = cfg.denoising_steps, cfg.ddpm_steps
    settings = {f"ddgan-{n}": ("ddgan", ddpm, gan_denoiser(G_ema, torch.Generator().manual_seed(cfg.seed + 3)), PATH,
                               grid),
                f"ddim-{n}": ("ddim", ddim, base, vp, uniform_grid(vp, n)),
                f"ddpm-{k}": ("ddpm", ddpm, base, vp, uniform_grid(vp, k))}
    rows, samples = {}, {}
    for key, (model, sampler, denoise, path, ts) in settings.items():
        x, seconds = sample(sampler, denoise, path, noise, ts, cfg, run, cfg.seed + 2)
        scores = score_images(x, dataset=run.dataset, data_dir=data_dir)
        rows[key] = {"model": model, "nfe": len(ts) - 1, "seconds_per_sample": round(seconds / len(x), 5),
                     **{name: scores.get(name) for name in SCORES}}
        samples[key] = x
        print(f"{key}: FID {scores.get('fid_ratio')}× floor, confident {scores.get('confident_ratio')}× real, "
              f"recall {scores.get('recall')}")
    return rows, samples


def plot_losses(rows: list[dict], every: int, path: Path) -> None:
    """G's and D's losses, means over `every` steps, with their values when D cannot tell real from fake (D = 0)."""
    means = interval_means(rows, every)
    steps = [r["step"] for r in means]
    ends = [steps[0], steps[-1]]
    plot_curves({"D: E sp(−D(real)) + E sp(D(fake))": (steps, [r["loss_d"] for r in means]),
                 "G: E sp(−D(fake))": (steps, [r["loss_g"] for r in means]),
                 "D at chance: 2 log 2": (ends, [2 * math.log(2)] * 2),
                 "G at chance: log 2": (ends, [math.log(2)] * 2)},
                path, xlabel="step", ylabel="loss", title="DDGAN: non-saturating losses (D without R1)")


def ratio(a: float, b: float) -> float | None:
    """a / b to 3 places; None when b is 0 (a smoke run's recall can be)."""
    return round(a / b, 3) if b else None


def aims(rows: dict) -> dict | None:
    """The DDGAN's FID over DDIM's at as many steps (aim: below 1), its recall over the DDPM's (aim: near 1, the
    modes covered as well); None when the dataset has no evaluator."""
    gan, ddim_key, ddpm_key = rows
    if rows[gan]["fid"] is None:
        return None
    return {"ddim": ddim_key, "ddpm": ddpm_key, "ddgan_fid_over_ddim": ratio(rows[gan]["fid"], rows[ddim_key]["fid"]),
            "ddgan_recall_over_ddpm": ratio(rows[gan]["recall"], rows[ddpm_key]["recall"])}


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    if not run.is_main:  # one process trains both networks (no DistributedDataParallel): under torchrun, rank 0
        return
    ckpt_path = earlier_checkpoint(6, cfg.day6_results, run, args.device, args.data_dir, cfg.day6_args, by="day 21")
    _, base, vp, ckpt6 = load_ddpm(ckpt_path, run.device)      # base: day 6's denoiser, x̂0 clipped as Ho et al.
    run.dataset = ckpt6["dataset"]
    data = load_images(run.dataset, "train", args.data_dir)
    grid = uniform_grid(PATH, cfg.denoising_steps)
    # --- train G and D from scratch
    torch.manual_seed(cfg.seed)
    G, D = UNet(cfg.unet), Discriminator(cfg.disc)
    G_ema, log = train_gan(G, D, data.x, grid, cfg, run)
    # --- sample and score; how much z moves G's proposals
    rows, samples = evaluate(G_ema, base, vp, grid, cfg, run, args.data_dir)
    spread, shown = proposals(G_ema, load_images(run.dataset, "test", args.data_dir).x[:64], grid, cfg, run)
    # --- outputs
    out, gan = run.out, next(iter(rows))
    save_samples_npz(out / "samples.npz", samples[gan])
    doubted = unconfident(samples[gan][:100], run.dataset)
    save_grid(samples[gan][:100], out / "samples.png", nrow=10, marked=doubted)
    panel([list(samples[k][: cfg.n_show]) for k in rows], out / "same_noise.png", row_labels=list(rows))
    panel(shown, out / "proposals.png", row_labels=[f"t = {t}" for t in spread],
          col_labels=["x_t", *(f"x̂0, z{i + 1}" for i in range(len(shown[0]) - 1))])
    plot_losses(log, cfg.log_every, out / "losses.png")
    day6 = {"path": str(ckpt_path.relative_to(ROOT)) if ckpt_path.is_relative_to(ROOT) else str(ckpt_path),
            "step": ckpt6["step"], "preset": ckpt6["preset"], "prediction": ckpt6["config"]["prediction"],
            "schedule": ckpt6["config"]["schedule"]}
    metrics = {"day6_checkpoint": day6, "grid": [round(float(t), 4) for t in grid],
               "params": {"generator": count_params(G), "discriminator": count_params(D)},
               "settings": rows, "z_spread": spread, "aim": aims(rows),
               "cost": {"train_seconds": round(run.train_seconds, 1),
                        "day6_train_seconds": round(ckpt6["elapsed_s"], 1)},
               "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist()}
    if metrics["aim"]:  # the root README's row for this day (common.syllabus)
        r, ddim_row = rows[gan], rows[metrics["aim"]["ddim"]]
        metrics["headline"] = (f"DDGAN, {r['nfe']} steps: FID {r['fid_ratio']:.1f}× floor, recall {r['recall']:.2f}; "
                               f"DDIM, {ddim_row['nfe']} steps: {ddim_row['fid_ratio']:.1f}×")
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"DDGAN, {cfg.denoising_steps} steps: FID {rows[gan]['fid_ratio']}× floor; results in {out}")


if __name__ == "__main__":
    cli(main)
