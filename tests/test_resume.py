"""Resuming a day that trains several models (Run.part): killed inside any phase, `--resume` keeps the finished
models, continues the interrupted one and trains the rest, ending on the weights and logs of an uninterrupted run."""
import shutil
import subprocess

import pytest
import torch
from conftest import load_day

from common.checkpoint import load_checkpoint
from common.config import UserError
from common.diffusion import diffusion_loss
from common.loop import fit
from common.nets import MLP, MLPConfig
from common.paths import DiscreteVP
from common.run import Run
from common.training import TrainConfig

PARTS = ("a", "b", "c")
SCHEDULE = DiscreteVP.named("cosine", 100)
X = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
# checkpoints at steps 3, 6, 8 and rows at 4, 8: a kill after step 3 or 6 leaves a logging interval half done
CFG = TrainConfig(steps=8, batch_size=16, lr=1e-2, warmup=2, ckpt_every=3, log_every=4, sample_every=1, bf16=False,
                  ema_decay=0.9, averages=("ema-0.8", "power-0.1"))       # further averages resume too


class Killed(Exception):
    """Stands for a SIGKILL: raised by the on_sample hook after a given step of a given part."""


def three_models(out, resume=False, kill_at=None) -> int:
    """A day in miniature: three models trained one after the other, each in its own part. Returns the number
    of training steps it ran; raises Killed after step kill_at[1] of part kill_at[0]."""
    run, steps = Run(out, torch.device("cpu"), "smoke", "toy", resume), []

    def loss_fn(model, x0, y, generator):
        steps.append(1)
        return diffusion_loss(model, x0, SCHEDULE, "eps", generator)[0].mean()
    for name in PARTS:
        def hook(model, step, name=name):
            if (name, step) == kill_at:
                raise Killed
        torch.manual_seed(0)
        fit(MLP(MLPConfig(hidden=16, layers=2)), loss_fn, X, None, CFG, run.part(name), on_sample=hook)
    return len(steps)


def assert_same_run(reference, resumed, parts):
    """Same raw, EMA and further averaged weights, same step and the same train_log.csv, part by part."""
    for name in parts:
        a, b = (load_checkpoint(folder / name / "checkpoint.pt") for folder in (reference, resumed))
        assert a["step"] == b["step"] and a["average_updates"] == b["average_updates"], name
        assert set(a["averages"]) == set(b["averages"]), name
        pairs = {"model": (a["model"], b["model"]), "ema": (a["ema"], b["ema"]),
                 **{spec: (a["averages"][spec], b["averages"][spec]) for spec in a["averages"]}}
        for key, (first, second) in pairs.items():
            for (k, v), w in zip(first.items(), second.values()):
                assert torch.equal(v, w), (name, key, k)
        assert (reference / name / "train_log.csv").read_text() == (resumed / name / "train_log.csv").read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert three_models(out) == 3 * CFG.steps
    return out


# (part, step) the kill follows -> training steps the resumed run still has to do
KILLS = {("a", 5): 5 + 8 + 8,   # inside the first model, after its checkpoint at step 3
         ("b", 2): 8 + 8,       # the first model finished, the second not yet checkpointed: it starts afresh
         ("b", 7): 2 + 8,       # inside the second model, after its checkpoint at step 6
         ("c", 4): 5}           # inside the last model


@pytest.mark.parametrize("kill_at", list(KILLS), ids=[f"{p}{s}" for p, s in KILLS])
def test_killed_inside_a_phase_resumes_to_the_uninterrupted_run(reference, tmp_path, kill_at):
    with pytest.raises(Killed):
        three_models(tmp_path, kill_at=kill_at)
    assert three_models(tmp_path, resume=True) == KILLS[kill_at]  # finished models train no step again
    assert_same_run(reference, tmp_path, PARTS)
    assert three_models(tmp_path, resume=True) == 0              # a finished run resumes to itself
    assert_same_run(reference, tmp_path, PARTS)


def test_resume_with_no_checkpoint_at_all_names_the_fix(tmp_path):
    with pytest.raises(Killed):
        three_models(tmp_path, kill_at=("a", 2))                 # before the first checkpoint
    with pytest.raises(UserError, match="no checkpoint at .*a/checkpoint.pt.*drop --resume"):
        three_models(tmp_path, resume=True)


# --- the days that train several models, through their main() -------------------------------------------
# main() stops after training when Run.is_main is False (what the other processes do under torchrun), which
# keeps these tests to the training. A kill inside phase k is simulated from a reference run that kept a
# checkpoint at step 3 of every model (--keep_every=3): models before k finished, model k back at step 3
# (with the rows its log had at the kill; a model of fewer steps not started yet), models after k never started.

# day: at least this many models, a sub-folder each
DAYS = {2: 6, 3: 3, 5: 4, 8: 2, 9: 2, 11: 3, 12: 2, 14: 2, 16: 4, 18: 4}
OVERRIDES = {3: ["--sample_every=2"],              # day 3's held-out curve gets a point before the kill, at step 2
             9: ["--classifier.steps=6", "--classifier.keep_every=3"],  # day 9's classifier has its own recipe
             11: ["--ae_train.steps=6", "--ae_train.keep_every=3",      # and day 11's autoencoder and pixel U-Net
                  "--pixel_train.steps=6", "--pixel_train.keep_every=3"],
             12: ["--classifier.steps=6", "--classifier.keep_every=3"],     # day 12's attribute classifier
             16: ["--toy.steps=6", "--toy.keep_every=3", "--toy.toys=moons"]}  # day 16's 2-D flows, one toy


def train_only(monkeypatch, day: int, out, *extra):
    monkeypatch.setattr(Run, "is_main", property(lambda self: False))
    main = load_day(day, "train").main
    main(["--preset", "smoke", "--device", "cpu", "--out", str(out), "--keep_every=3", "--steps=6",
          *OVERRIDES.get(day, []), *extra])


def trained_models(out) -> list[str]:
    """The sub-folders holding a model, in the order they were trained (their final checkpoints' times)."""
    return [p.parent.name for p in sorted(out.glob("*/checkpoint.pt"), key=lambda p: p.stat().st_mtime_ns)]


def kill_inside(reference, out, parts, k: int) -> None:
    """OUT as a kill inside the k-th model's training (after its step-3 checkpoint) would leave it."""
    shutil.copytree(reference, out)
    kept = out / parts[k] / "checkpoint_step000003.pt"
    if kept.is_file():
        shutil.copy(kept, out / parts[k] / "checkpoint.pt")
    for name in parts[k + int(kept.is_file()):]:
        shutil.rmtree(out / name)


@pytest.mark.parametrize("day", list(DAYS))
def test_a_day_killed_inside_each_phase_resumes_to_the_uninterrupted_run(day, tmp_path, monkeypatch, one_thread,
                                                                         request):
    if day == 18:  # day 18 starts from day 16's flow: the session's smoke run of day 16, not one of its own
        monkeypatch.setitem(OVERRIDES, 18, ["--toy.steps=6", "--toy.keep_every=3",
                                            f"--day16_results={request.getfixturevalue('day16_smoke')}"])
    train_only(monkeypatch, day, tmp_path / "reference")
    parts = trained_models(tmp_path / "reference")
    assert len(parts) >= DAYS[day]
    curves = sorted((tmp_path / "reference").glob("*/held_out.json"))  # day 3's held-out ELBO terms per model
    assert bool(curves) == (day == 3)
    for k in range(len(parts)):
        out = tmp_path / f"killed_in_{k}"
        kill_inside(tmp_path / "reference", out, parts, k)
        stamps = {name: (out / name / "checkpoint.pt").stat().st_mtime_ns for name in parts[:k]}
        train_only(monkeypatch, day, out, "--resume")
        assert_same_run(tmp_path / "reference", out, parts)
        assert all(p.read_text() == (out / p.parent.name / p.name).read_text() for p in curves)  # points kept
        assert stamps == {name: (out / name / "checkpoint.pt").stat().st_mtime_ns for name in parts[:k]}  # skipped
    with pytest.raises(UserError, match="no checkpoint"):
        train_only(monkeypatch, day, tmp_path / "empty", "--resume")


def test_day7_finishes_its_own_unfinished_day6_run_on_resume(tmp_path, monkeypatch):
    # day 7 trains through day 6's train.py (a subprocess) into OUT/day06; a kill there leaves it unfinished
    import common.run

    with pytest.raises(Killed):
        three_models(tmp_path / "killed", kill_at=("a", 5))
    shutil.copytree(tmp_path / "killed" / "a", tmp_path / "out" / "day06")      # a checkpoint at step 3 of 8
    runs = [Run(tmp_path / "out", torch.device("cpu"), "smoke", "toy", resume) for resume in (False, True)]
    launched = []
    monkeypatch.setattr(common.run.subprocess, "run", lambda cmd, **kw: launched.append((cmd, kw["env"])) or
                        subprocess.CompletedProcess(cmd, 0))
    for run in runs:
        common.run.earlier_checkpoint(6, "", run, "cpu", None, by="day 7")
    assert len(launched) == 1                                  # without --resume day 7 leaves it (and says so later)
    cmd, env = launched[0]
    assert cmd[-1] == "--resume" and str(tmp_path / "out" / "day06") in cmd and env["WORLD_SIZE"] == "1"
