"""Tracking runs (common.tracking): what TensorBoard and W&B (offline) files hold, read back with their own readers."""
import csv
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import HANG_TIMEOUT
from PIL import Image

from common.config import cli, parse_args
from common.tracking import NOT_TRACKED, numbers, open_tracker
from common.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"preset": "smoke", "dataset": "mnist", "commit": "abc", "lr": 0.001, "unet": {"channels": 8}}


def a_run(tracker, out: Path):
    """What a day with a sub-run does: training scalars, a progress grid, a sub-run restarting at step 5, the end."""
    tracker.scalars(5, {"loss": 0.5, "grad_norm": 2.0, "lr": 1e-3}, out)
    (out / "progress").mkdir()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(out / "progress" / "step_000010.png")
    tracker.images(10, out)
    tracker.scalars(10, {"loss": 0.25, "grad_norm": 1.0, "lr": 5e-4}, out)
    tracker.scalars(5, {"loss": 0.75, "grad_norm": 3.0, "lr": 1e-3}, out / "cosine")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / "samples.png")
    tracker.images(None, out)                                   # progress/ is logged already: only samples.png
    tracker.summary({"fid": 0.2, "fid_ci95": [0.1, 0.3], "criteria": {"fid<=3*floor": True}})
    tracker.close()


def test_numbers_keeps_numeric_leaves_and_table_rows_not_vectors():
    metrics = {"fid": 0.2, "fid_ci95": [0.1, 0.3], "name": "x", "ok": True,
               "loss_per_t": {"0.05": 1.5}, "summary": [{"schedule": "linear", "fid": 1.0}]}
    assert numbers(metrics) == {"fid": 0.2, "ok": True, "loss_per_t/0.05": 1.5, "summary/0/fid": 1.0}


# --- TensorBoard ------------------------------------------------------------------------------------------

def read_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in events.Scalars(tag)}


def test_tensorboard_event_files_hold_the_scalars_images_summary_and_config(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[track]')")
    a_run(open_tracker("tensorboard", tmp_path, CONFIG), tmp_path)
    main, sub = read_events(tmp_path / "tensorboard"), read_events(tmp_path / "tensorboard" / "cosine")
    assert scalars(main, "train/loss") == {5: 0.5, 10: 0.25}
    assert scalars(main, "train/lr") == pytest.approx({5: 1e-3, 10: 5e-4})
    assert scalars(sub, "train/loss") == {5: 0.75}               # a sub-run is a TensorBoard run of its own
    assert [(e.step, e.width) for e in main.Images("train/progress")] == [(10, 8)]
    assert [e.step for e in main.Images("final/samples")] == [10]  # final figures sit at the last step
    assert scalars(main, "final/fid") == pytest.approx({10: 0.2})
    assert scalars(main, "final/criteria/fid<=3*floor") == {10: 1.0}
    assert not [tag for tag in main.Tags()["scalars"] if "ci95" in tag]
    text = main.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.001" in text and "channels: 8" in text


def test_tensorboard_resumed_run_hides_the_killed_launchs_later_events(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[track]')")
    killed = open_tracker("tensorboard", tmp_path, CONFIG)
    for step in (5, 10, 15):              # logged past its last checkpoint (step 5), then killed
        killed.scalars(step, {"loss": 1.0}, tmp_path)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "grid.png")
    killed.images(15, tmp_path)
    killed.close()
    resumed = open_tracker("tensorboard", tmp_path, CONFIG)
    for step in (10, 15, 20):
        resumed.scalars(step, {"loss": 2.0}, tmp_path)
    resumed.close()
    events = read_events(tmp_path / "tensorboard")
    assert scalars(events, "train/loss") == {5: 1.0, 10: 2.0, 15: 2.0, 20: 2.0}
    assert events.Images("train/grid") == []   # hidden too, though the resumed launch logs no image


# --- Weights & Biases, offline ---------------------------------------------------------------------------

@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B with no network and nothing written outside tmp_path."""
    pytest.importorskip("wandb", reason="wandb is not installed (pip install -e '.[track]')")
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true", "WANDB_INIT_TIMEOUT": "120",
                       "WANDB_DIR": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
                       "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_PROJECT", "WANDB_NAME", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)


def wandb_records(path: Path):
    """The records of a W&B transaction log (.wandb): LevelDB's log format, 32 KiB blocks of 7-byte-headed chunks."""
    from wandb.proto import wandb_internal_pb2
    data, pos, parts = path.read_bytes(), 7, b""                 # 7 bytes: ':W&B', a magic number, the version
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:                               # a block's tail too short for a header: padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):                          # still being written
            return
        parts, pos = parts + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):                                        # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def finished_records(log: Path, wait_s: float = 60) -> list:
    """The log's records once it holds the run's exit: wandb's service writes it just after finish() returns."""
    deadline = time.time() + wait_s
    while True:
        records = list(wandb_records(log))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.time() < deadline, f"{log} held no exit record after {wait_s} s"
        time.sleep(0.2)


def items(entries) -> dict:
    return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}


def test_wandb_offline_run_records_the_config_history_and_summary(tmp_path, wandb_offline):
    a_run(open_tracker("wandb", tmp_path, CONFIG), tmp_path)
    [log] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = finished_records(log)
    config = next(items(r.run.config.update) for r in records if r.WhichOneof("record_type") == "run")
    assert config["lr"] == 0.001 and config["unet"] == {"channels": 8} and config["commit"] == "abc"
    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["train/step"], h["train/loss"]) for h in history if "train/loss" in h] == [(5, 0.5), (10, 0.25)]
    sub = [(h["cosine/train/step"], h["cosine/train/loss"]) for h in history if "cosine/train/loss" in h]
    assert sub == [(5, 0.75)]                                     # kept although its step went back to 5
    assert [h["train/step"] for h in history if any(k.startswith("train/progress") for k in h)] == [10]
    assert any(k.startswith("final/samples") for h in history for k in h)
    steps = {r.metric.glob_name: r.metric.step_metric for r in records if r.WhichOneof("record_type") == "metric"}
    assert steps["train/*"] == "train/step" and steps["cosine/train/*"] == "cosine/train/step"
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(items(r.summary.update))
    assert summary["final/fid"] == 0.2 and summary["final/criteria/fid<=3*floor"] is True


# --- off by default; a missing package is one line ---------------------------------------------------------

@pytest.mark.parametrize("kind, package", [("wandb", "wandb"), ("tensorboard", "tensorboard")])
def test_a_missing_package_is_one_line_and_exit_2(kind, package, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)              # `import package` now fails as if not installed
    with pytest.raises(SystemExit) as stop:
        cli(lambda argv: open_tracker(kind, tmp_path, CONFIG))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --track {kind} needs the {package} package") and f"pip install {package}" in err


def test_untracked_by_default():
    assert parse_args({"cpu": TrainConfig()}, Path("/tmp"), "", [])[1].track == "none"
    assert parse_args({"cpu": TrainConfig()}, Path("/tmp"), "", ["--track", "wandb"])[1].track == "wandb"
    assert open_tracker("none", Path("/tmp"), CONFIG) is NOT_TRACKED


def test_day6_smoke_run_tracked_in_tensorboard_end_to_end(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[track]')")
    subprocess.run([sys.executable, str(ROOT / "day06" / "code" / "train.py"), "--preset", "smoke", "--out",
                    str(tmp_path), "--track", "tensorboard", "--steps=10", "--warmup=2", "--sample_every=10",
                    "--ckpt_every=10", "--n_samples=16", "--sample_steps=4"],
                   cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT, check=True)
    events = read_events(tmp_path / "tensorboard")
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("loss", "grad_norm", "lr"):   # the very values train_log.csv got, at its steps
        assert scalars(events, f"train/{key}") == pytest.approx({int(r["step"]): float(r[key]) for r in rows})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert scalars(events, "final/fid") == pytest.approx({10: metrics["fid"]})
    assert [e.step for e in events.Images("train/progress")] == [10]
    assert {"final/samples", "final/loss"} <= set(events.Tags()["images"])
