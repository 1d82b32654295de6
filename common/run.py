"""A run's bookkeeping: which process and device it is, where it writes, and what it records about itself.

    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0])
    run = Run.from_args(args, data.name)        # joins torchrun's process group; writes OUT/config.yaml
    ...                                         # common.loop.fit(..., run) trains; several models: run.part(name)
    if not run.is_main:                         # under torchrun, the other processes only help train
        return
    write_metrics(run.out, metrics, cfg, run, wall_s)   # OUT/metrics.json: the numbers and what made them

Launch on several GPUs with `torchrun --nproc_per_node=N dayNN/code/train.py --preset gpu`: every process
trains (DistributedDataParallel splits each batch), then rank 0 alone samples, scores and writes the results.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist

from common.config import RunArgs, UserError, to_dict, to_yaml
from common.leaderboard import refresh_leaderboard
from common.syllabus import refresh_row
from common.tracking import NOT_TRACKED, Tracker, open_tracker

# What a run writes, not what it runs: earlier days' fresh results and the README's syllabus row and leaderboard
# do not make the code "dirty".
OUTPUTS = (":(top,exclude,glob)day*/results/**", ":(top,exclude,glob)**/*.md")


def git_commit() -> str:
    """The commit the code ran at, '-dirty' when tracked files other than results and Markdown had changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent,
                              timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ":/", *OUTPUTS)
        return (commit + ("-dirty" if changed else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class Run:
    """Where a run writes and what it records about itself."""
    out: Path
    device: torch.device
    preset: str
    dataset: str
    resume: bool = False
    train_seconds: float = 0.0     # filled in by fit(), summed over resumes
    commit: str = field(default_factory=lambda: git_commit())  # the code as the run starts, before it writes results
    tracker: Tracker = field(default=NOT_TRACKED, repr=False)  # --track: W&B or TensorBoard (common.tracking)

    @classmethod
    def from_args(cls, args: RunArgs, dataset: str) -> Run:
        """The run the command line describes. Its main process writes OUT/config.yaml at once (after the
        commit is read: results are tracked files), so even a run killed early says how to reproduce it."""
        run = cls(args.out, pick_device(args.device), args.preset, dataset, args.resume)
        if rank_world()[0] == 0:
            run.out.mkdir(parents=True, exist_ok=True)
            (run.out / "config.yaml").write_text(to_yaml(args.config, args.preset))
            run.tracker = open_tracker(args.track, run.out, {"preset": args.preset, "dataset": dataset,
                                                             "commit": run.commit, **to_dict(args.config)})
        return run

    @property
    def is_main(self) -> bool:
        """True in the process that samples, scores and writes: the only one, or rank 0 under torchrun."""
        return rank_world()[0] == 0

    def part(self, name: str) -> Run:
        """The run of one of the several models a day trains, in OUT/name (own checkpoint.pt, train_log.csv).

        With --resume, a part with a checkpoint continues from it (a finished one, at step == steps, trains
        no further) and a part without one starts afresh: a run killed while training its k-th model keeps
        the first k - 1, continues the k-th and trains the rest. When no part has a checkpoint at all, the
        part keeps --resume, so that fit() stops with the one line of a missing checkpoint.
        """
        out = self.out / name
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every process looks before rank 0 writes this part's (or the last one's) checkpoint
        started = (out / "checkpoint.pt").is_file() or not any(self.out.glob("*/checkpoint.pt"))
        return replace(self, out=out, resume=self.resume and started)


# --- an earlier day's model --------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def earlier_checkpoint(day: int, results: str, run: Run, device: str, data_dir: str | None,
                       extra: tuple[str, ...] = (), file: str = "checkpoint.pt", by: str = "this day") -> Path:
    """The checkpoint `file` of day `day`'s run in ROOT/`results` ("": a run of our own in OUT/dayNN); when it
    is missing, run that day's train.py once (a subprocess, same preset, `extra` options) to make it. With
    --resume, a run of our own that a kill left unfinished is finished with that day's --resume."""
    folder = ROOT / results if results else run.out / f"day{day:02d}"
    path = folder / file
    unfinished = False
    if run.resume and not results and path.is_file():
        from common.checkpoint import load_checkpoint  # here: checkpoint builds on nets, which run does not need

        ckpt = load_checkpoint(path)
        unfinished = ckpt["step"] < ckpt["config"]["steps"]
    if not path.is_file() or unfinished:
        print(f"{'an unfinished' if unfinished else 'no'} day {day} checkpoint at {path}: running day {day}'s "
              f"train.py --preset {run.preset}{' --resume' if unfinished else ''} to make it")
        script = ROOT / f"day{day:02d}" / "code" / "train.py"
        cmd = [sys.executable, str(script), "--preset", run.preset, "--out", str(folder), "--device", device,
               *(["--data-dir", data_dir] if data_dir else []), *extra, *(["--resume"] if unfinished else [])]
        env = {**os.environ, "WORLD_SIZE": "1"}  # one process of its own, even when we run under torchrun
        if subprocess.run(cmd, cwd=ROOT, env=env).returncode:
            raise UserError(f"day {day}'s train.py failed (its output is above); fix that run, then rerun {by}")
    return path


# --- processes and devices ------------------------------------------------------------------------------

def rank_world() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_device(name: str) -> torch.device:
    """This process's device for --device `name`: 'auto' is cuda when available, else cpu.

    Launched by torchrun (WORLD_SIZE > 1), the process first joins the process group (NCCL for GPUs,
    gloo for CPUs) and takes the GPU of its LOCAL_RANK. Asking for an absent GPU is a user error.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if name == "cuda" else "gloo")
        if name == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if dist.is_available() and dist.is_initialized() and name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


# --- what a run reports ---------------------------------------------------------------------------------

def write_metrics(out: Path, metrics: dict, cfg, run: Run, wall_s: float) -> dict:
    """Write OUT/metrics.json: the numbers plus what produced them (preset, device, data, commit)."""
    record = {"preset": run.preset, "device": str(run.device), "device_name": device_name(run.device),
              "world_size": rank_world()[1],  # processes that trained (torchrun); rank 0 alone wrote this
              "dataset": run.dataset, "wall_time_s": round(wall_s, 1), "commit": run.commit,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "config": to_dict(cfg), **metrics}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    run.tracker.images(None, out)                                    # the figures, if the run is tracked
    run.tracker.summary({k: v for k, v in record.items() if k != "config"})
    run.tracker.close()
    refresh_row(out)  # a run into its day's own results/ refreshes that row of the root README's table
    refresh_leaderboard(out)  # ... and the README's leaderboard, where that day's settings may now rank elsewhere
    return record
