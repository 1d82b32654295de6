"""Training utilities: devices, seeds, EMA, LR schedule, checkpoints, the loop, several GPUs.

The loop is deliberately short. What makes it trustworthy:
  * every step's batch and noise come from generators seeded by (seed, step, rank), so a run killed
    and continued with `--resume` computes exactly what an uninterrupted run computes;
  * checkpoints are self-describing (model class + config, run config, dataset, preset, step,
    optimizer, EMA and RNG state), written to a temp file and renamed, and read with weights_only=True;
  * a NaN/inf loss stops the run with one clear line and leaves the last good checkpoint untouched;
  * under `torchrun`, DistributedDataParallel splits each global batch across processes.

References: Polyak & Juditsky 1992 (EMA of iterates); Loshchilov & Hutter 2017 (SGDR, cosine decay);
Goyal et al. 2017 (linear warm-up).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from common.config import UserError
from common.nets import MLP, UNet, MLPConfig, UNetConfig

MODELS: dict[str, tuple[type, type]] = {"UNet": (UNet, UNetConfig), "MLP": (MLP, MLPConfig)}


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
    seed: int = 0


# --- small verbs --------------------------------------------------------------------------------------

def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; asking for an absent GPU is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if dist.is_available() and dist.is_initialized() and name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, rank): the key to exact resume."""
    return torch.Generator().manual_seed(((seed * 1_000_003) + step) * 1009 + rank)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 0 at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class EMA:
    """Exponential moving average of weights, decay warmed up as min(decay, (1 + n) / (10 + n))."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1


def git_commit() -> str:
    """The commit the code ran at, '-dirty' when the work tree had uncommitted changes."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- checkpoints --------------------------------------------------------------------------------------

def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | str) -> dict:
    """Read a checkpoint with weights_only=True; missing or corrupted files are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train first (run the day's train.py) or drop --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or unsafe pickle content
        raise UserError(f"checkpoint {path} is corrupted ({type(err).__name__}); delete it and retrain") from None
    if not isinstance(ckpt, dict) or "model_class" not in ckpt:
        raise UserError(f"{path} is not a checkpoint of this project; delete it and retrain")
    return ckpt


def describe(model: nn.Module) -> dict:
    """What it takes to rebuild `model`: its class name and config."""
    return {"model_class": type(model).__name__, "model_config": dataclasses.asdict(model.cfg)}


def build_model(ckpt: dict, ema: bool = True) -> nn.Module:
    """Rebuild the network a checkpoint describes and load its (EMA) weights."""
    if ckpt["model_class"] not in MODELS:
        raise UserError(f"checkpoint holds an unknown model class '{ckpt['model_class']}'")
    cls, cfg_cls = MODELS[ckpt["model_class"]]
    fields = {f.name: f.type for f in dataclasses.fields(cfg_cls)}
    cfg = cfg_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["model_config"].items()
                     if k in fields})
    model = cls(cfg)
    model.load_state_dict(ckpt["ema" if ema and "ema" in ckpt else "model"])
    return model.eval()


def load_model(path: Path | str, device: torch.device | str = "cpu", ema: bool = True) -> tuple[nn.Module, dict]:
    ckpt = load_checkpoint(path)
    return build_model(ckpt, ema).to(device), ckpt
