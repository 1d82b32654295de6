"""Day 12 on real data: text-to-image on MS-COCO captions, the text read by a word encoder or a frozen CLIP.

    python day12/code/coco.py --coco_root=data/coco [--clip=models/clip-vit-base-patch32] [--preset smoke|cpu|gpu]

Not part of the default run (train.py, offline and scored): it needs COCO 2017 on disk (real_data.py says which
files) and, for --clip, a CLIP text encoder saved with save_pretrained. It reads the first `limit` captioned images
of the split at 32×32, one caption each; the first 90 % train, the last 10 % lend their captions to the grids.

The text side is one of two adapters, chosen by whether --clip is set; each turns captions into ids y (N, L) and
gives the empty caption's ids ∅ (L,):
  * words (default): a word Tokenizer over the training captions' words seen at least `min_count` times, and
    text.py's TextToImage, whose encoder trains jointly with the U-Net (LDM §3.3). The vocabulary is written to
    OUT/vocab.json: without it the checkpoint's network cannot read a caption.
  * --clip=PATH: ClipTextToImage, the U-Net reading a frozen pretrained CLIP text transformer (LDM §4.3.2; Stable
    Diffusion's recipe). y holds CLIP's token ids and the context is computed from them on the fly. CLIP's
    weights are left out of checkpoints: they are the folder's, and cfg.clip names it.
Training and sampling are train.py's: captions dropped to ∅ at rate p_uncond, ancestral sampling guided by
ε̃ = ε_∅ + w (ε_c − ε_∅) at each w in `ws`, with the same noise at every w. Nothing scores the samples (the
attribute judge knows only the procedural scenes): the grids are for looking at.

References: Rombach et al. 2022 (LDM, arXiv:2112.10752); Radford et al. 2021 (CLIP, arXiv:2103.00020); Chen et al.
2015 (COCO Captions, arXiv:1504.00325); Ho & Salimans 2022 (classifier-free guidance, arXiv:2207.12598).
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from plots import plot_gallery
from real_data import SPLITS, FrozenCLIPText, load_coco_captions
from text import TextToImage, TextToImageConfig, Tokenizer
from train import draw, drop_captions
from train import model_config as scenes_model_config

from common.config import UserError, cli, parse_args, require
from common.diffusion import diffusion_loss
from common.loop import fit
from common.nets import Context, UNet, UNetConfig, count_params, register
from common.paths import SCHEDULES, DiscreteVP
from common.plotting import plot_loss_csv
from common.predictions import PREDICTIONS, denoiser, guided
from common.run import Run, write_metrics
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]


# --- the frozen-CLIP network ------------------------------------------------------------------------------

def clip_mask(ids: torch.Tensor, end: int) -> torch.Tensor:
    """(B, L) bool, True at real tokens: everything up to and including the first <|endoftext|> (id `end`).

    Read from the ids alone, whatever CLIP pads with: OpenAI's tokenizer pads with <|endoftext|> itself (so
    `ids != pad` would hide the end token), OpenCLIP's with "!"; truncation keeps the end token last."""
    is_end = (ids == end).long()
    return is_end.cumsum(1) - is_end == 0           # no end token strictly before this position


@dataclass
class ClipTextToImageConfig:
    clip: str = ""                    # folder of a CLIP text model and its tokenizer (save_pretrained)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=3, image_size=32, context_dim=512))
    length: int = 32                  # CLIP tokens per caption, <|startoftext|> and <|endoftext|> included


def _keep_clip_out(module, state_dict, prefix, local_metadata) -> None:
    """state_dict post-hook: drop the frozen CLIP's tensors (they are the folder's, not the run's)."""
    for key in [k for k in state_dict if k.startswith(prefix + "clip.")]:
        del state_dict[key]


def _clip_from_folder(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """load_state_dict pre-hook: CLIP tensors a checkpoint lacks are the ones already loaded from the folder."""
    for key, value in module.clip.state_dict().items():
        state_dict.setdefault(f"{prefix}clip.{key}", value)


@register
class ClipTextToImage(nn.Module):
    """ε_θ(x_t, t, τ(y)) with τ a frozen, pretrained CLIP text transformer; y holds CLIP token ids (B, L).

    Only the U-Net trains. `state_dict` leaves CLIP's weights out and `load_state_dict` takes them from the
    folder, so a checkpoint holds the U-Net alone and rebuilds wherever cfg.clip is on disk. Pass `clip` to
    share an encoder already loaded (it must be the folder's)."""

    def __init__(self, cfg: ClipTextToImageConfig, clip: FrozenCLIPText | None = None):
        super().__init__()
        self.cfg = cfg
        self.clip = clip if clip is not None else FrozenCLIPText(cfg.clip)
        if self.clip.dim != cfg.unet.context_dim:
            raise UserError(f"the CLIP text encoder at {cfg.clip} is {self.clip.dim} wide but unet.context_dim="
                            f"{cfg.unet.context_dim}; set unet.context_dim={self.clip.dim}")
        if not 2 <= cfg.length <= self.clip.positions:
            raise UserError(f"length={cfg.length}: the CLIP text encoder at {cfg.clip} reads 2 to "
                            f"{self.clip.positions} tokens; choose a length in that range")
        self.unet = UNet(cfg.unet)
        self.register_state_dict_post_hook(_keep_clip_out)
        self.register_load_state_dict_pre_hook(_clip_from_folder)

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """(B, length) CLIP ids: <|startoftext|>, the caption's tokens (cut to fit), <|endoftext|>, padding."""
        return self.clip.tokenizer(list(captions), padding="max_length", max_length=self.cfg.length,
                                   truncation=True, return_tensors="pt")["input_ids"]

    @torch.no_grad()
    def context(self, ids: torch.Tensor) -> Context:
        """CLIP's last hidden states (B, L, D) at the ids, and the mask of real tokens (B, L)."""
        mask = clip_mask(ids, self.clip.tokenizer.eos_token_id)
        states = self.clip.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state   # (B, L, D)
        return Context(states.float(), mask)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W), t (B,), y (B, L) CLIP ids -> the U-Net's prediction (B, 3, H, W)."""
        return self.unet(x, t, context=self.context(y))


# --- the experiment's config ------------------------------------------------------------------------------

def model_config(channels: int, length: int) -> TextToImageConfig:
    """train.py's network (32×32 RGB, cross-attention at 8 and 4 px), `length` tokens a caption; vocab_size 0:
    it is set from the training captions."""
    base = scenes_model_config(channels)
    return replace(base, text=replace(base.text, vocab_size=0, length=length))


@dataclass
class Config(TrainConfig):
    coco_root: str = ""              # folder holding {split}2017/ and annotations/ (real_data.py)
    clip: str = ""                   # folder of a CLIP text encoder (save_pretrained); "": train a word encoder
    split: str = "train"
    limit: int = 5000                # captioned images read (first by image id): 90 % train, 10 % held out
    min_count: int = 2               # a word of the training captions joins the vocabulary when seen this often
    prediction: str = "v"
    schedule: str = "cosine"
    n_steps: int = 1000
    p_uncond: float = 0.1            # share of training captions replaced by the empty caption ∅
    # with --clip only model.unet (its context_dim set to CLIP's width) and model.text.length are used
    model: TextToImageConfig = field(default_factory=lambda: model_config(16, 32))
    ws: tuple[float, ...] = (1, 2, 4, 7)   # guidance weights (w = 1: the conditional model)
    n_show: int = 8                  # held-out captions sampled at each w
    sample_steps: int = 50           # ancestral steps
    batch: int = 250                 # sampling batch (guidance doubles it inside the network)

    def check(self) -> None:
        require(bool(self.coco_root), "coco_root", "point it at the folder holding train2017/ and annotations/ "
                "(COCO 2017 from https://cocodataset.org/#download), e.g. --coco_root=data/coco")
        require(self.split in SPLITS, "split", f"choose one of {', '.join(SPLITS)}")
        require(self.limit >= 2, "limit", "choose 2 or more images: 90 % train, 10 % give the sample captions")
        require(self.min_count >= 1, "min_count", "choose 1 or more sightings")
        require(self.prediction in PREDICTIONS, "prediction", f"choose one of {', '.join(PREDICTIONS)}")
        require(self.schedule in SCHEDULES, "schedule", f"choose one of {', '.join(SCHEDULES)}")
        require(0 < self.p_uncond < 1, "p_uncond", "choose a share in (0, 1), e.g. 0.1: the model must see both")
        u, text = self.model.unet, self.model.text
        require(u.in_channels == 3 and u.image_size == 32, "model.unet.image_size", "keep 3 channels at 32×32: "
                "the images are read at 32 px and sampled from 32×32 noise")
        require(u.context_dim == text.dim, "model.unet.context_dim", f"choose the text encoder's width "
                f"model.text.dim={text.dim} (with --clip it becomes CLIP's)")
        require(u.num_classes == 0 and u.cond_channels == 0, "model.unet.num_classes", "choose 0: the caption is "
                "the only condition")
        require(text.vocab_size == 0, "model.text.vocab_size", "leave 0: it is set from the training captions' "
                "words (see --min_count)")
        require(text.length >= 2, "model.text.length", "choose 2 or more tokens a caption")
        require(text.dim % text.heads == 0, "model.text.heads", f"choose a divisor of model.text.dim={text.dim}")
        require(len(self.ws) >= 1 and min(self.ws) >= 0, "ws", "choose weights >= 0, e.g. 1,3")
        require(self.n_show >= 1, "n_show", "choose 1 or more captions")
        require(1 <= self.sample_steps <= self.n_steps, "sample_steps", f"choose 1..n_steps={self.n_steps}")
        require(self.batch >= 1, "batch", "choose 1 or more samples per batch")


PRESETS = {
    "smoke": Config(steps=6, batch_size=4, warmup=2, model=model_config(8, 16), limit=8, min_count=1,
                    sample_every=3, ckpt_every=3, log_every=2, sample_steps=4, ws=(1, 3), batch=16),
    "cpu": Config(steps=1300, batch_size=128, lr=2e-3, warmup=100, ema_decay=0.995, sample_every=0, ckpt_every=250),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, ema_decay=0.9999, model=model_config(64, 32),
                  limit=50_000, min_count=5, sample_every=5000, ckpt_every=2000, sample_steps=250,
                  ws=(1, 1.5, 2, 3, 5, 8)),
}


# --- the two text sides ------------------------------------------------------------------------------------

@dataclass
class TextSide:
    """What the run needs of either adapter."""
    model: nn.Module
    encode: Callable[[list[str]], torch.Tensor]   # captions -> ids (N, L) long, the network's y
    null: torch.Tensor                            # the empty caption's ids (L,): ∅
    record: dict                                  # what metrics.json says about it
    words: list[str] | None = None                # the word tokenizer's vocabulary (its ids 3, 4, ...)


def words_of(caption: str) -> list[str]:
    """A caption's words as the word tokenizer reads them: lower case, punctuation dropped ("A dog." -> a, dog)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)*", caption.lower())


def vocabulary(captions: list[str], min_count: int) -> list[str]:
    """The words seen at least `min_count` times in `captions`, most frequent first (ties alphabetical)."""
    counts = Counter(w for caption in captions for w in words_of(caption))
    return sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))


def word_side(cfg: Config, captions: list[str]) -> TextSide:
    """A word Tokenizer over the training captions and TextToImage, its encoder sized to the vocabulary."""
    words = vocabulary(captions, cfg.min_count)
    if not words:
        raise UserError(f"--min_count={cfg.min_count}: no word of the {len(captions)} training captions is seen "
                        "that often; lower --min_count")
    tokenizer = Tokenizer(words, cfg.model.text.length)
    torch.manual_seed(cfg.seed)
    model = TextToImage(replace(cfg.model, text=replace(cfg.model.text, vocab_size=len(tokenizer.words))))
    return TextSide(model, lambda texts: tokenizer.encode([" ".join(words_of(t)) for t in texts]), tokenizer.null,
                    {"text_encoder": "words, trained jointly", "text_encoder_params": count_params(model.text),
                     "vocabulary_size": len(words), "vocabulary_file": "vocab.json"}, words)


def clip_side(cfg: Config, clip: FrozenCLIPText) -> TextSide:
    """ClipTextToImage over the loaded CLIP, the U-Net's context width set to CLIP's."""
    torch.manual_seed(cfg.seed)
    model = ClipTextToImage(ClipTextToImageConfig(cfg.clip, replace(cfg.model.unet, context_dim=clip.dim),
                                                  cfg.model.text.length), clip)
    return TextSide(model, model.tokenize, model.tokenize([""])[0],
                    {"text_encoder": f"CLIP at {cfg.clip}, frozen", "text_encoder_params": count_params(clip),
                     "clip_weights_in_checkpoint": False})


# --- the run ----------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results" / "coco", __doc__.splitlines()[0], argv)
    start = time.time()
    clip = FrozenCLIPText(cfg.clip) if cfg.clip else None       # first: a wrong folder fails before the data load
    x, captions = load_coco_captions(cfg.coco_root, cfg.split, cfg.model.unet.image_size, cfg.limit)
    n_train = len(x) * 9 // 10
    if n_train < 1:
        raise UserError(f"{cfg.coco_root}: only {len(x)} captioned image in its {cfg.split} split; 2 or more are "
                        "needed (90 % train, 10 % give the sample captions)")
    text = clip_side(cfg, clip) if clip else word_side(cfg, captions[:n_train])
    run = Run.from_args(args, f"coco-captions-{cfg.split}-{len(x)}")
    if text.words is not None and run.is_main:
        (run.out / "vocab.json").write_text(json.dumps({"length": cfg.model.text.length, "min_count": cfg.min_count,
                                                        "words": text.words}, indent=0) + "\n")
    ids = text.encode(captions[:n_train])                                         # (N, L)
    shown = captions[n_train:][:cfg.n_show]                                       # held-out captions
    shown_ids = text.encode(shown)
    path = DiscreteVP.named(cfg.schedule, cfg.n_steps)

    def loss_fn(net, x0, tokens, generator):
        tokens = drop_captions(tokens, text.null, cfg.p_uncond, generator)
        return diffusion_loss(net, x0, path, cfg.prediction, generator, y=tokens)[0].mean()

    def progress(ema, step):
        x = draw(denoiser(ema, cfg.prediction, path), shown_ids, cfg, path, run.device, 0)
        plot_gallery(x, shown, run.out / "progress" / f"step_{step:06d}.png", title=f"step {step}")

    model, ema = fit(text.model, loss_fn, x[:n_train], ids, cfg, run, on_sample=progress)
    if not run.is_main:  # under torchrun, the other processes only helped train
        return
    out, base = run.out, denoiser(ema, cfg.prediction, path)
    for w in cfg.ws:  # the same captions and noise at every w
        samples = draw(guided(base, w, text.null), shown_ids, cfg, path, run.device, cfg.seed + 5)
        plot_gallery(samples, shown, out / f"samples_w{w:g}.png", title=f"held-out COCO captions, w = {w:g}",
                     ncol=min(8, len(shown)))
    plot_gallery(x[n_train:][:cfg.n_show], shown, out / "real.png", title="the held-out images of those captions",
                 ncol=min(8, len(shown)))
    plot_loss_csv(out / "train_log.csv", out / "loss.png", title=f"training loss ({cfg.prediction} target)")

    metrics = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad), **text.record,
               "train_images": n_train, "held_out_images": len(x) - n_train,
               "train_seconds": round(run.train_seconds, 1), "sample_steps": cfg.sample_steps,
               "sample_captions": shown, "samples": {f"w={w:g}": f"samples_w{w:g}.png" for w in cfg.ws},
               "scores_skipped": "no attribute evaluator for COCO images; look at the grids"}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(f"samples for {len(shown)} held-out captions at w = {', '.join(f'{w:g}' for w in cfg.ws)} in {out}")


if __name__ == "__main__":
    cli(main)
