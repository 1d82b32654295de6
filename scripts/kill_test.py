"""Kill a day's training at random moments, resume it each time, and compare the end with an uninterrupted run.

    python scripts/kill_test.py --day 6 --kills 3 --json bench/results/kill_test_day06.json
    python scripts/kill_test.py --day 8 --kills 2 --steps=150           # --key=value: the day's own overrides

1. The reference: `python dayNN/code/train.py --preset smoke --device cpu --out WORK/reference` with the
   day's overrides (DEFAULTS: more steps than the smoke preset, so that training lasts long enough to be hit).
   Its checkpoints give each model's steps, training seconds and logging interval.
2. The killed run: the same command into WORK/killed, SIGKILLed at `--kills` random moments of its training,
   relaunched with --resume after each (afresh if it had no checkpoint yet); a last --resume runs it to the
   end. The moments are drawn uniformly over the reference's training time, each as a model and a step, and
   a kill lands when that model's train_log.csv logs the step, plus a random part of one logging interval:
   steps, not seconds, so that a relaunch running faster or slower than the reference is still hit where aimed.
   A moment that a relaunch has already run past (it redid the steps after its checkpoint) is skipped.
3. The comparison, for every model the day trains (every checkpoint.pt under OUT): the raw and EMA state
   dicts, bit for bit (else the largest absolute difference), and train_log.csv; and metrics.json, leaving
   out what is timed or dated.

The report (--json) records each kill (the model and step aimed at, the step of every model's checkpoint
when it landed), the comparison and the machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from common.checkpoint import load_checkpoint
from common.config import UserError, cli
from common.run import git_commit

ROOT = Path(__file__).resolve().parents[1]
# overrides that make each day's smoke run train for about 20-40 s on 2 idle cores, with checkpoints often
# enough to be resumed from and not on the logging grid (so the log row spanning a resume is tested too)
DEFAULTS = {2: ["--steps=120", "--ckpt_every=7", "--log_every=4"],
            6: ["--steps=240", "--ckpt_every=25", "--log_every=10", "--sample_every=0"],
            8: ["--steps=150", "--ckpt_every=20", "--log_every=8"]}
TIMED = ("second", "wall", "date", "per_s", "commit", "elapsed")   # metrics.json keys that differ between runs


def command(day: int, out: Path, overrides: list[str], resume: bool = False) -> list[str]:
    return [sys.executable, str(ROOT / f"day{day:02d}" / "code" / "train.py"), "--preset", "smoke",
            "--device", "cpu", "--out", str(out), *overrides, *(["--resume"] if resume else [])]


def launch(cmd: list[str], log: Path, kill_when: Callable[[float], bool] | None = None) -> tuple[bool, float]:
    """Run `cmd` (output to `log`); SIGKILL it and its children as soon as kill_when(launch time) is true, unless
    it ended first. Returns (killed, seconds it ran). A run that fails on its own is an error."""
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "TQDM_DISABLE": "1"})
        while proc.poll() is None:
            if kill_when and kill_when(start):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True, time.time() - start
            time.sleep(0.02)
    if proc.returncode:
        raise UserError(f"{' '.join(cmd[1:])} failed (exit {proc.returncode}); its output is in {log}")
    return False, time.time() - start


def logged_step(log: Path, since: float) -> int:
    """The last step in a train_log.csv written after `since` (0 if none): fit() rewrites a resumed model's log
    without the rows after its checkpoint, so an older file still holds steps the relaunch has not reached."""
    try:
        if log.stat().st_mtime < since:
            return 0
        return int(log.read_text().splitlines()[-1].split(",")[0])
    except (FileNotFoundError, IndexError, ValueError):   # not written yet, or caught mid-write
        return 0


def kill_at(log: Path, step: int, extra: float) -> Callable[[float], bool]:
    """kill_when for launch(): true `extra` seconds after `log` first shows `step` reached."""
    reached = []

    def now(start: float) -> bool:
        if not reached and logged_step(log, start) >= step:
            reached.append(time.time())
        return bool(reached) and time.time() - reached[0] >= extra
    return now


def checkpoints(out: Path) -> dict[str, dict]:
    """{model folder relative to OUT ('.' for a day with one model): the step, training seconds and logging
    interval of its checkpoint.pt}, in the order they were last written (of a finished run: as they trained)."""
    paths = sorted(out.rglob("checkpoint.pt"), key=lambda p: p.stat().st_mtime_ns)
    found = {str(p.parent.relative_to(out)): load_checkpoint(p) for p in paths}
    return {name: {"step": c["step"], "elapsed_s": c["elapsed_s"], "log_every": c["config"]["log_every"]}
            for name, c in found.items()}


def plan_kills(rng: random.Random, reference: dict[str, dict], n: int) -> list[tuple[str, int, float]]:
    """n moments drawn uniformly over the whole training time (the reference's seconds per step), in training
    order (`reference` lists the models as they trained): (model, step its log shows, seconds after that)."""
    steps = [(name, s) for name, ref in reference.items() for s in range(1, ref["step"] + 1)]
    per_step = {name: ref["elapsed_s"] / ref["step"] for name, ref in reference.items()}
    plan = []
    for i in sorted(rng.choices(range(len(steps)), weights=[per_step[name] for name, _ in steps], k=n)):
        name, step = steps[i]
        every = reference[name]["log_every"]
        logged = min(-(-step // every) * every, reference[name]["step"])   # the first row at or after `step`
        plan.append((name, logged, rng.uniform(0, per_step[name] * every)))
    return plan


def training_left(reference: dict[str, dict], on_disk: dict[str, dict]) -> float:
    """Seconds of training a relaunch still has to do: for each model, the reference's training seconds times
    the share of its steps that the checkpoint on disk has not reached (work since that checkpoint is redone)."""
    return sum(ref["elapsed_s"] * (1 - on_disk.get(name, {"step": 0})["step"] / ref["step"])
               for name, ref in reference.items())


def compare_weights(reference: Path, other: Path) -> dict[str, dict]:
    """For every model of the reference: are the raw and EMA weights of `other` bit-identical (else the largest
    absolute difference), and is its train_log.csv the same?"""
    report = {}
    for path in sorted(reference.rglob("checkpoint.pt")):
        name = str(path.parent.relative_to(reference))
        a, b = load_checkpoint(path), load_checkpoint(other / name / "checkpoint.pt")
        diff = max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0
                   for key in ("model", "ema") for x, y in zip(a[key].values(), b[key].values()))
        same = all(torch.equal(x, y) for key in ("model", "ema") for x, y in zip(a[key].values(), b[key].values()))
        logs = [folder / name / "train_log.csv" for folder in (reference, other)]
        report[name] = {"step": b["step"], "step_reference": a["step"], "identical": same and a["step"] == b["step"],
                        "max_abs_diff": diff, "train_log_identical": logs[0].read_text() == logs[1].read_text()}
    return report


def untimed(value):
    """metrics.json without the entries that are timed or dated (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not any(word in k for word in TIMED)}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def metrics_differences(reference: Path, other: Path) -> list[str]:
    """Top-level metrics.json keys whose untimed values differ between the two runs."""
    a, b = (untimed(json.loads((folder / "metrics.json").read_text())) for folder in (reference, other))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def kill_and_resume(day: int, kills: int, overrides: list[str], out: Path, logs: Path, reference: dict,
                    rng: random.Random) -> tuple[list[dict], float]:
    """Launch the run into `out`, SIGKILL it at `kills` random moments of its training (plan_kills), each time
    relaunching it with --resume (or afresh when it had no checkpoint yet), then run it to the end. Returns
    (the kills, seconds spent). `reference`: the uninterrupted run's checkpoints, in training order."""
    events, spent, plan = [], 0.0, plan_kills(rng, reference, kills)
    for attempt in range(kills + 1):
        on_disk = checkpoints(out) if out.exists() else {}
        left = training_left(reference, on_disk)
        plan = [t for t in plan if on_disk.get(t[0], {"step": 0})["step"] < t[1]]   # not yet run past
        target = plan.pop(0) if plan else None
        when = kill_at(out / target[0] / "train_log.csv", target[1], target[2]) if target else None
        hit, seconds = launch(command(day, out, overrides, resume=bool(on_disk)), logs / f"attempt{attempt}.txt",
                              when)
        spent += seconds
        if not hit:  # the last relaunch, or one that finished before its kill
            if target:
                print(f"  attempt {attempt}: ran to the end before the kill", flush=True)
            break
        at = {name: c["step"] for name, c in checkpoints(out).items()}
        events.append({"attempt": attempt, "model": target[0], "logged_step": target[1],
                       "seconds_after_it": round(target[2], 2), "training_left_s": round(left, 1),
                       "checkpoints_at_kill": at})
        print(f"  attempt {attempt}: killed {target[2]:.2f} s after {target[0]} logged step {target[1]}; "
              f"checkpoints {at}", flush=True)
    return events, spent


def kill_test(day: int, kills: int, overrides: list[str], work: Path, seed: int) -> dict:
    """The uninterrupted reference, the killed and resumed run, and their comparison (the report)."""
    ref, killed, logs = work / "reference", work / "killed", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _, ref_s = launch(command(day, ref, overrides), logs / "reference.txt")
    reference = checkpoints(ref)
    train_s = sum(c["elapsed_s"] for c in reference.values())
    print(f"day {day}: reference {ref_s:.0f} s (training {train_s:.0f} s), models "
          f"{ {name: c['step'] for name, c in reference.items()} }", flush=True)
    events, spent = kill_and_resume(day, kills, overrides, killed, logs, reference, random.Random(seed))
    models = compare_weights(ref, killed)
    shown = f"python day{day:02d}/code/train.py " + " ".join(command(day, Path("OUT"), overrides)[2:])
    return {"day": day, "command": shown, "kills": len(events), "kills_requested": kills, "seed": seed,
            "events": events, "reference_s": round(ref_s, 1), "reference_training_s": round(train_s, 1),
            "killed_and_resumed_s": round(spent, 1), "models": models,
            "all_identical": all(m["identical"] and m["train_log_identical"] for m in models.values()),
            "max_abs_diff": max(m["max_abs_diff"] for m in models.values()),
            "metrics_keys_differing": metrics_differences(ref, killed), "commit": git_commit(),
            "torch": torch.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--day", type=int, required=True, choices=(2, 3, 5, 6, 8),
                        help="the day whose smoke run is killed (2, 3, 5, 6 or 8: the days that train)")
    parser.add_argument("--kills", type=int, default=3, help="how many times the run is killed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args, overrides = parser.parse_known_args(argv)
    if args.kills < 1:
        raise UserError(f"--kills={args.kills}: kill at least once")
    if bad := [o for o in overrides if not (o.startswith("--") and "=" in o)]:
        raise UserError(f"{' '.join(bad)}: the day's overrides are written --key=value")
    work = args.work or Path(tempfile.mkdtemp(prefix=f"kill_test_day{args.day:02d}_"))
    for folder in ("reference", "killed"):
        shutil.rmtree(work / folder, ignore_errors=True)
    report = kill_test(args.day, args.kills, DEFAULTS.get(args.day, []) + overrides, work, args.seed)
    verdict = "bit-identical" if report["all_identical"] else f"max abs difference {report['max_abs_diff']:.3g}"
    print(f"day {args.day}: {report['kills']} kills; final weights and logs {verdict}; "
          f"metrics.json keys differing: {report['metrics_keys_differing'] or 'none'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    cli(main)
