"""Day 6 — The full DDPM training loop: a U-Net learns to denoise MNIST, then draws digits from noise.

Training (Alg. 1 of Ho et al. 2020): pick x0, t ~ U{1..T}, eps ~ N(0, I), form x_t = alpha_t x0 + sigma_t eps and
regress the network on its target (eps, x0 or v). Sampling (Alg. 2): start from N(0, I) at t = 1 and apply the
ancestral step down to t = 0. Everything reusable (schedules, U-Net, loop, sampler, evaluator) lives in `common`;
this file is the experiment: train, sample, score, and check that the model did not memorise its data.

References: Ho, Jain & Abbeel 2020 (arXiv:2006.11239); Nichol & Dhariwal 2021 (cosine schedule, respacing,
arXiv:2102.09672); Salimans & Ho 2022 (v-prediction, arXiv:2202.00512).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.config import cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss, min_snr_weight
from common.evaluator import score_images, unconfident
from common.loop import fit
from common.nets import UNet, UNetConfig, count_params
from common.paths import DiscreteVP, band_times, uniform_grid
from common.plotting import panel, plot_curves, plot_loss_csv, save_gif, save_grid
from common.predictions import TARGET, Coefficients, clipped, denoiser
from common.run import Run, write_metrics
from common.samples import save_samples_npz
from common.samplers import ddpm, sample_batched
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    prediction: str = "v"            # eps (Ho et al.), x0 or v: what the network outputs
    schedule: str = "cosine"         # linear | cosine | quadratic | sigmoid
    min_snr_gamma: float = 0.0       # > 0: Min-SNR-γ loss weights (Hang et al. 2023); 0: Ho's plain MSE
    n_steps: int = 1000              # T, the number of noise levels
    unet: UNetConfig = field(default_factory=UNetConfig)  # 32 x (1, 2, 2) channels, 2 ResBlocks a level, attention at 7
    sample_steps: int = 100          # respaced ancestral steps for the evaluation samples
    n_samples: int = 1000            # evaluation samples (ADM .npz, FID)

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
        require(0 <= self.min_snr_gamma < float("inf"), "min_snr_gamma", "choose 0 (plain MSE) or a positive γ, e.g. 5")
        if self.min_snr_gamma > 0:  # refuses the targets Min-SNR weights are not defined for
            min_snr_weight(self.prediction, self.min_snr_gamma)
        require(self.n_steps >= 1, "n_steps", "choose at least 1 noise level, e.g. 1000")
        require(1 <= self.sample_steps <= self.n_steps, "sample_steps", f"choose 1..n_steps={self.n_steps} steps")
        require(self.sample_every == 0 or self.n_steps >= 50, "n_steps",
                "the progress grids sample 50 steps: choose n_steps >= 50, or --sample_every=0")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"the evaluator scores {MIN_SCORED} or more samples")


PRESETS = {
    "smoke": Config(steps=30, batch_size=32, unet=UNetConfig(channels=16, n_res=1), warmup=5, sample_every=15,
                    ckpt_every=15, log_every=5, sample_steps=10, n_samples=64),
    # the ablation's winner (README): a small, fast network trained for more steps beats a bigger one on a CPU budget
    "cpu": Config(steps=3900, batch_size=128, lr=2e-3, warmup=100, ema_decay=0.995,
                  unet=UNetConfig(channels=16, n_res=1), sample_every=650, ckpt_every=300, keep_every=1300),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999,
                  unet=UNetConfig(channels=64, attn_res=(7, 14)), sample_every=5000, ckpt_every=2000,
                  sample_steps=1000, n_samples=10_000),
}


def sample(model, cfg: Config, path: DiscreteVP, n: int, shape, device, seed: int, steps: int, batch: int = 250):
    """n samples of shape (C, H, W) by ancestral sampling on a respaced grid; also the first 16's trajectory."""
    denoise = clipped(denoiser(model, cfg.prediction, path), path)      # x̂0 clipped to [-1, 1] (Ho et al.)
    ts = uniform_grid(path, steps)
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, *shape, generator=g)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
        chain = ddpm(denoise, x1[:16].to(device), ts, path=path, generator=g)
        trajectory = [x1[:16]] + [x.float().cpu() for x in chain]
    samples = sample_batched(ddpm, denoise, x1, ts, path=path, device=device, batch=batch, bf16=cfg.bf16, generator=g)
    return samples, trajectory


@torch.no_grad()
def loss_per_t(model, cfg: Config, path: DiscreteVP, x0, device, bins: int = 10):
    """The training loss of the final model on held-out images, in `bins` equal bands of t."""
    g = torch.Generator().manual_seed(1)
    centres, losses = [], []
    for b in range(bins):
        t = band_times(path, b, bins, len(x0), g)
        eps = torch.randn(x0.shape, generator=g)
        c = Coefficients.at(path, t, x0)
        xt = (c.alpha * x0 + c.sigma * eps).to(device)
        target = TARGET[cfg.prediction](x0, eps, c)
        losses.append((model(xt, t.float().to(device)).cpu() - target).pow(2).mean().item())
        centres.append((b + 0.5) / bins)
    return centres, losses


def nearest_neighbours(samples, train_x, test_x):
    """L2 distance of each sample (and of each real test image) to its nearest training image."""
    flat = train_x.flatten(1)
    def nn_dist(q):
        d = torch.cdist(q.flatten(1), flat)                           # (n, N_train)
        return d.min(1)
    d_gen, i_gen = nn_dist(samples)
    d_test, _ = nn_dist(test_x)
    return d_gen, i_gen, d_test


def build(cfg: Config):
    """The network, its noise schedule and the training loss (Alg. 1 of Ho et al.) that `cfg` describes."""
    path = DiscreteVP.named(cfg.schedule, cfg.n_steps)
    torch.manual_seed(cfg.seed)
    model = UNet(cfg.unet)
    weight = min_snr_weight(cfg.prediction, cfg.min_snr_gamma) if cfg.min_snr_gamma > 0 else None

    def loss_fn(net, x0, y, generator):
        return diffusion_loss(net, x0, path, cfg.prediction, generator, weight)[0].mean()
    return model, path, loss_fn


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    # --- data and model
    data = load_images(cfg.dataset, "train", args.data_dir)
    test = load_images(cfg.dataset, "test", args.data_dir)
    run = Run.from_args(args, data.name)
    model, path, loss_fn = build(cfg)

    def progress(ema, step):
        x, _ = sample(ema, cfg, path, 64, data.x.shape[1:], run.device, seed=0, steps=50)
        save_grid(x, run.out / "progress" / f"step_{step:06d}.png", nrow=8)

    # --- train
    model, ema = fit(model, loss_fn, data.x, None, cfg, run, on_sample=progress)
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    # --- sample and score
    t_sample = time.time()
    samples, trajectory = sample(ema, cfg, path, cfg.n_samples, data.x.shape[1:], run.device, cfg.seed + 1,
                                 cfg.sample_steps)
    sample_seconds = time.time() - t_sample
    scores = score_images(samples, dataset=data.name, data_dir=args.data_dir)
    d_gen, i_gen, d_test = nearest_neighbours(samples[:500], data.x, test.x[:500])
    centres, per_t = loss_per_t(ema, cfg, path, test.x[:256], run.device)
    # --- outputs
    out = run.out
    save_samples_npz(out / "samples.npz", samples)
    doubted = unconfident(samples[:100], data.name)                   # framed in red: top class prob <= 0.9
    save_grid(samples[:100], out / "samples.png", nrow=10, marked=doubted)
    save_gif(trajectory[::max(1, len(trajectory) // 20)] + [trajectory[-1]], out / "sampling.gif", nrow=4)
    plot_loss_csv(out / "train_log.csv", out / "loss.png", title=f"training loss ({cfg.prediction} target)")
    plot_curves({f"{cfg.prediction}-loss": (centres, per_t)}, out / "loss_per_t.png", xlabel="t",
                ylabel=f"MSE of the {cfg.prediction} target", title="held-out loss per t band", logy=True)
    closest = d_gen.argsort()[:8]
    panel([[samples[i] for i in closest], [data.x[i_gen[i]] for i in closest]], out / "nearest_neighbours.png",
          row_labels=["sample", "nearest train"])
    metrics = {
        "params": count_params(model), "train_seconds": round(run.train_seconds, 1),
        "train_images_per_s": round(cfg.steps * cfg.batch_size / max(run.train_seconds, 1e-9), 1),
        "sample_steps": cfg.sample_steps, "sample_seconds_per_image": round(sample_seconds / cfg.n_samples, 4),
        **scores,
        "samples_png_unconfident": None if doubted is None else torch.nonzero(doubted).flatten().tolist(),
        "nn_distance_samples_median": round(d_gen.median().item(), 3),
        "nn_distance_test_median": round(d_test.median().item(), 3),
        "nn_share_closer_than_any_test": round((d_gen < d_test.min()).float().mean().item(), 4),
        "loss_per_t": {f"{c:.2f}": round(v, 5) for c, v in zip(centres, per_t)},
        "criteria": {"confident_frac>=0.9": scores["confident_frac"] >= 0.9,
                     "class_entropy>=2.25": scores["class_entropy"] >= 2.25,
                     "fid<=3*floor": scores["fid"] <= 3 * scores["fid_floor"]},
    }
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"FID {scores['fid']:.2f} (floor {scores['fid_floor']:.2f}), confident {scores['confident_frac']:.1%} "
          f"(real test digits {scores['confident_frac_floor']:.1%}), class entropy {scores['class_entropy']:.3f}; "
          f"results in {out}")


if __name__ == "__main__":
    cli(main)
