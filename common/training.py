"""The training recipe's small nouns: its config, the per-step random generator, the LR schedule, the EMA.

The loop that strings them together is common.loop; a run's bookkeeping (devices, metrics.json) is
common.run; checkpoints are common.checkpoint.

References: Polyak & Juditsky 1992 (EMA of iterates); Loshchilov & Hutter 2017 (SGDR, cosine decay);
Goyal et al. 2017 (linear warm-up).
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from common.config import require


@dataclass
class TrainConfig:
    """Fields every training run has; a day's config inherits them and adds its own."""
    steps: int = 1000
    batch_size: int = 128          # global batch (split across processes under torchrun)
    lr: float = 2e-3
    warmup: int = 100              # linear warm-up steps, then cosine decay to 0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    bf16: bool = True              # bf16 autocast (CPU and CUDA)
    log_every: int = 50
    sample_every: int = 1000       # periodic sample grid (0: never)
    ckpt_every: int = 500
    keep_every: int = 0            # also keep checkpoint_step{N}.pt every N steps (0: never)
    averages: tuple[str, ...] = () # more weight averages kept in the checkpoints (common.ema.AVERAGES), e.g.
                                   # ema-0.9999, ema-0.9999-ramp, power-0.05 (σ_rel)
    seed: int = 0

    def check(self) -> None:
        """The recipe's constraints, checked when the command line is parsed (common.config.validate)."""
        world = int(os.environ.get("WORLD_SIZE", 1))                     # processes under torchrun
        require(self.steps >= 1, "steps", "train at least 1 step")
        require(self.batch_size >= 1, "batch_size", "choose at least 1 image per step")
        require(self.batch_size % world == 0, "batch_size", f"choose a multiple of the {world} processes")
        require(0 < self.lr < math.inf, "lr", "choose a positive learning rate, e.g. 2e-3")
        require(0 <= self.warmup <= self.steps, "warmup", f"choose 0..steps={self.steps} warm-up steps")
        require(0 <= self.grad_clip < math.inf, "grad_clip", "choose a positive norm (0: no clipping)")
        require(0 <= self.ema_decay < 1, "ema_decay", "choose a decay in [0, 1), e.g. 0.999 (0: no averaging)")
        require(self.log_every >= 1, "log_every", "log every 1 or more steps")
        require(self.ckpt_every >= 1, "ckpt_every", "save a checkpoint every 1 or more steps")
        require(self.sample_every >= 0, "sample_every", "choose 0 (never) or a number of steps")
        require(self.keep_every >= 0, "keep_every", "choose 0 (never) or a number of steps")
        from common.ema import parse_average  # here: common.ema builds on this module

        for spec in self.averages:
            parse_average(spec)
        require(len(set(self.averages)) == len(self.averages), "averages", "name each average once")


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, rank): the key to exact resume."""
    return torch.Generator().manual_seed(((seed * 1_000_003) + step) * 1009 + rank)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 0 at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def average_into(average: nn.Module, model: nn.Module, weight: float) -> None:
    """average ← average + weight (model − average) for every parameter in one fused call (a loop of small
    per-tensor ops costs as much as a training step's worth of time with several averages); buffers copied."""
    torch._foreach_lerp_(list(average.parameters()), [p.detach() for p in model.parameters()], weight)
    for avg_b, b in zip(average.buffers(), model.buffers()):
        avg_b.copy_(b)


class EMA:
    """Exponential moving average of weights, decay warmed up as min(decay, (1 + n) / (10 + n)) at the n-th update
    (n from 0) unless ramp=False: without the ramp, the initial weights keep the share decay^n (common.ema)."""

    def __init__(self, model: nn.Module, decay: float, ramp: bool = True):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.ramp = decay, ramp
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.ramp else self.decay
        average_into(self.model, model, 1 - d)
        self.updates += 1
