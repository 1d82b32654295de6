"""The DDGAN training loop of days 21 and 30: two networks, two optimisers, one update of each per step (Xiao et al.
2022).

    G_ema, rows = train_gan(G, D, images, grid, cfg, run)

common.loop.fit trains one network with one optimiser; a GAN alternates two, so it has this short loop of its own with
the same promises: every step's batch and noise come from generators seeded by (seed, step) (common.training,
common.loop.batch_indices); a checkpoint, written atomically, holds both networks, both optimisers, the EMA of G and
the log's rows, so `--resume` computes what an uninterrupted run computes, also when it raises --steps (the
learning rates are constant, so nothing else depends on the run's length); a NaN/inf loss stops the run with one
line and leaves the last checkpoint as it was.
"""
from __future__ import annotations

import csv
import math
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from common.checkpoint import describe, load_checkpoint, save_checkpoint
from common.config import UserError, flatten, plain, to_dict
from common.ddgan import d_loss, fake_x_s, g_loss, r1_penalty, real_pairs
from common.loop import batch_indices, check_data_fits
from common.run import Run
from common.training import EMA, step_generator

LOG = ("loss_d", "loss_g", "d_real", "d_fake")                 # train_log.csv's columns after `step`


def gan_step(G, D, opt_g, opt_d, x0, grid, step: int, cfg, amp) -> dict[str, float]:
    """One update of D, then one of G, on a batch of real images x0; the step's losses and mean logits."""
    g = step_generator(cfg.seed, step)
    lazy = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
    with amp():
        t, s, x_t, x_s = real_pairs(x0, grid, g)
        fake = fake_x_s(G, x_t, t, s, g)                        # one draw of G serves both updates
        d_real, d_fake = D(x_s.requires_grad_(lazy), x_t, t), D(fake.detach(), x_t, t)
        adversarial = d_loss(d_real, d_fake)
        loss_d = (adversarial + r1_penalty(d_real, x_s, cfg.r1_gamma)) if lazy else adversarial
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    with amp():
        loss_g = g_loss(D(fake, x_t, t))                        # against the D just updated
    opt_g.zero_grad(set_to_none=True)                           # (D's gradients from it: cleared before D's next use)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": adversarial.item(), "loss_g": loss_g.item(), "d_real": d_real.float().mean().item(),
            "d_fake": d_fake.float().mean().item()}


def train_gan(G, D, x, grid, cfg, run: Run) -> tuple[torch.nn.Module, list[dict]]:
    """cfg.steps updates of D and of G on the images x (N, C, H, W); returns the EMA of G and the log's rows (one a
    step). Checkpoints OUT/checkpoint.pt every ckpt_every steps and at the end; run.resume continues from it."""
    check_data_fits(G, x, run.dataset)
    G.to(run.device)
    D.to(run.device)
    ema = EMA(G, cfg.ema_decay)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    path = run.out / "checkpoint.pt"
    ckpt = restore(path, G, D, ema, opt_g, opt_d, cfg, run.dataset) if run.resume else {}
    start, rows = ckpt.get("step", 0), ckpt.get("log", [])
    run.train_seconds = ckpt.get("elapsed_s", 0.0)                 # stays so when a finished run is resumed
    clock = time.time() - run.train_seconds
    amp = partial(torch.autocast, run.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train")
    for step in bar:
        x0 = x[batch_indices(len(x), cfg.batch_size, cfg.seed, step)].to(run.device)
        row = gan_step(G, D, opt_g, opt_d, x0, grid, step, cfg, amp)
        if not all(map(math.isfinite, row.values())):
            raise diverged(step, path)
        ema.update(G)
        rows.append({"step": step + 1, **row})
        if (step + 1) % cfg.log_every == 0:
            bar.set_postfix(loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            run.train_seconds = time.time() - clock
            save_checkpoint(path, payload(G, D, ema, opt_g, opt_d, cfg, run, step + 1, rows))
            write_log(run.out / "train_log.csv", rows, cfg.log_every)
    return ema.model, rows


def diverged(step: int, path: Path) -> UserError:
    kept = (f"the last good checkpoint is {path} (step {load_checkpoint(path)['step']})" if path.is_file()
            else "no checkpoint was written yet")
    return UserError(f"a loss became NaN/inf at step {step + 1}; {kept}; lower --lr_g and --lr_d or raise --r1_gamma, "
                     "then rerun")


def payload(G, D, ema, opt_g, opt_d, cfg, run: Run, step: int, rows: list[dict]) -> dict:
    """A self-describing checkpoint: common.checkpoint.load_model rebuilds the EMA generator (a U-Net) from it; the
    discriminator, both optimisers and the log's rows are there to continue the run."""
    return {**describe(G), "config_class": type(cfg).__name__, "config": to_dict(cfg), "dataset": run.dataset,
            "preset": run.preset, "step": step, "elapsed_s": run.train_seconds, "log": list(rows),
            "model": G.state_dict(), "ema": ema.model.state_dict(), "ema_updates": ema.updates,
            "discriminator": {**describe(D), "model": D.state_dict()},
            "optimizer": opt_g.state_dict(), "optimizer_d": opt_d.state_dict()}


def restore(path: Path, G, D, ema, opt_g, opt_d, cfg, dataset: str) -> dict:
    """Load a checkpoint into the live objects and return it. Refused: other settings than --steps (nothing but the
    run's length depends on it), fewer --steps than it has trained, other data."""
    ckpt = load_checkpoint(path)
    before, now = flatten(plain(ckpt["config"])), flatten(to_dict(cfg))
    changed = [k for k in dict.fromkeys([*now, *before]) if k != "steps" and now.get(k) != before.get(k)]
    if changed:
        raise UserError(f"{path} was made with other settings ({', '.join(changed)}); resume with the same preset "
                        "and overrides (only --steps may grow), or use a new --out")
    if ckpt["step"] > cfg.steps:
        raise UserError(f"{path} is at step {ckpt['step']}, beyond --steps={cfg.steps}; choose at least that many")
    if ckpt["dataset"] != dataset:
        raise UserError(f"{path} was trained on '{ckpt['dataset']}' but this run loaded '{dataset}'; resume where "
                        "the same data is found (--data-dir), or use a new --out")
    G.load_state_dict(ckpt["model"])
    D.load_state_dict(ckpt["discriminator"]["model"])
    ema.model.load_state_dict(ckpt["ema"])
    ema.updates = ckpt["ema_updates"]
    opt_g.load_state_dict(ckpt["optimizer"])
    opt_d.load_state_dict(ckpt["optimizer_d"])
    return ckpt


def interval_means(rows: list[dict], every: int) -> list[dict]:
    """The log's rows (one a step) averaged over each `every` steps, at their last step (the last may average fewer)."""
    groups = [rows[i: i + every] for i in range(0, len(rows), every)]
    return [{"step": g[-1]["step"], **{k: sum(r[k] for r in g) / len(g) for k in LOG}} for g in groups]


def write_log(path: Path, rows: list[dict], every: int) -> None:
    """train_log.csv, rewritten whole from the rows a checkpoint holds: a resumed run writes the same file."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", *LOG])
        writer.writeheader()
        writer.writerows(interval_means(rows, every))
