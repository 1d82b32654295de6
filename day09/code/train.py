"""Day 9 — Classifier-free guidance: one network, its label sometimes hidden, trades diversity for fidelity.

Training (Ho & Salimans 2022, Alg. 1): day 6's DDPM loss on a class-conditional U-Net whose label is replaced by
the null token ∅ with probability p_uncond, so one set of weights is both ε(x_t, c) and ε(x_t, ∅). Sampling
(their Alg. 2, in this repository's convention): ε̃ = ε_∅ + w (ε_c − ε_∅), w = 0 the unconditional model, w = 1
the conditional one; the paper's guidance strength is w − 1 (its ε̃ = (1 + w') ε_c − w' ε_∅, w' = w − 1).

The experiment: sweep w and measure what it buys (class accuracy, confident share) and costs (FID, recall,
within-class feature spread); the same sweep with classifier guidance (Dhariwal & Nichol 2021) on the same
model's unconditional branch and a small noise-aware classifier; the exact 2-D lesson (toy.py); and 1,000
samples, 100 per class, at the recommended w.

References: Ho & Salimans 2022 (arXiv:2207.12598); Dhariwal & Nichol 2021 (arXiv:2105.05233, §4);
Ho, Jain & Abbeel 2020 (arXiv:2006.11239).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from classifier import NoisyClassifier, NoisyClassifierConfig, classifier_guided, classifier_loss
from plots import plot_diversity, plot_tradeoff
from toy import run_toy

from common.config import cli, parse_args
from common.data import load_images
from common.diffusion import diffusion_loss
from common.evaluator import load_evaluator, score_images
from common.loop import fit
from common.nets import UNet, UNetConfig, count_params
from common.paths import DiscreteVP, uniform_grid
from common.plotting import panel, plot_loss_csv, save_grid
from common.predictions import clipped, denoiser, guided
from common.run import Run, write_metrics
from common.samplers import ddpm, sample_batched
from common.samples import quantize, save_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
CLASSES = 10


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    prediction: str = "v"            # what the U-Net outputs (day 6's choice)
    schedule: str = "cosine"
    n_steps: int = 1000
    p_uncond: float = 0.15           # share of training labels replaced by the null token (paper: 0.1–0.2)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(num_classes=CLASSES))
    ws: tuple[float, ...] = (0, 0.5, 1, 1.25, 1.5, 2, 3, 5, 8)  # guidance weights swept (w = 1: conditional)
    cg_scales: tuple[float, ...] = (1, 8, 64)              # classifier-guidance scales s swept
    classifier: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, sample_every=0, ema_decay=0.99))
    classifier_net: NoisyClassifierConfig = field(default_factory=NoisyClassifierConfig)
    sample_steps: int = 50           # ancestral steps of every sample (day 10: DDPM beats DDIM on this model)
    cg_steps: int = 100              # classifier guidance's steps: one U-Net call each, where classifier-free
                                     # guidance makes two (one doubled batch), so both do equal U-Net work
    per_class_sweep: int = 25        # samples per class at each swept w (or s)
    per_class: int = 100             # samples per class at the recommended w: results/samples.npz
    min_accuracy: float = 0.97       # the recommended w: the lowest FID among the weights at least this accurate
    batch: int = 250                 # sampling batch (guidance doubles it inside the network)
    toy_ws: tuple[float, ...] = (1, 3, 8)                  # the 2-D lesson's weights
    toy_n: int = 10_000
    toy_steps: int = 250

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.evaluator import EVALUATORS
        from common.paths import SCHEDULES
        from common.predictions import PREDICTIONS

        require(self.dataset in EVALUATORS, "dataset", f"guidance is measured by a class evaluator: choose one of "
                f"{', '.join(EVALUATORS)}")
        require(self.prediction in PREDICTIONS, "prediction", f"choose one of {', '.join(PREDICTIONS)}")
        require(self.schedule in SCHEDULES, "schedule", f"choose one of {', '.join(SCHEDULES)}")
        require(0 < self.p_uncond < 1, "p_uncond", "choose a share in (0, 1), e.g. 0.15: the model must see both")
        require(self.unet.num_classes == CLASSES, "unet.num_classes", f"choose {CLASSES}: the datasets' classes")
        require(self.classifier_net.num_classes == CLASSES, "classifier_net.num_classes", f"choose {CLASSES}")
        require(len(self.ws) >= 1 and min(self.ws) >= 0, "ws", "choose weights >= 0, e.g. 0,1,3")
        require(min(self.cg_scales, default=0) >= 0, "cg_scales", "choose scales >= 0, e.g. 1,3 (or none)")
        require(min(self.toy_ws, default=0) >= 0, "toy_ws", "choose weights >= 0, e.g. 1,3")
        require(1 <= self.sample_steps <= self.n_steps, "sample_steps", f"choose 1..n_steps={self.n_steps}")
        require(1 <= self.cg_steps <= self.n_steps, "cg_steps", f"choose 1..n_steps={self.n_steps}")
        require(self.per_class_sweep >= 2, "per_class_sweep", "choose 2 or more per class (a class's spread needs two)")
        require(self.per_class >= 2, "per_class", "choose 2 or more per class (a class's spread needs two)")
        require(0 < self.min_accuracy <= 1, "min_accuracy", "choose a share in (0, 1], e.g. 0.97")
        require(self.batch >= 1, "batch", "choose 1 or more samples per batch")
        require(self.toy_n >= 2 and self.toy_steps >= 1, "toy_n", "choose 2 or more points and 1 or more steps")


PRESETS = {
    "smoke": Config(steps=30, batch_size=32, unet=UNetConfig(channels=16, n_res=1, num_classes=CLASSES), warmup=5,
                    sample_every=15, ckpt_every=15, log_every=5, sample_steps=10, cg_steps=20, ws=(0, 1, 3),
                    cg_scales=(3,),
                    classifier=TrainConfig(steps=20, batch_size=32, warmup=5, sample_every=0, log_every=5),
                    classifier_net=NoisyClassifierConfig(channels=8), per_class_sweep=2, per_class=2,
                    toy_ws=(1, 3), toy_n=500, toy_steps=20),
    # the galleries of the sweep replace progress grids here: the sweep's sampling fills the 15-minute budget
    "cpu": Config(steps=1600, batch_size=128, lr=2e-3, warmup=100, ema_decay=0.995,
                  unet=UNetConfig(channels=16, n_res=1, num_classes=CLASSES), sample_every=0, ckpt_every=250,
                  toy_n=6000),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999,
                  unet=UNetConfig(channels=64, attn_res=(7, 14), num_classes=CLASSES), sample_every=5000,
                  ckpt_every=2000, classifier=TrainConfig(steps=5000, batch_size=256, sample_every=0),
                  classifier_net=NoisyClassifierConfig(channels=32), sample_steps=250, cg_steps=500,
                  per_class_sweep=100, per_class=1000, toy_n=50_000, toy_steps=1000),
}


# --- training: the DDPM loss with the label hidden at rate p_uncond ---------------------------------------

def drop_labels(y: torch.Tensor, p: float, null: int, generator: torch.Generator) -> torch.Tensor:
    """Each label replaced by the null token with probability p (Ho & Salimans, Alg. 1, line 3)."""
    hidden = torch.rand(y.shape, generator=generator) < p
    return torch.where(hidden.to(y.device), torch.full_like(y, null), y)


def build(cfg: Config):
    """The conditional U-Net, its path, and its loss: Alg. 1 of Ho et al. with labels dropped at p_uncond."""
    path = DiscreteVP.named(cfg.schedule, cfg.n_steps)
    torch.manual_seed(cfg.seed)
    model = UNet(cfg.unet)

    def loss_fn(net, x0, y, generator):
        y = drop_labels(y, cfg.p_uncond, CLASSES, generator)
        return diffusion_loss(net, x0, path, cfg.prediction, generator, y=y)[0].mean()
    return model, path, loss_fn


# --- sampling and measuring ------------------------------------------------------------------------------

def draw(denoise, x1, labels, cfg: Config, path, device, seed: int, steps: int) -> tuple[torch.Tensor, float]:
    """Ancestral samples (x̂0 clipped to [-1, 1] after guidance) from the noise x1 for `labels`; s per sample."""
    start = time.time()
    x = sample_batched(ddpm, clipped(denoise, path), x1, uniform_grid(path, steps), path=path,
                       device=device, batch=cfg.batch, bf16=cfg.bf16, generator=torch.Generator().manual_seed(seed),
                       cond={"y": labels})
    return x, (time.time() - start) / len(x1)


def class_spread(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Within-class diversity: the mean squared distance of a feature vector to its class's mean feature."""
    return torch.stack([(f - f.mean(0)).pow(2).sum(1).mean() for c in labels.unique()
                        for f in [features[labels == c]] if len(f) > 1]).mean().item()


class Measure:
    """The evaluator's scores of class-conditional samples, with the diversity measures real data sets the bar
    for: within-class feature spread and ink (mean brightness), each as a ratio to real test images'."""

    def __init__(self, dataset: str, data_dir, test, n: int = 1000):
        self.dataset, self.data_dir = dataset, data_dir
        self.evaluator = load_evaluator(dataset)
        real_x, real_y = test.x[:n], test.y[:n]                      # the first n test images
        self.real_spread = class_spread(self.evaluator.features(quantize(real_x)), real_y)
        self.real_ink = quantize(real_x).add(1).div(2).mean().item()
        self.real_accuracy = (self.evaluator.probs(quantize(real_x)).argmax(1) == real_y).float().mean().item()

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        s = score_images(x, labels, dataset=self.dataset, data_dir=self.data_dir)
        spread = class_spread(self.evaluator.features(quantize(x)), labels)
        keep = ("n", "fid", "fid_ci95", "fid_floor", "fid_ratio", "class_accuracy", "label_prob", "confident_frac",
                "confident_frac_floor", "confident_ratio", "precision", "recall", "precision_floor", "recall_floor")
        return {**{k: s[k] for k in keep}, "real_accuracy": round(self.real_accuracy, 4),
                "recall_ratio": round(s["recall"] / s["recall_floor"], 4),
                "spread_ratio": round(spread / self.real_spread, 4),
                "ink_ratio": round(quantize(x).add(1).div(2).mean().item() / self.real_ink, 4)}


@torch.no_grad()
def noisy_accuracy(classifier, path, test, device, n: int = 1000) -> dict:
    """The noise-aware classifier's accuracy on n held-out images noised to t = 0.1, 0.3, ..., 0.9."""
    x0, y, g = test.x[:n], test.y[:n], torch.Generator().manual_seed(0)
    accuracy = {}
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        alpha, sigma = path.alpha_sigma(t, x0)
        xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=g)
        logits = classifier(xt.to(device), torch.full((len(x0),), t, device=device)).cpu()
        accuracy[f"{t:.1f}"] = round((logits.argmax(1) == y).float().mean().item(), 4)
    return accuracy


def misclassified(x: torch.Tensor, labels: torch.Tensor, evaluator) -> torch.Tensor:
    """(N,) bool: the evaluator's label is not the requested one (framed in red in the galleries)."""
    return evaluator.probs(quantize(x)).argmax(1) != labels


def recommend(sweep: dict[str, dict], min_accuracy: float) -> float:
    """The recommended w: the lowest FID among the swept weights with class accuracy >= min_accuracy; if none
    reaches it, the most accurate."""
    rows = [(r["w"], r) for r in sweep.values()]
    good = [(r["fid_ratio"], w) for w, r in rows if r["class_accuracy"] >= min_accuracy]
    return min(good)[1] if good else max(rows, key=lambda wr: wr[1]["class_accuracy"])[0]


# --- the run ---------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    test = load_images(cfg.dataset, "test", args.data_dir)
    run = Run.from_args(args, data.name)
    model, path, loss_fn = build(cfg)
    grid_labels = torch.arange(CLASSES).repeat_interleave(8)                  # 10 rows of 8 (the galleries)

    def progress(ema, step):
        x1 = torch.randn(len(grid_labels), *data.x.shape[1:], generator=torch.Generator().manual_seed(0))
        x, _ = draw(denoiser(ema, cfg.prediction, path), x1, grid_labels, cfg, path, run.device, 0, cfg.sample_steps)
        save_grid(x, run.out / "progress" / f"step_{step:06d}.png", nrow=8)

    # --- train: the conditional U-Net (label dropout), then the noise-aware classifier of classifier guidance
    unet_run = run.part("unet")
    model, ema = fit(model, loss_fn, data.x, data.y, cfg, unet_run, on_sample=progress)
    torch.manual_seed(cfg.seed)
    clf_run = run.part("classifier")
    clf, clf_ema = fit(NoisyClassifier(cfg.classifier_net), classifier_loss(path), data.x, data.y, cfg.classifier,
                       clf_run)
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    out = run.out

    # --- the exact 2-D lesson
    toy = run_toy(cfg.toy_ws, cfg.toy_n, cfg.toy_steps, cfg.seed, out)

    # --- the sweeps: the same noise and labels for every w (and s), so the settings differ only in guidance
    measure = Measure(data.name, args.data_dir, test)
    labels = torch.arange(CLASSES).repeat_interleave(cfg.per_class_sweep)
    x1 = torch.randn(len(labels), *data.x.shape[1:], generator=torch.Generator().manual_seed(cfg.seed))
    base = denoiser(ema, cfg.prediction, path)
    sweep, guided_sweep, shown = {}, {}, {}
    for w in cfg.ws:
        x, seconds = draw(guided(base, w, CLASSES), x1, labels, cfg, path, run.device, cfg.seed + 1,
                          cfg.sample_steps)
        row = sweep[f"w={w:g}"] = {"w": w, "paper_w": w - 1, "seconds_per_sample": round(seconds, 4),
                                   **measure(x, labels)}
        shown[w] = x
        print(f"w={w:g}: class accuracy {row['class_accuracy']:.1%}, FID {row['fid_ratio']:.1f}× floor")
    for s in cfg.cg_scales:
        x, seconds = draw(classifier_guided(base, clf_ema, s, path), x1, labels, cfg, path, run.device, cfg.seed + 1,
                          cfg.cg_steps)
        guided_sweep[f"s={s:g}"] = {"s": s, "steps": cfg.cg_steps, "seconds_per_sample": round(seconds, 4),
                                    **measure(x, labels)}

    # --- 100 samples per class at the recommended w (fresh noise): results/samples.npz
    w_best = recommend(sweep, cfg.min_accuracy)
    final_labels = torch.arange(CLASSES).repeat_interleave(cfg.per_class)
    x1_final = torch.randn(len(final_labels), *data.x.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 2))
    samples, seconds = draw(guided(base, w_best, CLASSES), x1_final, final_labels, cfg, path, run.device, cfg.seed + 3,
                            cfg.sample_steps)
    final = {"w": w_best, "paper_w": w_best - 1, "seconds_per_sample": round(seconds, 4),
             **measure(samples, final_labels)}

    # --- outputs: samples, galleries, plots, metrics.json
    ev = measure.evaluator
    save_samples_npz(out / "samples.npz", samples, final_labels)
    show = torch.cat([torch.nonzero(final_labels == c).flatten()[:10] for c in range(CLASSES)])
    save_grid(samples[show], out / "samples.png", nrow=10, marked=misclassified(samples[show], final_labels[show], ev))
    pick = torch.cat([torch.nonzero(labels == c).flatten()[:8] for c in range(CLASSES)])  # 8 a class
    for w, x in shown.items():
        save_grid(x[pick], out / f"gallery_w{w:g}.png", nrow=8, marked=misclassified(x[pick], labels[pick], ev))
    first = [torch.nonzero(labels == c).flatten()[0].item() for c in range(CLASSES)]
    panel([[shown[w][i] for w in cfg.ws] for i in first], out / "same_noise.png",
          row_labels=[str(c) for c in range(CLASSES)], col_labels=[f"w={w:g}" for w in cfg.ws])
    plot_tradeoff(sweep, guided_sweep, out / "tradeoff.png")
    plot_diversity(sweep, guided_sweep, out / "diversity.png")
    plot_loss_csv(unet_run.out / "train_log.csv", out / "loss.png", title=f"training loss ({cfg.prediction} target)")
    metrics = {
        "params": count_params(model), "classifier_params": count_params(clf),
        "train_seconds": round(unet_run.train_seconds, 1), "classifier_train_seconds": round(clf_run.train_seconds, 1),
        "sample_steps": cfg.sample_steps, "null_token": CLASSES,
        "classifier_accuracy_per_t": noisy_accuracy(clf_ema, path, test, run.device),
        "recommended": final, "cfg_sweep": sweep, "classifier_guidance_sweep": guided_sweep, "toy": toy,
        "aims": {"recommended_w": w_best, "class_accuracy>=0.97": final["class_accuracy"] >= 0.97,
                 "fid<=2.5*floor": final["fid_ratio"] <= 2.5},
    }
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"recommended w = {w_best:g} (paper's w' = {w_best - 1:g}): class accuracy {final['class_accuracy']:.1%}, "
          f"FID {final['fid_ratio']:.2f}× floor; results in {out}")


if __name__ == "__main__":
    cli(main)
