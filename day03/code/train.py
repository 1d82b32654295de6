"""Day 03 — Variational autoencoders: a latent-variable model trained on a lower bound of log p(x).

A convolutional VAE with a Bernoulli decoder on binarised MNIST is trained at three KL weights
β ∈ {0.5, 1, 4} with the same budget, plus a 2-D-latent VAE to look at. We plot the ELBO's two
terms during training, estimate log p(x) with the importance-weighted bound (K samples) next to
the ELBO in nats and bits/dim, count active latent units (posterior collapse), and show
reconstructions (with PSNR/SSIM), prior samples, linear vs spherical interpolation and latent
traversals. The β = 1 prior samples, scored by the shared evaluator, are the baseline later days must
beat. Short extra runs try two remedies for posterior collapse, KL annealing and free bits, against a
plain run of the same length; the β = 1 model is also sampled at several prior temperatures, and its
class directions are added to codes of other classes (latent arithmetic).

References:
    Kingma & Welling (2014), "Auto-encoding variational Bayes", ICLR (arXiv:1312.6114).
    Rezende, Mohamed & Wierstra (2014), "Stochastic backpropagation and approximate inference in
        deep generative models", ICML.
    Burda, Grosse & Salakhutdinov (2016), "Importance weighted autoencoders", ICLR (IWAE bound,
        active units).
    Higgins et al. (2017), "β-VAE: learning basic visual concepts with a constrained variational
        framework", ICLR.
    White (2016), "Sampling generative networks", arXiv:1609.04468 (slerp in latent space).
    Bowman, Vilnis, Vinyals, Dai, Jozefowicz & Bengio (2016), "Generating sentences from a continuous
        space", CoNLL (§3.1: KL cost annealing).
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved variational inference
        with inverse autoregressive flow", NeurIPS (App. C: free bits).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from common.config import UserError, cli, parse_args
from common.data import load_images
from common.checkpoint import load_checkpoint
from common.evaluator import evaluator_for, load_evaluator, score_images, unconfident
from common.loop import fit
from common.nets import count_params
from common.plotting import panel, plot_curves, save_grid, scatter2d
from common.run import Run, write_metrics
from common.samples import quantize, save_samples_npz
from common.training import TrainConfig
import matplotlib.pyplot as plt  # after common.plotting, which selects the file-only backend
from probes import decode_mean, held_out, latent_arithmetic, reconstruction  # day03/code/probes.py
from vae import (ConvVAE, VAEConfig, active_units, bernoulli_log_lik, binarise, elbo_terms, free_bits_kl,
                 iwae_bound, log_weights, reparameterise, slerp)

DAY = Path(__file__).resolve().parents[1]
PIXELS = 28 * 28


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    channels: int = 32                          # encoder/decoder width (2x at 7x7)
    latent_dim: int = 32
    kl_weights: tuple[float, ...] = (0.5, 1.0, 4.0)  # β of the β-VAE loss recon + β·KL; 1 is the VAE proper
    n_eval: int = 500                           # binarised test images for curves, ELBO/IWAE and active units
    iwae_k: int = 128                           # importance samples per image for the IWAE bound
    n_samples: int = 1000                       # prior samples scored by the evaluator
    remedy_steps: int = 600                     # length of the short runs: plain, KL annealing, free bits (β = 1)
    anneal_frac: float = 0.5                    # KL annealing: β rises 0 -> 1 over this share of remedy_steps
    free_bits: float = 0.5                      # free bits: λ, nats per latent unit
    temperatures: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)  # prior samples z ~ N(0, τ² I) of the β = 1 VAE

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS
        from common.samples import MIN_SCORED

        require(self.dataset in DATASETS, "dataset", f"choose one of {', '.join(DATASETS)}")
        require(self.channels >= 1, "channels", "choose a width of at least 1, e.g. 32")
        require(self.latent_dim >= 1, "latent_dim", "choose at least 1 latent dimension, e.g. 32")
        require(1.0 in self.kl_weights and all(0 <= b < math.inf for b in self.kl_weights), "kl_weights",
                "choose weights β >= 0 that include 1 (the β = 1 VAE gives the baseline samples), e.g. 0.5,1,4")
        require(self.n_eval >= 6, "n_eval", "choose at least 6 test images (the interpolations pair images 0..5)")
        require(self.iwae_k >= 1, "iwae_k", "choose at least 1 importance sample")
        require(self.n_samples >= MIN_SCORED, "n_samples", f"the evaluator scores {MIN_SCORED} or more samples")
        require(self.remedy_steps >= max(1, self.warmup), "remedy_steps",
                f"choose at least warmup={self.warmup} steps (and 1) for the short runs")
        require(0 <= self.anneal_frac <= 1, "anneal_frac", "choose a share of remedy_steps in [0, 1], e.g. 0.5")
        require(0 <= self.free_bits < math.inf, "free_bits", "choose λ >= 0 nats per latent unit, e.g. 0.5")
        require(len(self.temperatures) >= 1 and all(0 < t < math.inf for t in self.temperatures), "temperatures",
                "choose one or more positive temperatures τ, e.g. 0.5,1")


PRESETS = {
    "smoke": Config(steps=8, batch_size=32, warmup=2, bf16=False, log_every=2, sample_every=4, ckpt_every=8,
                    channels=8, kl_weights=(1.0, 4.0), n_eval=32, iwae_k=8, n_samples=64, remedy_steps=4,
                    temperatures=(0.5, 1.0)),
    "cpu": Config(steps=3000, batch_size=64, lr=2e-3, warmup=100, ema_decay=0.995, sample_every=300, ckpt_every=1000),
    "gpu": Config(steps=30_000, batch_size=256, lr=1e-3, warmup=500, ema_decay=0.9995, sample_every=1_000,
                  ckpt_every=5_000, channels=64, n_eval=10_000, iwae_k=1_000, n_samples=10_000),
}


# --- the objective ------------------------------------------------------------------------------------

def beta_vae_loss(beta: float):
    """−ELBO with the KL weighted by β (Higgins et al. 2017), on pixels binarised afresh each step."""
    def loss_fn(model, x0, y, generator):
        recon, kl = elbo_terms(model, binarise(x0, generator), generator)
        return (recon + beta * kl).mean()
    return loss_fn


def annealed_loss(warmup_steps: int, start: int = 0):
    """−ELBO with the KL weighted by β_s = min(1, s / warmup_steps) at step s (Bowman et al. 2016, §3.1).

    fit() does not tell a loss its step, so the closure counts its calls, one per step, from `start`: the
    step a resumed run continues from (`resumed_step`), so a resumed run anneals exactly like a fresh one.
    """
    step = start

    def loss_fn(model, x0, y, generator):
        nonlocal step
        beta = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
        step += 1
        recon, kl = elbo_terms(model, binarise(x0, generator), generator)
        return (recon + beta * kl).mean()
    return loss_fn


def free_bits_loss(lam: float):
    """Reconstruction + Σ_d max(λ, batch-mean KL_d) (Kingma et al. 2016, App. C): a unit whose KL is below λ
    nats is not pushed further towards the prior, so switching it off no longer pays."""
    def loss_fn(model, x0, y, generator):
        x = binarise(x0, generator)
        mu, logvar = model.encode(x)
        recon = -bernoulli_log_lik(model.decode(reparameterise(mu, logvar, generator)), x)   # (B,)
        return recon.mean() + free_bits_kl(mu, logvar, lam)
    return loss_fn


def remedies(cfg: Config) -> dict[str, Callable[[int], Callable]]:
    """The short β = 1 runs, name -> (start step -> loss): plain, KL annealing, free bits."""
    warmup = round(cfg.anneal_frac * cfg.remedy_steps)
    return {"short-plain": lambda start: beta_vae_loss(1.0),
            "short-annealed": lambda start: annealed_loss(warmup, start),
            "short-free-bits": lambda start: free_bits_loss(cfg.free_bits)}


def resumed_step(run: Run) -> int:
    """The step fit() will start this run from: its checkpoint's when resuming, else 0."""
    path = run.out / "checkpoint.pt"
    return int(load_checkpoint(path)["step"]) if run.resume and path.is_file() else 0


@torch.no_grad()
def bounds(vae: ConvVAE, x: torch.Tensor, k: int, generator: torch.Generator) -> dict:
    """ELBO (mean of the K log-weights) and the IWAE bounds L_1 ≤ L_2 ≤ ... ≤ L_K, averaged over images x,
    in nats; L_k uses the first k of the K weights. Images go in small groups: ~512 decoder calls at once."""
    chunks = x.split(max(1, 512 // k))
    log_w = torch.cat([log_weights(vae, chunk, k, generator) for chunk in chunks], dim=1)  # (K, N)
    elbo, iwae = float(log_w.mean()), float(iwae_bound(log_w).mean())
    ks = [2**i for i in range(int(math.log2(k)) + 1)] + ([k] if k & (k - 1) else [])
    return {"elbo_nats": round(elbo, 2), "iwae_nats": round(iwae, 2), "nll_nats": round(-iwae, 2),
            "elbo_bits_per_dim": round(-elbo / (PIXELS * math.log(2)), 4),
            "nll_bits_per_dim": round(-iwae / (PIXELS * math.log(2)), 4),
            "iwae_by_k": {str(j): round(float(iwae_bound(log_w[:j]).mean()), 2) for j in ks}}


def held_out_terms(x: torch.Tensor, run: Run, seed: int) -> tuple[list, Callable]:
    """An on_sample hook that records [step, mean reconstruction, mean KL] of the EMA model on x, and the list
    it fills. The points are also kept in OUT/held_out.json beside the model's checkpoint, so that a resumed
    run starts from the points recorded before the kill (those after its checkpoint are recomputed)."""
    path = run.out / "held_out.json"
    points = json.loads(path.read_text()) if run.resume and path.is_file() else []

    @torch.no_grad()
    def record(vae, step):
        recon, kl = elbo_terms(vae, x, torch.Generator().manual_seed(seed))
        points[:] = [p for p in points if p[0] < step] + [[step, round(float(recon.mean()), 2),
                                                             round(float(kl.mean()), 2)]]
        path.write_text(json.dumps(points))
    return points, record


def traverse(mu: torch.Tensor, dim: int, values: torch.Tensor) -> torch.Tensor:
    """Copies of one latent code mu (D,) with coordinate `dim` set to each of `values` (V,). (V, D)"""
    z = mu.repeat(len(values), 1)
    z[:, dim] = values
    return z


def evaluate(x: torch.Tensor, run: Run, data_dir: str | None) -> dict:
    """The scores of the run's dataset's evaluator; a dataset without one gets {"scores_skipped": why}."""
    return score_images(x.cpu(), dataset=run.dataset, data_dir=data_dir)


KEPT_SCORES = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "precision", "recall",
               "class_entropy", "scores_skipped")


def kept(scores: dict) -> dict:
    """The headline sample scores, for the comparisons that list many runs."""
    return {k: v for k, v in scores.items() if k in KEPT_SCORES}


def classifier(dataset: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The evaluator's predicted class of images in [-1, 1], (N,); None for a dataset without an evaluator."""
    if evaluator_for(dataset) is None:
        return None
    ev = load_evaluator(dataset)
    return lambda x: ev.probs(quantize(x.cpu())).argmax(dim=1)


def plot_remedies(remedy: dict[str, dict], path: Path) -> None:
    """Bars per short run: held-out reconstruction and KL (nats), and the samples' FID."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), layout="constrained")
    names = list(remedy)
    for ax, (key, label) in zip(axes, (("recon_nats", "−log p(x|z), nats"), ("kl_nats", "KL(q ‖ p), nats"),
                                         ("fid", "FID of prior samples"))):
        values = [r["samples"].get(key, float("nan")) if key == "fid" else r[key] for r in remedy.values()]
        ax.bar(names, values, color=["tab:grey", "tab:blue", "tab:orange"][: len(names)])
        ax.set(title=label)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("short β = 1 runs: plain, KL annealing, free bits (same steps)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --- the experiment -----------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    if 1.0 not in cfg.kl_weights:
        raise UserError(f"kl_weights={cfg.kl_weights} must include 1.0: the β = 1 VAE gives the baseline samples")
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    g = torch.Generator().manual_seed(cfg.seed)
    test = load_images(cfg.dataset, "test", args.data_dir)
    x_eval = binarise(test.x[: cfg.n_eval], g).to(run.device)             # fixed binary test images
    y_eval = test.y[: cfg.n_eval]

    # --- train one VAE per β (and a 2-D one), each in its own folder (--resume: finished ones are kept, see Run.part)
    specs = {f"beta={b:g}": (b, cfg.latent_dim) for b in cfg.kl_weights} | {"latent2d": (1.0, 2)}
    vaes, points, seconds = {}, {}, {}
    for name, (beta, dim) in specs.items():
        sub = run.part(name)
        points[name], record = held_out_terms(x_eval, sub, cfg.seed)
        torch.manual_seed(cfg.seed)  # initial weights fixed: the same in every process, run and resumed run
        model = ConvVAE(VAEConfig(channels=cfg.channels, latent_dim=dim))
        _, vaes[name] = fit(model, beta_vae_loss(beta), data.x, None, cfg, sub, on_sample=record)
        seconds[name] = round(sub.train_seconds, 1)
    short = replace(cfg, steps=cfg.remedy_steps)
    for name, make_loss in remedies(cfg).items():   # the short β = 1 runs: plain, KL annealing, free bits
        sub = run.part(name)
        torch.manual_seed(cfg.seed)
        model = ConvVAE(VAEConfig(channels=cfg.channels, latent_dim=cfg.latent_dim))
        _, vaes[name] = fit(model, make_loss(resumed_step(sub)), data.x, None, short, sub)
        seconds[name] = round(sub.train_seconds, 1)
    if not run.is_main:  # under torchrun, the other processes only helped train
        return

    # --- the bounds, active units and held-out ELBO terms of each
    models, curves = {}, {}
    for name, (beta, dim) in specs.items():
        mu, _ = vaes[name].encode(x_eval)                                    # (N, D) posterior means
        n_active, activity = active_units(mu)
        models[name] = {"beta": beta, "latent_dim": dim, "params": count_params(vaes[name]),
                        "train_seconds": seconds[name], "active_units": n_active,
                        "activity": [round(float(a), 4) for a in activity],
                        **bounds(vaes[name], x_eval, cfg.iwae_k, g),
                        **reconstruction(vaes[name], x_eval, test.x[: cfg.n_eval])}
        curves[name] = dict(zip(("step", "recon", "kl"), map(list, zip(*points[name])))) if points[name] else {}
    plot_curves({name: ([int(k) for k in r["iwae_by_k"]], list(r["iwae_by_k"].values())) for name, r in models.items()},
                run.out / "iwae_vs_k.png", "K (importance samples per image)", "L_K (nats per image)",
                "the IWAE bound tightens with K", logx=True)
    plot_curves({name: (range(len(r["activity"])), sorted(r["activity"], reverse=True)) for name, r in models.items()}
                | {"threshold 0.01": ([0, cfg.latent_dim - 1], [0.01, 0.01])}, run.out / "active_units.png",
                "unit (sorted by activity)", "A_u = Var_x E_q[z_u | x]", "active units (Burda et al. 2016)", logy=True)
    plot_curves({f"{name} {term}": (c["step"], c[term]) for name, c in curves.items() if name != "latent2d"
                 for term in ("recon", "kl")}, run.out / "elbo_terms.png", "step", "nats per image",
                f"held-out −log p(x|z) and KL(q || p) ({cfg.n_eval} test images)")

    # --- prior samples: the β = 1 samples are the baseline of the challenge
    z = torch.randn((cfg.n_samples, cfg.latent_dim), generator=g).to(run.device)
    for beta in cfg.kl_weights:
        name = f"beta={beta:g}"
        x_gen = decode_mean(vaes[name], z)                                   # (n_samples, 1, 28, 28)
        doubted = unconfident(x_gen[:100].cpu(), run.dataset)                # framed in red: top class prob <= 0.9
        save_grid(x_gen[:100].cpu(), run.out / f"samples_{name}.png", nrow=10, marked=doubted)
        models[name]["samples"] = evaluate(x_gen, run, args.data_dir)
        models[name]["grid_unconfident"] = None if doubted is None else int(doubted.sum())
        models[name]["grid_unconfident_indices"] = None if doubted is None else doubted.nonzero().flatten().tolist()
        if beta == 1:
            save_samples_npz(run.out / "samples.npz", x_gen)

    # --- KL annealing and free bits: each short run against the plain short run
    remedy = {name: {"train_seconds": seconds[name], **held_out(vaes[name], x_eval, test.x[: cfg.n_eval], cfg.seed),
                     "samples": kept(evaluate(decode_mean(vaes[name], z), run, args.data_dir))}
              for name in remedies(cfg)}
    plot_remedies(remedy, run.out / "kl_remedies.png")

    # --- temperature: z ~ N(0, τ² I), the same draws scaled (β = 1)
    temps = {f"{tau:g}": kept(models["beta=1"]["samples"]) if tau == 1
             else kept(evaluate(decode_mean(vaes["beta=1"], tau * z), run, args.data_dir)) for tau in cfg.temperatures}
    panel([list(decode_mean(vaes["beta=1"], tau * z[:10]).cpu()) for tau in cfg.temperatures],
          run.out / "temperatures.png", [f"τ = {tau:g}" for tau in cfg.temperatures])

    # --- latent arithmetic (β = 1): E_q[z | x] − m_b + m_a for every test image and class a
    moved, arithmetic = latent_arithmetic(vaes["beta=1"], x_eval, y_eval, classifier(run.dataset))
    first = [int((y_eval == c).nonzero()[0]) for c in y_eval.unique()]       # one test image per class
    panel([[test.x[i]] + list(moved[i].cpu()) for i in first], run.out / "latent_arithmetic.png",
          [f"class {int(y_eval[i])}" for i in first], ["test image"] + [f"→ {int(c)}" for c in y_eval.unique()])

    # --- reconstructions, interpolations and traversals (β = 1 unless labelled)
    rows = {"test": test.x[:10], "binarised": 2 * x_eval[:10].cpu() - 1}
    rows |= {name: decode_mean(vaes[name], vaes[name].encode(x_eval[:10])[0]).cpu() for name in specs}
    panel([list(r) for r in rows.values()], run.out / "reconstructions.png", list(rows))
    vae = vaes["beta=1"]
    mu = vae.encode(x_eval)[0]
    t = torch.linspace(0, 1, 10, device=run.device)
    paths = {}
    for i, j in ((0, 1), (2, 3), (4, 5)):
        paths[f"lerp {i}→{j}"] = (1 - t[:, None]) * mu[i] + t[:, None] * mu[j]
        paths[f"slerp {i}→{j}"] = slerp(mu[i], mu[j], t)
    panel([list(decode_mean(vae, p).cpu()) for p in paths.values()], run.out / "interpolation.png", list(paths),
          [f"t={v:.2f}" for v in t.tolist()])
    activity = models["beta=1"]["activity"]
    dims = sorted(range(cfg.latent_dim), key=lambda d: -activity[d])[:8]     # the 8 most active units
    values = torch.linspace(-3, 3, 9, device=run.device)
    panel([list(decode_mean(vae, traverse(mu[0], d, values)).cpu()) for d in dims], run.out / "traversals.png",
          [f"z{d}" for d in dims], [f"{v:g}" for v in values.tolist()])

    # --- the 2-D latent space: posterior means coloured by class, and the decoder over a grid
    mu2 = vaes["latent2d"].encode(x_eval)[0].cpu()                           # (N, 2)
    scatter2d({str(c): mu2[y_eval == c] for c in range(10)}, run.out / "latent2d_scatter.png", lim=4,
              title="2-D VAE: E_q[z | x] of test digits, by class")
    q = torch.distributions.Normal(0, 1).icdf(torch.linspace(0.05, 0.95, 15))  # evenly spaced prior quantiles
    z1, z0 = torch.meshgrid(q.flip(0), q, indexing="ij")  # rows: z1 from high to low, as on the scatter's y axis
    grid = torch.stack([z0.flatten(), z1.flatten()], dim=1).to(run.device)   # (225, 2)
    save_grid(decode_mean(vaes["latent2d"], grid).cpu(), run.out / "latent2d_manifold.png", nrow=15)

    # --- outputs
    real = evaluate(test.x[: cfg.n_samples], run, args.data_dir)             # real digits, for reference
    metrics = {"models": models, "samples": models["beta=1"]["samples"], "real_test": real, "curves": curves,
               "kl_remedies": remedy, "temperatures": temps, "latent_arithmetic": arithmetic}
    write_metrics(run.out, metrics, cfg, run, time.time() - start)


if __name__ == "__main__":
    cli(main)
