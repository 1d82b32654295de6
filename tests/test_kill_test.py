"""scripts/kill_test.py: its pieces, and the whole of it on a two-model toy day killed for real (SIGKILL)."""
import random
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, load_script

from common.config import UserError
from common.loop import fit
from common.nets import MLP, MLPConfig
from common.run import Run
from common.training import TrainConfig

kill_test = load_script(ROOT / "scripts" / "kill_test.py")


def test_launch_kills_a_command_once_its_log_shows_the_step(tmp_path):
    log = tmp_path / "model" / "train_log.csv"
    log.parent.mkdir()
    log.write_text("step,loss\n50,0.1\n")                  # left by a killed launch: older than this one
    training = (f"import time; time.sleep(1); open({str(log)!r}, 'w').write('step,loss\\n10,0.5\\n'); "
                "time.sleep(1); open(" + repr(str(log)) + ", 'a').write('20,0.4\\n'); time.sleep(3600)")
    killed, seconds = kill_test.launch([sys.executable, "-c", training], tmp_path / "a.txt",
                                       kill_test.kill_at(log, step=20, extra=0.5))
    assert killed and seconds >= 2.5 and log.read_text().endswith("20,0.4\n")
    killed, _ = kill_test.launch([sys.executable, "-c", "pass"], tmp_path / "b.txt", kill_test.kill_at(log, 99, 0))
    assert not killed
    with pytest.raises(UserError, match="exit 3"):
        kill_test.launch([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "c.txt")


def test_kills_are_spread_over_the_whole_training_in_its_order():
    reference = {"b": {"step": 50, "elapsed_s": 30.0, "log_every": 8},       # b trained first, a after it
                 "a": {"step": 100, "elapsed_s": 10.0, "log_every": 10}}
    assert kill_test.training_left(reference, {}) == 40.0
    assert kill_test.training_left(reference, {"a": {"step": 50}, "b": {"step": 50}}) == pytest.approx(5.0)
    plan = kill_test.plan_kills(random.Random(0), reference, 400)
    assert len(plan) == 400 and plan == sorted(plan, key=lambda t: (t[0] == "a", t[1]))   # in training order
    assert all(step % 8 == 0 or step == 50 for name, step, _ in plan if name == "b")     # rows of b's log
    assert all(step % 10 == 0 for name, step, _ in plan if name == "a")
    assert all(0 <= extra <= reference[name]["elapsed_s"] / reference[name]["step"] * reference[name]["log_every"]
               for name, _, extra in plan)                                          # within one logging interval
    share_b = sum(name == "b" for name, _, _ in plan) / len(plan)
    assert 0.65 < share_b < 0.85                                                    # b: 30 of the 40 seconds


def one_model(out, cfg):
    def loss(model, x0, y, generator):
        return model(x0, torch.rand(len(x0), generator=generator)).pow(2).mean()
    torch.manual_seed(0)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    fit(MLP(MLPConfig(hidden=8, layers=1)), loss, x, None, cfg, Run(out, torch.device("cpu"), "smoke", "toy"))


def test_compare_weights_finds_the_largest_difference(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, warmup=1, log_every=2, ckpt_every=3, sample_every=0, bf16=False)
    for folder in ("a/m", "b/m"):
        one_model(tmp_path / folder, cfg)
    same = kill_test.compare_weights(tmp_path / "a", tmp_path / "b")
    assert same == {"m": {"step": 3, "step_reference": 3, "identical": True, "max_abs_diff": 0.0,
                          "train_log_identical": True}}
    ckpt = torch.load(tmp_path / "b/m/checkpoint.pt", weights_only=True)
    next(iter(ckpt["ema"].values())).view(-1)[0] += 0.25
    torch.save(ckpt, tmp_path / "b/m/checkpoint.pt")
    changed = kill_test.compare_weights(tmp_path / "a", tmp_path / "b")["m"]
    assert not changed["identical"] and changed["max_abs_diff"] == pytest.approx(0.25)


def test_timed_entries_are_left_out_of_the_metrics_comparison():
    metrics = {"fid": 1.0, "train_seconds": 3, "summary": [{"fid": 2.0, "sample_seconds": 4}], "date": "x"}
    assert kill_test.untimed(metrics) == {"fid": 1.0, "summary": [{"fid": 2.0}]}


TOY_DAY = '''
"""A toy day for the kill test: two MLPs trained one after the other, as a multi-model day does."""
from dataclasses import dataclass
from pathlib import Path

import torch

from common.config import cli, parse_args
from common.loop import fit
from common.nets import MLP, MLPConfig
from common.run import Run, write_metrics
from common.training import TrainConfig


@dataclass
class Config(TrainConfig):
    hidden: int = 64


PRESETS = {"smoke": Config(steps=400, batch_size=64, warmup=10, log_every=5, ckpt_every=7, sample_every=0,
                           bf16=False)}


def loss(model, x0, y, generator):
    t = torch.rand(len(x0), generator=generator)
    return (model(x0 + t[:, None] * torch.randn(x0.shape, generator=generator), t) - x0).pow(2).mean()


def main(argv=None):
    cfg, args = parse_args(PRESETS, Path("unused"), "toy", argv)
    run = Run.from_args(args, "toy")
    x = torch.randn(1024, 2, generator=torch.Generator().manual_seed(0))
    for name in ("first", "second"):
        torch.manual_seed(0)
        _, ema = fit(MLP(MLPConfig(hidden=cfg.hidden)), loss, x, None, cfg, run.part(name))
    if run.is_main:
        write_metrics(run.out, {"ema_sum": sum(p.sum().item() for p in ema.parameters())}, cfg, run, 0.0)


if __name__ == "__main__":
    cli(main)
'''


def test_the_toy_day_killed_twice_ends_bit_identical(tmp_path, monkeypatch):
    script = tmp_path / "toy_day.py"
    script.write_text(textwrap.dedent(TOY_DAY))

    def command(day, out, overrides, resume=False):
        return [sys.executable, str(script), "--preset", "smoke", "--device", "cpu", "--out", str(out),
                *overrides, *(["--resume"] if resume else [])]
    monkeypatch.setattr(kill_test, "command", command)
    report = kill_test.kill_test(0, kills=2, overrides=[], work=tmp_path / "work", seed=1)
    assert set(report["models"]) == {"first", "second"}
    assert report["kills"] == len(report["events"]) <= 2   # a kill planned after the end does not happen
    assert report["all_identical"] and report["max_abs_diff"] == 0.0, report
    assert report["metrics_keys_differing"] == []
