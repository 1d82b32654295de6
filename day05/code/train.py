"""Day 05 — Reverse process intuition: run the DDPM reverse chain q(x_s | x_t, x_0) with three kinds of x_0.

Every ancestral step needs a guess of x_0; the reverse chain is otherwise the exact posterior
q(x_s | x_t, x_0) of the forward process. We give it (1) the true x_0 (the oracle: the chain walks back to
that image), (2) the exact denoiser E[x_0 | x_t] of 256 training images (it can only return copies of
them: nearest-neighbour distances), and (3) small U-Nets trained briefly to predict eps, x_0 or v, whose
implied x_0 and eps errors we measure on held-out images in ten bands of t. The same three ways run on
the 2-D 8-Gaussians toy, where the exact denoiser of the whole mixture is also available.

References:
    Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (Eqs. 4, 6, 7).
    Salimans & Ho (2022), "Progressive Distillation for Fast Sampling of Diffusion Models" (v-prediction,
        the loss weightings of §4), arXiv:2202.00512.
    Efron (2011), "Tweedie's formula and selection bias", JASA 106(496) (posterior means of mixtures).
    Kadkhodaie, Guth, Simoncelli & Mallat (2024), "Generalization in diffusion models arises from
        geometry-adaptive harmonic representations", ICLR (the empirical denoiser memorises).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from common.config import cli, parse_args
from common.data import load_images
from common.denoisers import MixtureDenoiser, effective_count
from common.diffusion import diffusion_loss
from common.loop import fit
from common.nets import MLP, MLPConfig, UNet, UNetConfig
from common.paths import DiscreteVP, band_times, uniform_grid
from common.plotting import panel, plot_curves, save_gif, trajectories2d
from common.predictions import clipped, denoiser
from common.run import Run, write_metrics
from common.samplers import ddpm
from common.toy2d import eight_gaussians, sample_toy, sliced_wasserstein
from common.training import TrainConfig
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend
from reverse import implied_errors, nearest, predict_x0

DAY = Path(__file__).resolve().parents[1]
N_SHOW, N_COLS = 8, 11                      # images per row and time columns in the panels
PREDICTIONS = ("eps", "x0", "v")          # the three targets a DDPM network can learn (day 6 compares them too)
GIF_SHOW, GIF_FRAMES = 4, 12                # chains per way and frames in the GIF (noise frames cost ~60 kB)


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    schedule: str = "linear"                # Ho et al.'s β_1 = 1e-4 .. β_T = 0.02
    n_steps: int = 1000                     # T
    sample_steps: int = 100                 # respaced reverse steps (the posterior works between any s < t)
    n_subset: int = 256                     # training images the exact denoiser knows
    n_samples: int = 64                     # reverse chains per way (each starts from a test image's x_1)
    n_eval: int = 256                       # held-out images per t band for the error curves
    t_bins: int = 10
    # the small U-Net, one per target eps / x0 / v
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, mults=(1, 2), n_res=1, attn_res=()))
    toy_train: int = 20_000                 # 8-Gaussians points the MLP trains on
    toy_subset: int = 64                    # points the toy's empirical denoiser knows
    toy_samples: int = 2000                 # reverse chains on the toy
    toy_steps: int = 1500
    toy_batch: int = 256
    toy_hidden: int = 128

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS
        from common.paths import SCHEDULES

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(self.schedule in SCHEDULES, "schedule", f"choose one of {', '.join(SCHEDULES)}")
        require(self.n_steps >= 1, "n_steps", "choose at least 1 noise level, e.g. 1000")
        require(1 <= self.sample_steps <= self.n_steps, "sample_steps", f"choose 1..n_steps={self.n_steps} steps")
        for key in ("n_subset", "n_samples", "n_eval", "t_bins", "toy_subset", "toy_samples", "toy_batch"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        require(self.toy_train >= self.toy_subset, "toy_train", f"choose at least toy_subset={self.toy_subset} points")
        require(self.toy_steps >= max(1, self.warmup), "toy_steps",
                f"the toy MLP trains with the same warm-up: choose at least warmup={self.warmup} steps")
        require(self.toy_hidden >= 8 and self.toy_hidden % 8 == 0, "toy_hidden",
                "choose a multiple of 8 (the MLP's time embedding has hidden / 4 sin/cos features), e.g. 128")


PRESETS = {
    "smoke": Config(steps=4, batch_size=8, warmup=2, log_every=2, sample_every=0, ckpt_every=4, sample_steps=5,
                    n_subset=32, n_samples=8, n_eval=8, t_bins=4, toy_train=512, toy_subset=16,
                    toy_samples=128, toy_steps=10, toy_batch=64, toy_hidden=32,
                    unet=UNetConfig(channels=8, mults=(1, 2), n_res=1, attn_res=())),
    "cpu": Config(steps=500, batch_size=32, warmup=50, ema_decay=0.995, sample_every=0, ckpt_every=500),
    "gpu": Config(steps=8000, batch_size=128, lr=1e-3, warmup=400, ema_decay=0.999, sample_every=0, ckpt_every=2000,
                  sample_steps=1000, n_subset=1024, n_samples=512, n_eval=1000,
                  unet=UNetConfig(channels=32, mults=(1, 2, 2), n_res=2, attn_res=(7,)), toy_samples=5000,
                  toy_steps=5000),
}


# --- the pieces main() strings together ----------------------------------------------------------------

def train(model, prediction: str, x: torch.Tensor, cfg: TrainConfig, run: Run, schedule: DiscreteVP):
    """Fit `model` to one target; the seed fixes batches, t and noise, so every target sees the same ones."""
    def loss_fn(net, x0, y, generator):
        return diffusion_loss(net, x0, schedule, prediction, generator)[0].mean()   # Alg. 1 of Ho et al.
    _, ema = fit(model, loss_fn, x, None, cfg, run)
    return ema


def reverse_chains(ways: dict, x1: torch.Tensor, ts: torch.Tensor, schedule: DiscreteVP, seed: int,
                   clip_x0: bool = True) -> dict[str, list[torch.Tensor]]:
    """DDPM's ancestral sampler for every way (model, prediction), from the same x_1 with the same noise.

    Each step draws x_s ~ q(x_s | x_t, x0_hat) (Eqs. 6–7 of Ho et al.); only x0_hat differs between ways.
    Returns {way: [x at ts[0] = 1, ..., x at ts[-1] = 0]}.
    """
    chains = {}
    for name, (model, prediction) in tqdm(ways.items(), desc="reverse chains"):
        denoise = denoiser(model, prediction, schedule)
        denoise = clipped(denoise, schedule) if clip_x0 else denoise
        chains[name] = [x1, *ddpm(denoise, x1, ts, path=schedule, generator=torch.Generator().manual_seed(seed))]
    return chains


def x0_along(model, prediction: str, schedule: DiscreteVP, chain: list, ts: torch.Tensor, cols: list) -> list:
    """What the model believes x_0 is at the shown states of its own chain (at t = 0: the state itself)."""
    return [predict_x0(model, prediction, schedule, chain[k], ts[k].expand(len(chain[k]))) if ts[k] > 0 else chain[k]
            for k in cols]


@torch.no_grad()
def errors_per_t(judges: dict, schedule: DiscreteVP, x0: torch.Tensor, bins: int, seed: int) -> dict:
    """Mean implied-x_0 and implied-eps MSE of every judge in each t band, all judges on the same (t, eps)."""
    g = torch.Generator().manual_seed(seed)
    err = {name: {"x0": [], "eps": []} for name in judges}
    for band in tqdm(range(bins), desc="errors per t"):
        t = band_times(schedule, band, bins, len(x0), g)
        eps = torch.randn(x0.shape, generator=g).to(x0.device)
        for name, (model, prediction) in judges.items():
            e_x0, e_eps = implied_errors(model, prediction, schedule, x0, t, eps)
            err[name]["x0"].append(e_x0.mean().item())
            err[name]["eps"].append(e_eps.mean().item())
    return err


def plot_nn(groups: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """One histogram panel per reference set: each query's distance to its nearest reference image."""
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.4))
    for ax, (title, dists) in zip(axes, groups.items()):
        top = max(d.max().item() for d in dists.values()) * 1.05 + 1e-3
        for label, d in dists.items():
            ax.hist(d.cpu().numpy(), bins=40, range=(0, top), density=True, alpha=0.55, label=label)
        ax.set(xlabel="L2 distance to the nearest image (pixels in [-1, 1])", ylabel="density", title=title)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def two_lines(name: str) -> str:
    return name.replace(" ", "\n", 1)


def rounded(x: torch.Tensor) -> float:
    return round(x.item(), 4)


def median(d: torch.Tensor) -> float:
    return rounded(d.median())


def chain_figures(chains: dict, ways: dict, x0, noise, schedule: DiscreteVP, ts: torch.Tensor, out: Path) -> None:
    """The first chain of every way over t next to the forward process, what each model thinks x_0 is along
    its chain, the end points, and a GIF of the first few chains per way."""
    steps = len(ts) - 1
    cols = torch.linspace(0, steps, N_COLS).round().long().unique().tolist()
    labels = [f"t={ts[k]:.2g}" for k in cols]
    forward = [schedule.sample(x0[:1], ts[k].expand(1), noise[:1])[0] for k in cols]   # same eps as x_1
    panel([forward] + [[c[k][0] for k in cols] for c in chains.values()], out / "forward_vs_reverse.png",
          row_labels=["forward\nq(x_t | x_0)", *map(two_lines, chains)], col_labels=labels)
    learned = [n for n in ways if n != "oracle x0"]                         # the oracle's x0_hat is x_0
    panel([[x[0] for x in x0_along(*ways[n], schedule, [s[:1] for s in chains[n]], ts, cols)] for n in learned],
          out / "predicted_x0.png", row_labels=[f"x0_hat of\n{two_lines(n)}" for n in learned], col_labels=labels)
    panel([list(c[-1][:N_SHOW]) for c in chains.values()], out / "reverse_samples.png",
          row_labels=list(map(two_lines, chains)))
    frames = (steps * torch.linspace(0, 1, GIF_FRAMES).sqrt()).round().long().unique().tolist()  # denser near t = 0
    save_gif([torch.cat([c[k][:GIF_SHOW] for c in chains.values()]) for k in frames], out / "reverse.gif",
             nrow=min(GIF_SHOW, len(x0)), duration_ms=250)                   # one row per way


def memorisation(chains: dict, subset, train_x, test_x, schedule: DiscreteVP, ts: torch.Tensor, out: Path) -> dict:
    """Distances of the chains' end points to the nearest training image, against real test images'."""
    d_exact, i_exact = nearest(chains["exact denoiser"][-1], subset)
    d_test_sub = nearest(test_x, subset)[0]
    d_nets = {f"{p}-net": nearest(chains[f"{p}-net"][-1], train_x)[0] for p in PREDICTIONS}
    d_test_all = nearest(test_x, train_x)[0]
    plot_nn({f"to the {len(subset)} images the exact denoiser knows":
             {"exact-denoiser samples": d_exact, "real test images": d_test_sub},
             f"to all {len(train_x)} training images":
             {**{f"{n} samples": d for n, d in d_nets.items()}, "real test images": d_test_all}},
            out / "nn_distances.png")
    show = d_exact.argsort()[:N_SHOW].tolist()
    panel([[chains["exact denoiser"][-1][i] for i in show], [subset[i_exact[i]] for i in show]], out / "copies.png",
          row_labels=["exact-\ndenoiser\nsample", "nearest\ntraining\nimage"])
    n_eff = [effective_count(x, subset, *schedule.alpha_sigma(t.expand(len(x)), x.double().flatten(1))).median().item()
             for x, t in zip(chains["exact denoiser"][:-1], ts[:-1])]
    plot_curves({"exact denoiser": (ts[:-1].tolist(), n_eff)}, out / "effective_n.png", xlabel="t", logy=True,
                ylabel="median 1 / Σ w²", title="training images E[x0 | x_t] still averages")
    n, k = len(subset), len(d_exact)
    return {"nn_to_subset": {"exact_samples_median": median(d_exact), "exact_samples_max": rounded(d_exact.max()),
                             "test_images_median": median(d_test_sub), "test_images_min": rounded(d_test_sub.min())},
            "exact_distinct_copies": len(set(i_exact.tolist())),
            "exact_distinct_expected": round(n * (1 - (1 - 1 / n) ** k), 1),   # k uniform draws from n images
            "exact_commit_t": max((t for t, m in zip(ts.tolist(), n_eff) if m < 1.1), default=0.0),
            "nn_to_train": {**{name: median(d) for name, d in d_nets.items()}, "test_images": median(d_test_all)}}


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data, test = load_images(cfg.dataset, "train", args.data_dir), load_images(cfg.dataset, "test", args.data_dir)
    run = Run.from_args(args, data.name)
    dev, out = run.device, run.out
    schedule = DiscreteVP.named(cfg.schedule, cfg.n_steps)
    ts = uniform_grid(schedule, cfg.sample_steps)                               # (S + 1,) from 1 down to 0

    # --- 1. three small U-Nets, identical but for their target, and the toy's eps-MLP (section 5), each in its
    #        own folder (--resume: finished ones are kept, see Run.part)
    nets, train_s = {}, {}
    for p in PREDICTIONS:
        torch.manual_seed(cfg.seed)                                           # same initial weights for all three
        net = UNet(cfg.unet)
        sub = run.part(f"net_{p}")
        nets[p] = train(net, p, data.x, cfg, sub, schedule)
        train_s[p] = round(sub.train_seconds, 1)
    toy_points = sample_toy("8gaussians", cfg.toy_train, torch.Generator().manual_seed(cfg.seed))   # (N, 2)
    torch.manual_seed(cfg.seed)
    mlp = train(MLP(MLPConfig(hidden=cfg.toy_hidden)), "eps", toy_points,
                replace(cfg, steps=cfg.toy_steps, batch_size=cfg.toy_batch), run.part("toy_mlp"), schedule)
    if not run.is_main:  # under torchrun, the other processes only helped train
        return

    # --- 2. the reverse chain with three kinds of x_0, from the same x_1 and the same noise
    x0 = test.x[: cfg.n_samples].to(dev)                                      # (B, 1, 28, 28)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(cfg.seed)).to(dev)
    x1 = schedule.sample(x0, torch.ones(len(x0)), noise)                  # where the forward process ends
    subset = data.x[: cfg.n_subset].to(dev)                                   # all that the exact denoiser knows
    ways = {"oracle x0": (lambda xt, t: x0, "x0"), "exact denoiser": (MixtureDenoiser(subset, 0.0, schedule), "x0"),
            **{f"{p}-net": (nets[p], p) for p in PREDICTIONS}}
    chains = reverse_chains(ways, x1, ts, schedule, cfg.seed)
    chain_figures(chains, ways, x0, noise, schedule, ts, out)

    # --- 3. the exact denoiser can only copy: distances to the nearest training image
    copies = memorisation(chains, subset, data.x, test.x, schedule, ts, out)

    # --- 4. what each target predicts well, and where: implied x_0 and eps errors per band of t
    mean_image = data.x.mean(0, keepdim=True).to(dev)
    judges = {**{f"{p}-net": (nets[p], p) for p in PREDICTIONS},
              f"exact denoiser ({cfg.n_subset} train)": ways["exact denoiser"],
              "mean image": (lambda xt, t: mean_image.expand_as(xt), "x0")}
    err = errors_per_t(judges, schedule, test.x[: cfg.n_eval].to(dev), cfg.t_bins, cfg.seed + 1)
    centres = [(b + 0.5) / cfg.t_bins for b in range(cfg.t_bins)]
    for q in ("x0", "eps"):
        plot_curves({n: (centres, e[q]) for n, e in err.items()}, out / f"{q}_error_per_t.png", xlabel="t band",
                    ylabel=f"MSE of the implied {q}", title=f"implied {q}: held-out error per t band", logy=True)

    # --- 5. the same three ways on 8 Gaussians, plus the exact denoiser of the whole mixture
    toy = toy_experiment(cfg, run, schedule, ts, mlp, toy_points)

    metrics = {"train_seconds": train_s, "oracle_max_abs_error": (chains["oracle x0"][-1] - x0).abs().max().item(),
               **copies, "t_band_centres": centres, "x0_mse_per_t": {n: e["x0"] for n, e in err.items()},
               "eps_mse_per_t": {n: e["eps"] for n, e in err.items()}, "toy": toy}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"exact denoiser: median NN distance {copies['nn_to_subset']['exact_samples_median']} "
          f"(test images {copies['nn_to_subset']['test_images_median']}); results in {out}")


def toy_experiment(cfg: Config, run: Run, schedule: DiscreteVP, ts: torch.Tensor, mlp, data: torch.Tensor) -> dict:
    """Reverse chains on 8 Gaussians: oracle, exact denoisers of the mixture and of a few points, and the eps-MLP
    trained on the points `data` (N, 2)."""
    dev = run.device
    mix = eight_gaussians(torch.float64)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    x0 = mix.sample(cfg.toy_samples, g).float().to(dev)                       # the oracle's targets
    x1 = schedule.sample(x0, torch.ones(len(x0)), torch.randn(x0.shape, generator=g).to(dev))
    points = data[: cfg.toy_subset].to(dev)
    ways = {"oracle": (lambda xt, t: x0, "x0"),
            "exact_mixture": (MixtureDenoiser(mix.means, mix.std, schedule), "x0"),
            "exact_points": (MixtureDenoiser(points, 0.0, schedule), "x0"),
            "mlp": (mlp, "eps")}
    titles = {"oracle": "oracle x0", "exact_mixture": "exact denoiser of the mixture",
              "exact_points": f"exact denoiser of {cfg.toy_subset} points", "mlp": "eps-MLP"}
    chains = reverse_chains(ways, x1, ts, schedule, cfg.seed, clip_x0=False)   # toy data reach |x| ≈ 2.3
    fresh = mix.sample(cfg.toy_samples, g).float().to(dev)
    sw = lambda a, b: round(sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(0)), 4)
    result = {"sw_fresh_vs_fresh": sw(mix.sample(cfg.toy_samples, g).float().to(dev), fresh),
              "nn_to_points_median_fresh": median(nearest(fresh, points)[0])}
    for name, chain in chains.items():
        trajectories2d(chain, run.out / f"toy_{name}.png", title=titles[name])
        result[name] = {"sw_to_fresh": sw(chain[-1], fresh),
                        "nn_to_points_median": median(nearest(chain[-1], points)[0])}
    return result


if __name__ == "__main__":
    cli(main)
