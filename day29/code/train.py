"""Day 29 — multimodal diffusion (UniDiffuser): one network for every conditional, marginal and joint of 3 modalities.

Each MNIST digit comes with its English name (analog bits) and a DTMF tone (512 samples at 8 kHz), both drawn
afresh at every training step (modalities.py). One network (joint.py: a small transformer over all three
modalities' tokens for the audio and the text, and a U-Net for the image cross-attending to the transformer's audio
and text tokens) learns v-prediction for all three at independent noise levels on DDPM's cosine schedule, each
level 0 (a condition) w.p. p0, 1 (marginalised) w.p. p1 and uniform otherwise. Then, from the same weights, DDIM
samples every direction by choosing the times (t = 0 for a condition, 1 for a marginalised modality): the six
conditionals between image, audio and text, each modality alone, and all three jointly. Accuracy per direction: the
evaluator's class for images (also confident share / real share; FID / floor for the unconditional images), the
Goertzel decoder for audio, exact match for text; for the joint samples, whether all three name the same digit.
results/samples.npz holds the text→image samples with their labels.

References: Bao et al. 2023 (UniDiffuser, arXiv:2303.06555; U-ViT, arXiv:2209.12152); Rombach et al. 2022
(cross-attention, arXiv:2112.10752); Song, Meng & Ermon 2021
(DDIM, arXiv:2010.02502); Salimans & Ho 2022 (v-prediction, arXiv:2202.00512).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from figures import plot_captioned, plot_spectrograms, write_wav
from joint import MODALITIES, TASKS, JointConfig, JointNet, Task, joint_losses, split_state, task_denoiser
from modalities import NAMES, NOT_A_DIGIT, audio_digits, decode_text, dtmf, encode_text, text_digits

from common.config import cli, parse_args
from common.data import load_images
from common.evaluator import CONFIDENT, evaluator_for, load_evaluator, score_images
from common.loop import fit
from common.nets import count_params
from common.paths import DiscreteVP, uniform_grid
from common.plotting import panel
from common.run import Run, write_metrics
from common.samplers import ddim, sample_batched
from common.samples import quantize, save_samples_npz
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
PATH = DiscreteVP.named("cosine", 1000)
PREDICTION = "v"
REALISM = ("fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor", "confident_ratio")


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    net: JointConfig = field(default_factory=JointConfig)
    p0: float = 0.25               # share of training times at t = 0 per modality: it is a condition
    p1: float = 0.25               # share at t = 1: it is marginalised out; the rest uniform (it is generated)
    sample_steps: int = 25         # DDIM (η = 0) steps on a uniform grid
    n_eval: int = 500              # samples per task: n_eval / 10 test digits of each class (seeded order)
    batch: int = 250               # sampling batch

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.data import DATASETS
        from common.samples import MIN_SCORED

        require(self.dataset in DATASETS and self.dataset != "cifar10", "dataset", "choose an MNIST-like dataset")
        require(0 <= self.p0 and 0 <= self.p1 and self.p0 + self.p1 < 1, "p0",
                "choose endpoint shares p0, p1 >= 0 with p0 + p1 < 1, e.g. 0.25 each")
        require(self.sample_steps >= 1 and self.batch >= 1, "sample_steps", "choose 1 or more")
        require(self.n_eval >= max(MIN_SCORED, 10) and self.n_eval % 10 == 0, "n_eval",
                "choose a multiple of 10 (one tenth per digit)")


PRESETS = {
    "smoke": Config(steps=3, batch_size=8, warmup=1, sample_every=0, ckpt_every=3, log_every=1,
                    net=JointConfig(width=16, depth=1, heads=2, channels=8), sample_steps=2, n_eval=10, batch=10),
    # fp32: bf16 autocast was slower for this network on CPU. The run's time, training and sampling seconds are in
    # results/metrics.json (wall_time_s, train_seconds, each task's seconds_per_sample).
    "cpu": Config(steps=1900, batch_size=32, lr=2e-3, warmup=100, ema_decay=0.995, bf16=False, sample_every=0,
                  ckpt_every=500, sample_steps=20, n_eval=500),
    "gpu": Config(steps=50_000, batch_size=256, lr=2e-4, warmup=2000, ema_decay=0.9999, sample_every=0,
                  ckpt_every=5000, net=JointConfig(width=256, depth=8, heads=8, patch=4, channels=64, attn_res=(7, 14)),
                  sample_steps=50, n_eval=10_000, batch=1000),
}


# --- the three modalities of a digit, and the loss ---------------------------------------------------------

def modalities_of(image: torch.Tensor, digit: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The digit's three modalities: its image, a fresh DTMF clip of it, its name as analog bits."""
    return {"image": image, "audio": dtmf(digit, generator), "text": encode_text(digit)}


def make_loss(cfg: Config):
    """Σ over modalities of the v-MSE at independent times (Bao et al. 2023, Eq. 5), with endpoint mass p0, p1."""
    def loss_fn(net, x0, y, generator):
        losses = joint_losses(net, modalities_of(x0, y, generator), PATH, PREDICTION, generator, cfg.p0, cfg.p1)
        return sum(loss.mean() for loss in losses.values())
    return loss_fn


# --- every task from the same weights ----------------------------------------------------------------------

def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """The 95 % Wilson score interval of a share k / n (Wilson 1927)."""
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def share(hit: torch.Tensor) -> dict:
    """A share of True values with its interval."""
    k, n = int(hit.sum()), len(hit)
    return {"share": round(k / n, 4), "ci95": wilson(k, n), "n": n}


def read(m: str, x: torch.Tensor, dataset: str) -> torch.Tensor:
    """The digit a sample of modality m shows: the evaluator's class, the dialled key, the exactly spelled name."""
    if m == "image":
        return load_evaluator(dataset).probs(quantize(x)).argmax(1)
    return audio_digits(x) if m == "audio" else text_digits(x)


def confident(x: torch.Tensor, dataset: str) -> float:
    """The evaluator's confident share (top class probability above CONFIDENT) of images x."""
    return float((load_evaluator(dataset).probs(quantize(x)).amax(1) > CONFIDENT).float().mean())


def generate(net, task: Task, given: dict, cfg: Config, run: Run) -> tuple[dict, float]:
    """The task's samples {modality: (N, ...)} from seeded noise, by DDIM; and the seconds per sample."""
    n, g = len(next(iter(given.values()))), torch.Generator().manual_seed(cfg.seed + 1)
    noise = torch.randn(n, task.dim, generator=g)
    fixed = {m: given[m] for m in task.given} | {m: torch.randn(given[m].shape, generator=g) for m in task.marginal}
    start = time.time()
    x = sample_batched(ddim, task_denoiser(net, task, PATH, PREDICTION), noise, uniform_grid(PATH, cfg.sample_steps),
                       path=PATH, device=run.device, batch=cfg.batch, bf16=cfg.bf16, desc=task.name, cond=fixed)
    out = {m: v.clamp(-1, 1) for m, v in split_state(x, task).items()}
    return out, (time.time() - start) / n


def evaluate(task: Task, out: dict, labels: torch.Tensor, real: torch.Tensor, dataset: str, data_dir) -> dict:
    """The task's row: accuracy (conditionals), readable share (alone) or agreement (joint); for generated images
    the confident share over real images' (`real`: the test digits), and FID / floor without a condition."""
    digits = {m: read(m, x, dataset) for m, x in out.items()}
    row = {"generate": list(task.generate), "given": list(task.given)}
    if task.given:
        row["accuracy"] = share(digits[task.generate[0]] == labels)
    elif task.generate == ("image",):  # every image has a most likely class: readable = confidently classified
        row["readable"] = share(load_evaluator(dataset).probs(quantize(out["image"])).amax(1) > CONFIDENT)
        row["class_hist"] = torch.bincount(digits["image"], minlength=10).tolist()
    elif len(task.generate) == 1:  # a clip or a name may read as no digit: the histogram counts the readable ones
        read_as = digits[task.generate[0]]
        row["readable"] = share(read_as != NOT_A_DIGIT)
        row["class_hist"] = torch.bincount(read_as[read_as != NOT_A_DIGIT], minlength=10).tolist()
    else:
        d = [digits[m] for m in MODALITIES]
        row["agreement"] = share((d[0] == d[1]) & (d[1] == d[2]) & (d[0] != NOT_A_DIGIT))
        row["pairs"] = {f"{a}={b}": share((digits[a] == digits[b]) & (digits[a] != NOT_A_DIGIT))["share"]
                        for i, a in enumerate(MODALITIES) for b in MODALITIES[i + 1:]}
    if "image" in out and task.given:
        row["confident_ratio"] = round(confident(out["image"], dataset) / confident(real, dataset), 4)
    elif "image" in out:  # the unconditional images: the full protocol (common.evaluator)
        scores = score_images(out["image"], dataset=dataset, data_dir=data_dir)
        row |= {k: scores.get(k) for k in REALISM}
    return row


def real_reference(images, labels, dataset: str, seed: int) -> dict:
    """How well each reader reads real data: the evaluator on the test digits, the decoders on fresh clips and names."""
    clips = dtmf(labels, torch.Generator().manual_seed(seed + 2))
    return {"image": share(read("image", images, dataset) == labels), "audio": share(audio_digits(clips) == labels),
            "text": share(text_digits(encode_text(labels)) == labels)}


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    run = Run.from_args(args, data.name)
    if evaluator_for(data.name) is None:
        raise SystemExit(f"no evaluator for {data.name}: day 29 reads images with the MNIST evaluator")
    # --- train the one joint model
    torch.manual_seed(cfg.seed)
    net = fit(JointNet(cfg.net), make_loss(cfg), data.x, data.y, cfg, run)[1]
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    # --- conditions: n_eval / 10 test digits of each class (seeded order), their clips and names
    test = load_images(cfg.dataset, "test", args.data_dir)
    order = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(cfg.seed))
    pick = torch.cat([order[test.y[order] == c][:cfg.n_eval // 10] for c in range(10)])       # n_eval / 10 per digit
    labels = test.y[pick]
    given = {"image": test.x[pick], "audio": dtmf(labels, torch.Generator().manual_seed(cfg.seed + 3)),
             "text": encode_text(labels)}
    rows, samples = {}, {}
    for task in TASKS:
        samples[task.name], seconds = generate(net, task, given, cfg, run)
        rows[task.name] = {**evaluate(task, samples[task.name], labels, given["image"], data.name,
                                    args.data_dir),
                           "seconds_per_sample": round(seconds, 5)}
        result = {k: rows[task.name][k]["share"] for k in ("accuracy", "readable", "agreement") if k in rows[task.name]}
        print(f"{task.name}: {result}")
    # --- outputs
    out = run.out
    first = [int(torch.nonzero(labels == c)[0]) for c in range(10)]   # one condition per digit
    save_samples_npz(out / "samples.npz", samples["text→image"]["image"], labels)
    image_rows = [name for name in rows if "image" in rows[name]["generate"]]
    panel([[samples[name]["image"][i] for i in first] for name in image_rows], out / "image_grids.png",
          row_labels=image_rows, col_labels=[NAMES[c] for c in range(10)])
    audio_rows = {"real": given["audio"][first]} | {name: samples[name]["audio"][first] for name in rows
                                                    if "audio" in rows[name]["generate"]}
    plot_spectrograms(audio_rows, out / "spectrograms.png", [NAMES[c] for c in range(10)])
    for name, wav in (("real", "real.wav"), ("text→audio", "text_to_audio.wav"), ("joint", "joint.wav")):
        write_wav(audio_rows[name], out / wav)
    joint = samples["joint"]
    captions = [f"{t or '?'} | {'?' if a < 0 else a}" for t, a in
                zip(decode_text(joint["text"][:10]), audio_digits(joint["audio"][:10]).tolist())]
    plot_captioned(joint["image"][:10], captions, out / "joint_samples.png")
    texts = {name: decode_text(samples[name]["text"][first]) for name in rows if "text" in rows[name]["generate"]}
    directions = [rows[name]["accuracy"]["share"] for name in rows if "accuracy" in rows[name]]
    metrics = {"tasks": rows, "real": real_reference(given["image"], labels, data.name, cfg.seed),
               "text_examples": texts, "params": count_params(net), "train_seconds": round(run.train_seconds, 1),
               "sampler": {"name": "ddim", "steps": cfg.sample_steps, "prediction": PREDICTION},
               "headline": (f"one net, 6 directions: accuracy {min(directions):.2f}–{max(directions):.2f}; joint "
                            f"samples agree on the digit {rows['joint']['agreement']['share']:.2f}")}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"{metrics['headline']}; results in {out}")


if __name__ == "__main__":
    cli(main)
