"""UniDiffuser: one network, one noise level per modality, and every conditional, marginal and joint from the times.

Each modality m ∈ {image, audio, text} is noised on the same path with its own time,

    x^m_{t_m} = alpha(t_m) x^m_0 + sigma(t_m) eps^m,     t_image, t_audio, t_text drawn independently,

and one network reads all three noisy inputs and all three times and predicts every modality's target (here v,
Salimans & Ho 2022); the loss is the sum of the per-modality MSEs (Bao et al. 2023, Eq. 5, with v for ε). Its
optimum is E[v^m | all x_{t}] for every combination of times, hence (§3.1 of the paper) by choosing them:

    t_m = 0 with the clean value      condition on modality m       (x_0 is the data itself)
    t_m = 1 with pure noise           marginalise modality m out    (x_1 carries no information on x_0)
    t_m = t, walked from 1 to 0       generate modality m

A `Task` names the modalities to generate, to condition on and to marginalise; `task_denoiser` turns the network
into an ordinary denoiser (x_t, t, **given) -> Pair of the generated modalities, flattened into one vector, so
the course's samplers (common.samplers) run it unchanged; the given modalities travel as keyword conditions, so
they reach the network bit for bit at every step.

The network (`JointNet`) has two branches that read each other. A small transformer (common.dit.Block) attends
over the audio's 32-sample frames, the text's characters and coarse 7 × 7 patches of the noisy image, each token
with a unit-scale learned position and its modality's time embedding, and predicts the audio and the text. The
course's U-Net predicts the image at t_image and cross-attends (Rombach et al. 2022, the text conditioning of day
12) to the transformer's output audio and text tokens: the image sees what the other modalities say, each at its
own time. A patch transformer this small does not learn to draw digits in minutes; a U-Net does.

References
    Bao et al. 2023, "One Transformer Fits All Distributions in Multi-Modal Diffusion at Scale" (UniDiffuser),
        arXiv:2303.06555.
    Bao et al. 2023, "All are Worth Words: A ViT Backbone for Diffusion Models" (U-ViT), arXiv:2209.12152.
    Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models" (v), arXiv:2202.00512.
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models" (cross-attention),
        arXiv:2112.10752.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from modalities import ALPHABET, CLIP, LENGTH
from torch import nn

from common.config import require
from common.dit import Block, patchify
from common.nets import Context, TimeEmbedding, UNet, UNetConfig, register
from common.paths import AffinePath
from common.predictions import TARGET, Coefficients, denoiser

Tensor = torch.Tensor
MODALITIES = ("image", "audio", "text")
SHAPES = {"image": (1, 28, 28), "audio": (CLIP,), "text": (LENGTH, len(ALPHABET))}


@dataclass
class JointConfig:
    """Everything that fixes a JointNet, so that a checkpoint's copy of it rebuilds the same network."""
    width: int = 128              # D, the transformer's tokens and the U-Net's context
    depth: int = 3                # transformer blocks
    heads: int = 4
    mlp_ratio: float = 2.0
    patch: int = 7                # the transformer's image patches p × p: (28 / p)² tokens
    frame: int = 32               # audio samples per token: CLIP / frame tokens. A quarter of the width: at t -> 0
                                  # the target v -> eps is the token's own noise, which must pass through the stream
                                  # beside position, time and what the U-Net reads; a token as wide as the stream
                                  # leaves no room (at half the width the joint network read tones but drew none)
    channels: int = 16            # the U-Net's width at full resolution (mults 1, 2, 2)
    attn_res: tuple[int, ...] = (7,)  # the U-Net's sides with self- and cross-attention

    def unet(self) -> UNetConfig:
        return UNetConfig(channels=self.channels, mults=(1, 2, 2), n_res=1, attn_res=self.attn_res,
                          context_dim=self.width)

    def check(self) -> None:
        require(self.width % 8 == 0 and self.width % self.heads == 0, "width",
                f"choose a multiple of 8 that heads={self.heads} divides")
        require(self.depth >= 1, "depth", "choose 1 or more blocks")
        require(28 % self.patch == 0, "patch", "choose a divisor of 28, e.g. 4 or 7")
        require(CLIP % self.frame == 0, "frame", f"choose a divisor of the clip's {CLIP} samples, e.g. 32")
        self.unet().check()


@register
class JointNet(nn.Module):
    """A transformer over all three modalities' tokens (audio and text heads) and a U-Net for the image that
    cross-attends to the transformer's audio and text tokens; called as net(x, t) with dicts {modality: tensor}."""

    def __init__(self, cfg: JointConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.width, cfg.patch
        self.counts = {"image": (28 // p) ** 2, "audio": CLIP // cfg.frame, "text": LENGTH}   # tokens per modality
        self.embed = nn.ModuleDict({"image": nn.Linear(p * p, d), "audio": nn.Linear(cfg.frame, d),
                                    "text": nn.Linear(len(ALPHABET), d)})
        self.head = nn.ModuleDict({"audio": nn.Linear(d, cfg.frame), "text": nn.Linear(d, len(ALPHABET))})
        self.time = nn.ModuleDict({m: TimeEmbedding(d // 4) for m in MODALITIES})          # (B,) -> (B, D) each
        # unit-scale positions: at t = 1 a token's content is pure noise of about this size, and a position drawn
        # at ViT's usual 0.02 is drowned by it, so no token could tell where (or which modality) it is
        self.pos = nn.Parameter(torch.randn(sum(self.counts.values()), d))                  # (N, D)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.unet = UNet(cfg.unet())

    def tokens(self, m: str, x: Tensor) -> Tensor:
        """A modality's input -> its tokens' raw values: (B, (28/p)², p²), (B, CLIP/frame, frame) or (B, 5, 16)."""
        if m == "image":
            return patchify(x, self.cfg.patch)
        return x.reshape(len(x), -1, self.cfg.frame) if m == "audio" else x

    def forward(self, x: dict[str, Tensor], t: dict[str, Tensor],
                outputs: tuple[str, ...] = MODALITIES) -> dict[str, Tensor]:
        """x: {modality: (B, *SHAPES[m])} noisy inputs, t: {modality: (B,)} their times -> {m: (B, *SHAPES[m])}
        for each m in `outputs` (a sampler needs only the generated ones: the U-Net, most of the cost, runs only
        when the image is asked for)."""
        h = torch.cat([self.embed[m](self.tokens(m, x[m])) + self.time[m](t[m])[:, None] for m in MODALITIES],
                      dim=1) + self.pos                                                     # (B, N, D)
        for block in self.blocks:
            h = block(h, None)
        _, audio, text = self.norm(h).split([self.counts[m] for m in MODALITIES], dim=1)
        out = {"audio": self.head["audio"](audio).reshape(len(h), CLIP),                    # (B, CLIP)
               "text": self.head["text"](text)}                                             # (B, 5, 16)
        if "image" in outputs:
            others = torch.cat([audio, text], dim=1)                                        # (B, L, D)
            context = Context(others, torch.ones(others.shape[:2], dtype=torch.bool, device=others.device))
            out["image"] = self.unet(x["image"], t["image"], context=context)               # (B, 1, 28, 28)
        return {m: out[m] for m in outputs}


# --- training: independent times, one loss per modality ----------------------------------------------------

def sample_times(path: AffinePath, n: int, generator: torch.Generator, p0: float = 0.0, p1: float = 0.0) -> Tensor:
    """n times: t = 0 with probability p0 (the modality is a condition), t = 1 with probability p1 (it is
    marginalised out), otherwise uniform on the path's levels {0, 1/T, ..., 1} (it is being generated)."""
    t = torch.randint(0, path.scale + 1, (n,), generator=generator).double() / path.scale
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.where(u < p0, 0.0, torch.where(u < p0 + p1, 1.0, t))


def joint_losses(net, x0: dict[str, Tensor], path: AffinePath, prediction: str, generator: torch.Generator,
                 p0: float = 0.0, p1: float = 0.0) -> dict[str, Tensor]:
    """Per-modality, per-sample MSE (B,) of the network's prediction, each modality at its own random time
    (`sample_times`). A modality at t = 0 scores 0: there x_t is x_0 itself, so the denoiser ignores the output
    and its target (v = eps) cannot be predicted; it is a condition, and teaches the other modalities."""
    t = {m: sample_times(path, len(x0[m]), generator, p0, p1) for m in MODALITIES}
    eps = {m: torch.randn(x0[m].shape, generator=generator).to(x0[m]) for m in MODALITIES}
    c = {m: Coefficients.at(path, t[m], x0[m]) for m in MODALITIES}
    xt = {m: c[m].alpha * x0[m] + c[m].sigma * eps[m] for m in MODALITIES}
    out = net(xt, {m: t[m].to(x0[m]) for m in MODALITIES})
    mse = {m: (out[m].float() - TARGET[prediction](x0[m], eps[m], c[m])).pow(2).flatten(1).mean(1)
           for m in MODALITIES}
    return {m: torch.where(t[m].to(mse[m].device) > 0, mse[m], 0.0) for m in MODALITIES}


# --- sampling: tasks as choices of the times ---------------------------------------------------------------

class Task(NamedTuple):
    """What to generate (walked from t = 1 to 0), what is given (t = 0, clean) and what is marginalised (t = 1)."""
    name: str
    generate: tuple[str, ...]
    given: tuple[str, ...] = ()

    @property
    def marginal(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m not in self.generate + self.given)

    @property
    def dim(self) -> int:
        """Length of the flat state: the generated modalities' values together."""
        return sum(torch.Size(SHAPES[m]).numel() for m in self.generate)


def conditional(given: str, target: str) -> Task:
    return Task(f"{given}→{target}", (target,), (given,))


TASKS = (*(conditional(g, m) for g in MODALITIES for m in MODALITIES if g != m),
         *(Task(f"{m} alone", (m,)) for m in MODALITIES),
         Task("joint", MODALITIES))


def split_state(x: Tensor, task: Task) -> dict[str, Tensor]:
    """The flat state (B, task.dim) -> {generated modality: (B, *SHAPES[m])}."""
    sizes = [torch.Size(SHAPES[m]).numel() for m in task.generate]
    return {m: part.reshape(len(x), *SHAPES[m]) for m, part in zip(task.generate, x.split(sizes, dim=1))}


def task_denoiser(net, task: Task, path: AffinePath, prediction: str):
    """The network as a denoiser of the task's flat state: generated modalities at the sampler's t, `given` ones
    (keyword arguments, clean) at t = 0, marginalised ones (keyword arguments, their fixed noise) at t = 1."""
    def model(x, t, **fixed):                                                               # x (B, task.dim)
        inputs = split_state(x, task) | fixed
        times = {m: t if m in task.generate else torch.full_like(t, float(m in task.marginal))
                 for m in MODALITIES}
        out = net(inputs, times, task.generate)
        return torch.cat([out[m].flatten(1) for m in task.generate], dim=1)
    return denoiser(model, prediction, path)
