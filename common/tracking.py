"""Optional tracking of runs in Weights & Biases or TensorBoard: off by default, no required dependency.

    pip install -e ".[track]"                                    # wandb and tensorboard (the dev extra has both)
    python day06/code/train.py --preset smoke --track tensorboard --out /tmp/d6
    tensorboard --logdir /tmp/d6/tensorboard
    WANDB_MODE=offline python day06/code/train.py --preset smoke --track wandb --out /tmp/d6
    wandb sync /tmp/d6/wandb/offline-run-*                       # later, with a network; online runs need `wandb login`

A tracked run mirrors what it writes to its folder anyway, so a dashboard shows no number the folder lacks:
  * at the start, the config (`preset`, `dataset`, `commit` and every key of OUT/config.yaml);
  * at each `log_every` flush, the averaged loss, grad_norm and lr that train_log.csv gets (common.loop.CsvLog);
  * after each `sample_every` hook, the PNGs it wrote (day 6's progress grids), as images;
  * at the end (common.run.write_metrics), the numeric entries of metrics.json and the figures not yet logged.

Keys: `train/loss`, `train/<image>`, `final/<metric>`, `final/<figure>`. A day that trains several models in
sub-folders (`run.part(name)`) logs each under its folder's name: in W&B as
`cosine/train/loss` against its own step `cosine/train/step`, in TensorBoard as a run `cosine` beside the main
one. Files: OUT/tensorboard/, OUT/wandb/ ($WANDB_DIR wins; $WANDB_PROJECT, $WANDB_NAME and $WANDB_MODE are
W&B's own). Only the main process tracks under torchrun. A relaunch with --resume is a new W&B run; in
TensorBoard it hides the killed launch's events from its own first step on (SummaryWriter's `purge_step`).
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import re
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from common.config import UserError

OWN_FOLDERS = ("tensorboard", "wandb")   # where the trackers write: never scanned for figures


class Tracker:
    """What a run reports to a tracker, and `--track none`: every verb does nothing."""

    def scalars(self, step: int, values: dict[str, float], folder: Path) -> None:
        """Training scalars at `step` from the (sub-)run writing into `folder`."""

    def images(self, step: int | None, folder: Path) -> None:
        """The PNGs written under `folder` since the last look: at a training step, or final (step None)."""

    def summary(self, metrics: dict) -> None:
        """The run's final metrics, a nested record like metrics.json: its numeric leaves (`numbers`) are logged."""

    def close(self) -> None:
        """Write everything out; later calls do nothing."""


NOT_TRACKED = Tracker()


def open_tracker(kind: str, out: Path, config: dict) -> Tracker:
    """The tracker `--track kind` names, writing under the run folder `out`; `config` is logged at once."""
    if kind == "none":
        return NOT_TRACKED
    return {"wandb": WandbTracker, "tensorboard": TensorBoardTracker}[kind](Path(out), config)


def require(package: str, kind: str):
    """Import an optional package, or stop with one line saying how to install it."""
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name != package:
            raise
        raise UserError(f"--track {kind} needs the {package} package, which is not installed: "
                        f"pip install {package} (or pip install -e \".[track]\"), or run without --track") from None


# --- what the adapters share: keys, numbers, new figures -------------------------------------------------

def scope(root: Path, folder: Path) -> str:
    """The key prefix of a (sub-)run: '' for the run folder itself, 'cosine/' for root/cosine."""
    try:
        rel = Path(folder).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:   # a folder outside the run's: its own name
        rel = Path(folder).name
    return "" if rel == "." else rel + "/"


def numbers(data, prefix: str = "") -> dict[str, int | float]:
    """Numeric leaves of nested dicts by slash-joined key, {'fid': .2, 'loss_per_t/0.05': .1}; a list is
    entered only when it holds rows (dicts: 'summary/0/fid'), as a vector (an interval, indices) is no scalar."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)) and all(isinstance(row, dict) for row in data):
        items = enumerate(data)
    else:
        return {prefix.rstrip("/"): data} if isinstance(data, (int, float)) else {}   # bools too: 0 or 1
    return {k: v for key, value in items for k, v in numbers(value, f"{prefix}{key}/").items()}


class NewFigures:
    """PNGs under a run folder that are new or rewritten since the last look (files there before it began are old)."""

    def __init__(self, root: Path):
        self.root = root
        self.seen = dict(self._stamps(root))

    def _stamps(self, folder: Path):
        for path in sorted(folder.rglob("*.png")) if folder.is_dir() else []:
            if not set(path.relative_to(self.root).parts) & set(OWN_FOLDERS):
                yield path, path.stat().st_mtime_ns

    def __call__(self, folder: Path) -> dict[str, Path]:
        """{name: path} of the new ones; `progress/step_000650.png` is named `progress` (one image per step)."""
        new = {path: stamp for path, stamp in self._stamps(Path(folder)) if self.seen.get(path) != stamp}
        self.seen.update(new)
        return {re.sub(r"/?step_?\d+$", "", p.relative_to(folder).with_suffix("").as_posix()) or "images": p
                for p in new}


# --- the adapters ------------------------------------------------------------------------------------------

class TensorBoardTracker(Tracker):
    """Event files under OUT/tensorboard, one TensorBoard run per (sub-)run folder."""

    def __init__(self, out: Path, config: dict):
        require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter
        self.SummaryWriter, self.root, self.config = SummaryWriter, out, config
        self.writers, self.step, self.figures = {}, 0, NewFigures(out)
        atexit.register(self.close)   # a run stopped by an error still leaves readable files

    def writer(self, prefix: str, step: int):
        """The (sub-)run's writer, opened at its first event: `purge_step` hides a killed launch's later events."""
        if prefix not in self.writers:
            self.writers[prefix] = self.SummaryWriter(str(self.root / "tensorboard" / prefix), purge_step=step)
            if prefix == "":
                text = yaml.safe_dump(self.config, sort_keys=False)
                self.writers[""].add_text("config", "    " + text.replace("\n", "\n    "), 0)  # markdown code
        return self.writers[prefix]

    def scalars(self, step, values, folder):
        self.step = max(self.step, step)
        writer = self.writer(scope(self.root, folder), step)
        for key, value in values.items():
            writer.add_scalar(f"train/{key}", value, step)

    def images(self, step, folder):
        group, at = ("final", self.step) if step is None else ("train", step)
        for name, path in self.figures(folder).items():
            pixels = np.asarray(Image.open(path).convert("RGB"))                         # (H, W, 3) uint8
            self.writer(scope(self.root, folder), at).add_image(f"{group}/{name}", pixels, at, dataformats="HWC")

    def summary(self, metrics):
        writer = self.writer("", self.step)
        for key, value in numbers(metrics).items():
            writer.add_scalar(f"final/{key}", float(value), self.step)
        writer.add_text("metrics", "    " + json.dumps(metrics, indent=2).replace("\n", "\n    "), self.step)

    def close(self):
        for writer in self.writers.values():
            writer.close()


class WandbTracker(Tracker):
    """One W&B run (online, or offline with WANDB_MODE=offline), its files under OUT/wandb."""

    def __init__(self, out: Path, config: dict):
        self.wandb = require("wandb", "wandb")
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "diffusion-30days"),
                                   name=os.environ.get("WANDB_NAME", f"{out.resolve().parent.name}/{out.name}"),
                                   dir=os.environ.get("WANDB_DIR", str(out)), config=config)
        self.root, self.figures, self.prefixes, self.closed = out, NewFigures(out), set(), False

    def log(self, prefix: str, step: int, values: dict) -> None:
        """Log under `prefix`train/ against the (sub-)run's own step, so sub-runs that restart at 0 are kept."""
        if prefix not in self.prefixes:   # W&B drops steps that go back: each sub-run gets its own x-axis
            self.run.define_metric(f"{prefix}train/step")
            self.run.define_metric(f"{prefix}train/*", step_metric=f"{prefix}train/step")
            self.prefixes.add(prefix)
        self.run.log({f"{prefix}train/step": step, **{f"{prefix}train/{k}": v for k, v in values.items()}})

    def scalars(self, step, values, folder):
        self.log(scope(self.root, folder), step, values)

    def images(self, step, folder):
        shown = {name: self.wandb.Image(str(path)) for name, path in self.figures(folder).items()}
        if shown and step is None:
            self.run.log({f"{scope(self.root, folder)}final/{name}": image for name, image in shown.items()})
        elif shown:
            self.log(scope(self.root, folder), step, shown)

    def summary(self, metrics):
        self.run.summary.update({f"final/{k}": v for k, v in numbers(metrics).items()})

    def close(self):
        if not self.closed:
            self.closed = True
            self.run.finish()
