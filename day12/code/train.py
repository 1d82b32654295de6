"""Day 12 — Text-to-image with cross-attention: every position of the U-Net reads the caption's words.

The model (text.py): a word tokenizer and a small transformer τ_θ, trained jointly with the common U-Net, whose
cross-attention layers (common.nets.CrossAttention, LDM Eq. 3) attend from image positions to caption tokens.
Training is day 6's loss with the caption replaced by the empty caption ∅ at rate p_uncond (day 9's recipe);
sampling guides with ε̃ = ε_∅ + w (ε_c − ε_∅).

The data (scenes.py): captioned 32×32 scenes of one or two coloured shapes, three (colour, shape) pairs held out
of training. The judge (judge.py): an attribute classifier trained on the generator's images scores each
generated image against its caption, on seen and on held-out combinations. The experiment: a w sweep, the
best w on fresh captions, which word attends where, and the failures.

References: Rombach et al. 2022 (arXiv:2112.10752, §3.3); Ho & Salimans 2022 (arXiv:2207.12598);
Saharia et al. 2022 (Imagen, arXiv:2205.11487: guidance weights for text).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from judge import AttributeClassifier, AttributeClassifierConfig, accuracy, classifier_loss, predict, score
from maps import attention_maps, own_object_share
from plots import plot_attention, plot_failures, plot_gallery, plot_gap, plot_same_noise, plot_sweep
from scenes import make_scenes, render, vocabulary
from text import TextEncoderConfig, TextToImage, TextToImageConfig, Tokenizer

from common.config import cli, parse_args, require
from common.diffusion import diffusion_loss
from common.loop import fit
from common.nets import UNetConfig, count_params
from common.paths import SCHEDULES, DiscreteVP, uniform_grid
from common.plotting import plot_loss_csv
from common.predictions import PREDICTIONS, TARGET, Coefficients, clipped, denoiser, guided
from common.run import Run, write_metrics
from common.samplers import ddpm, sample_batched
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
DATASET = "captioned-scenes"     # procedural (scenes.py): nothing to download


def model_config(channels: int) -> TextToImageConfig:
    """32×32 RGB, four levels (32, 16, 8, 4); self- and cross-attention at 8 and 4 px, where it is cheap."""
    return TextToImageConfig(unet=UNetConfig(in_channels=3, image_size=32, channels=channels, mults=(1, 2, 2, 4),
                                             n_res=1, attn_res=(8, 4), context_dim=64),
                             text=TextEncoderConfig(vocab_size=len(vocabulary()) + 3))


@dataclass
class Config(TrainConfig):
    prediction: str = "v"
    schedule: str = "cosine"
    n_steps: int = 1000
    p_uncond: float = 0.1            # share of training captions replaced by the empty caption ∅
    model: TextToImageConfig = field(default_factory=lambda: model_config(16))
    n_train: int = 30_000            # training scenes (no held-out pair in any)
    n_classifier: int = 20_000       # the attribute classifier's scenes (any pair)
    classifier: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, lr=2e-3, sample_every=0,
                                                                        ema_decay=0.99))
    classifier_net: AttributeClassifierConfig = field(default_factory=AttributeClassifierConfig)
    ws: tuple[float, ...] = (1, 2, 3, 5)   # guidance weights swept (w = 1: the conditional model)
    sample_steps: int = 40           # ancestral steps
    n_sweep: int = 100               # captions per split (seen, held-out) at each swept w
    n_final: int = 400               # fresh captions per split at the best w
    batch: int = 250                 # sampling batch (guidance doubles it inside the network)
    n_maps: int = 50                 # two-thing captions whose attention maps are measured (4 are drawn)

    def check(self) -> None:
        require(self.prediction in PREDICTIONS, "prediction", f"choose one of {', '.join(PREDICTIONS)}")
        require(self.schedule in SCHEDULES, "schedule", f"choose one of {', '.join(SCHEDULES)}")
        require(0 < self.p_uncond < 1, "p_uncond", "choose a share in (0, 1), e.g. 0.1: the model must see both")
        u, text = self.model.unet, self.model.text
        require(u.in_channels == 3, "model.unet.in_channels", "keep 3: the scenes are RGB images")
        require(u.image_size == 32, "model.unet.image_size", "keep 32: the scenes are 32×32 images")
        require(u.context_dim == text.dim, "model.unet.context_dim", f"choose the text encoder's width "
                f"model.text.dim={text.dim}")
        require(u.num_classes == 0 and u.cond_channels == 0, "model.unet.num_classes", "choose 0: the caption is "
                "the only condition")
        require(text.vocab_size == len(vocabulary()) + 3, "model.text.vocab_size", f"choose "
                f"{len(vocabulary()) + 3}: the grammar's words, <pad>, <start> and <unk>")
        require(text.length >= 15, "model.text.length", "choose 15 or more: the longest caption has 14 words")
        require(text.dim % text.heads == 0, "model.text.heads", f"choose a divisor of model.text.dim={text.dim}")
        require(min(self.n_train, self.n_classifier) >= 2, "n_train", "choose 2 or more scenes")
        require(len(self.ws) >= 1 and min(self.ws) >= 0, "ws", "choose weights >= 0, e.g. 1,3")
        require(1 <= self.sample_steps <= self.n_steps, "sample_steps", f"choose 1..n_steps={self.n_steps}")
        require(self.n_sweep >= 2 and self.n_final >= 2, "n_final", "choose 2 or more captions (FID needs two)")
        require(self.batch >= 1, "batch", "choose 1 or more samples per batch")
        require(self.n_maps >= 1, "n_maps", "choose 1 or more captions")


PRESETS = {
    "smoke": Config(steps=30, batch_size=32, model=model_config(8), warmup=5, sample_every=15, ckpt_every=15,
                    log_every=5, n_train=256, n_classifier=256, sample_steps=8, ws=(1, 3), n_sweep=6, n_final=8,
                    n_maps=4,
                    classifier=TrainConfig(steps=20, batch_size=32, warmup=5, sample_every=0, log_every=5)),
    "cpu": Config(steps=1100, batch_size=128, lr=2e-3, warmup=100, ema_decay=0.995, sample_every=0, ckpt_every=250),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999, model=model_config(64),
                  n_train=200_000, n_classifier=50_000, sample_every=5000, ckpt_every=2000, sample_steps=250,
                  classifier=TrainConfig(steps=5000, batch_size=256, sample_every=0), n_sweep=500, n_final=2000,
                  ws=(1, 1.5, 2, 3, 5, 8)),
}


# --- training: day 6's loss, the caption hidden at rate p_uncond --------------------------------------------

def drop_captions(tokens: torch.Tensor, null: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Each caption replaced by the empty caption ∅ with probability p (Ho & Salimans, Alg. 1, line 3)."""
    hidden = (torch.rand(len(tokens), generator=generator) < p).to(tokens.device)
    return torch.where(hidden[:, None], null.to(tokens.device), tokens)


def build(cfg: Config, tokenizer: Tokenizer):
    path = DiscreteVP.named(cfg.schedule, cfg.n_steps)
    torch.manual_seed(cfg.seed)
    model = TextToImage(cfg.model)

    def loss_fn(net, x0, tokens, generator):
        tokens = drop_captions(tokens, tokenizer.null, cfg.p_uncond, generator)
        return diffusion_loss(net, x0, path, cfg.prediction, generator, y=tokens)[0].mean()
    return model, path, loss_fn


# --- sampling -----------------------------------------------------------------------------------------------

def draw(denoise, tokens: torch.Tensor, cfg: Config, path, device, seed: int) -> torch.Tensor:
    """Ancestral samples for tokenized captions (x̂0 clipped after guidance), from noise drawn with `seed`."""
    x1 = torch.randn(len(tokens), 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return sample_batched(ddpm, clipped(denoise, path), x1, uniform_grid(path, cfg.sample_steps), path=path,
                          device=device, batch=cfg.batch, bf16=cfg.bf16,
                          generator=torch.Generator().manual_seed(seed + 1), cond={"y": tokens})


@torch.no_grad()
def conditioning_gap(model, path, x0: torch.Tensor, tokens: torch.Tensor, prediction: str, device, bf16: bool,
                     ts=tuple((k + 0.5) / 10 for k in range(10)), batch: int = 250) -> dict[str, float]:
    """Δ(t) = E‖f(x_t, t, ỹ) − target‖² − E‖f(x_t, t, y) − target‖², ỹ the caption of another image (the batch
    rolled by one): how much the prediction at noise level t relies on the caption. The same x_t for both."""
    gap, g = {}, torch.Generator().manual_seed(0)
    for t in ts:
        eps = torch.randn(x0.shape, generator=g)
        c = Coefficients.at(path, t, x0)
        xt, target = c.alpha * x0 + c.sigma * eps, TARGET[prediction](x0, eps, c)
        losses = []
        for y in (tokens.roll(1, 0), tokens):
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                out = torch.cat([model(xb.to(device), torch.full((len(xb),), t, device=device), y=yb.to(device))
                                 .float().cpu() for xb, yb in zip(xt.split(batch), y.split(batch))])
            losses.append((out - target).pow(2).mean().item())
        gap[f"{t:.2f}"] = round(losses[0] - losses[1], 5)
    return gap


# --- the run ----------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    tokenizer = Tokenizer(vocabulary(), cfg.model.text.length)
    train = make_scenes(cfg.n_train, cfg.seed, held_out=False)
    run = Run.from_args(args, DATASET)
    model, path, loss_fn = build(cfg, tokenizer)
    tokens = tokenizer.encode(train.captions)                                   # (N, L)
    shown = make_scenes(16, cfg.seed + 10, held_out=False)

    def progress(ema, step):
        x = draw(denoiser(ema, cfg.prediction, path), tokenizer.encode(shown.captions), cfg, path, run.device, 0)
        plot_gallery(x, shown.captions, run.out / "progress" / f"step_{step:06d}.png", title=f"step {step}")

    # --- train: the text-to-image model, then the attribute classifier that judges it
    model_run = run.part("model")
    model, ema = fit(model, loss_fn, train.x, tokens, cfg, model_run, on_sample=progress)
    judged = make_scenes(cfg.n_classifier, cfg.seed + 1, held_out=None)
    torch.manual_seed(cfg.seed)
    clf_run = run.part("classifier")
    _, clf = fit(AttributeClassifier(cfg.classifier_net), classifier_loss, judged.x, judged.labels, cfg.classifier,
                 clf_run)
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    out, clf = run.out, clf.float()

    # --- test captions, seen and held-out, with two independent real renders of each (the FID's reference and floor)
    tests = {"seen": make_scenes(cfg.n_final, cfg.seed + 2, held_out=False),
             "held_out": make_scenes(cfg.n_final, cfg.seed + 3, held_out=True)}
    again = {split: render(d.scenes, (cfg.seed + k, 2)).x for k, (split, d) in zip((2, 3), tests.items())}
    real = {split: accuracy(predict(clf, d.x)[0], d.scenes) for split, d in tests.items()}

    def measure(denoise, split: str, n: int, seed: int) -> tuple[torch.Tensor, dict]:
        d = tests[split]
        x = draw(denoise, tokenizer.encode(d.captions[:n]), cfg, path, run.device, seed)
        return x, score(clf, x, d.scenes[:n], d.x[:n], again[split][:n])

    # --- the sweep: the same captions and noise at every w
    base = denoiser(ema, cfg.prediction, path)
    sweep, same_noise = {}, {}
    for w in cfg.ws:
        row = {"w": w, "paper_w": w - 1}
        for split in tests:
            x, row[split] = measure(guided(base, w, tokenizer.null), split, cfg.n_sweep, cfg.seed + 5)
            same_noise.setdefault(split, []).append(x[:6])
        sweep[f"w={w:g}"] = row
        print(f"w={w:g}: all attributes right {row['seen']['all_accuracy']:.1%} seen, "
              f"{row['held_out']['all_accuracy']:.1%} held-out")

    # --- the best w (whole captions right, on seen captions only), then fresh captions and noise there
    w_best = max(cfg.ws, key=lambda w: (sweep[f"w={w:g}"]["seen"]["all_accuracy"],       # ties: the weaker
                                        sweep[f"w={w:g}"]["seen"]["min_attribute_accuracy"], -w))  # attribute, then w
    best, final_x = {"w": w_best, "paper_w": w_best - 1}, {}
    for split in tests:
        begin = time.time()
        final_x[split], best[split] = measure(guided(base, w_best, tokenizer.null), split, cfg.n_final, cfg.seed + 7)
        best[split]["seconds_per_sample"] = round((time.time() - begin) / cfg.n_final, 4)

    # --- which word attends where: two-thing seen captions at the best w
    pairs = [s for s in make_scenes(4 * cfg.n_maps, cfg.seed + 8, held_out=False).scenes if len(s.things) == 2]
    mapped = render(pairs[:cfg.n_maps], (cfg.seed + 8, 2))
    map_tokens = tokenizer.encode(mapped.captions)
    map_x, maps = attention_maps(ema, lambda tok: draw(guided(base, w_best, tokenizer.null), tok, cfg, path,
                                                       run.device, cfg.seed + 11), map_tokens)
    share = own_object_share(maps, map_x, mapped.scenes, mapped.captions)
    attention = {"captions": len(mapped.captions), "own_object_share": None if share is None else round(share, 4)}

    # --- is the caption used? the loss with another image's caption minus the loss with its own, per t
    gap = {split: conditioning_gap(ema, path, d.x, tokenizer.encode(d.captions), cfg.prediction, run.device,
                                   cfg.bf16) for split, d in tests.items()}

    # --- figures
    for split, d in tests.items():
        plot_gallery(final_x[split][:24], d.captions[:24], out / f"samples_{split}.png",
                     title=f"{split.replace('_', '-')} captions, w = {w_best:g}", scored_by=(clf, d.scenes[:24]))
        plot_failures(clf, final_x[split], d.scenes, d.captions, out / f"failures_{split}.png")
    plot_same_noise([[x[k] for x in same_noise[split]] for split in tests for k in range(3)],
                    [f"{split.replace('_', '-')}: {tests[split].captions[k]}" for split in tests for k in range(3)],
                    cfg.ws, out / "same_noise.png")
    plot_attention(map_x[:4], maps[:4], map_tokens[:4], tokenizer, out / "attention.png")
    plot_sweep(sweep, real, out / "cfg_sweep.png")
    plot_gap(gap, out / "conditioning_gap.png")
    plot_loss_csv(model_run.out / "train_log.csv", out / "loss.png", title=f"training loss ({cfg.prediction} target)")

    aims = {"seen_min_attribute>=0.90": best["seen"]["min_attribute_accuracy"] >= 0.90,
            "held_out_min_attribute>=0.75": best["held_out"]["min_attribute_accuracy"] >= 0.75,
            "classifier_real_min>=0.98": min(min(v for k, v in r.items() if k != "all") for r in real.values()) >= 0.98}
    metrics = {"params": count_params(model), "text_encoder_params": count_params(model.text),
               "classifier_params": count_params(clf), "train_images": cfg.n_train,
               "train_seconds": round(model_run.train_seconds, 1),
               "classifier_train_seconds": round(clf_run.train_seconds, 1), "sample_steps": cfg.sample_steps,
               "classifier_on_real": real, "best": best, "sweep": sweep, "attention": attention,
               "conditioning_gap": gap, "aims": aims}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"best w = {w_best:g}: every attribute right in {best['seen']['all_accuracy']:.1%} of seen captions, "
          f"{best['held_out']['all_accuracy']:.1%} of held-out ones; results in {out}")


if __name__ == "__main__":
    cli(main)
