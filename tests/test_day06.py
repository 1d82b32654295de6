"""Day 6: the smoke run end to end, and the command line's failure modes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import HANG_TIMEOUT, load_day

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "day06" / "code" / "train.py"


def run(*args, check=True):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG_TIMEOUT, check=check)


def test_smoke_run_trains_samples_and_scores(day6_smoke):
    out = day6_smoke  # the session's day 6 smoke run (conftest), which later days' tests also load
    m = json.loads((out / "metrics.json").read_text())
    assert m["preset"] == "smoke" and m["dataset"].startswith("mnist")
    for key in ("fid", "fid_floor", "fid_ci95", "confident_frac", "class_entropy", "nn_distance_samples_median",
                "train_images_per_s", "sample_seconds_per_image", "loss_per_t", "criteria"):
        assert key in m, key
    assert np.isfinite(m["fid"]) and m["fid_ci95"][0] <= m["fid"] <= m["fid_ci95"][1]
    arr = np.load(out / "samples.npz")["arr_0"]
    assert arr.shape == (m["config"]["n_samples"], 28, 28, 1) and arr.dtype == np.uint8
    for name in ("samples.png", "sampling.gif", "loss.png", "loss_per_t.png", "nearest_neighbours.png"):
        assert (out / name).stat().st_size < 1_000_000, name
    # a finished run resumes to the same end without training again
    again = run("--preset", "smoke", "--out", str(out), "--keep_every=10", "--resume")  # its settings (conftest)
    assert json.loads((out / "metrics.json").read_text())["train_seconds"] >= m["train_seconds"]
    assert again.returncode == 0


def test_command_line_mistakes_are_one_line_errors(tmp_path):
    for args, message in [(["--stepz=3"], "unknown config key 'stepz'"),
                          (["--steps=lots"], "expected int"),
                          (["--dataset=imagenet", "--preset", "smoke"], "--dataset=imagenet: choose one of"),
                          (["--resume", "--out", str(tmp_path / "none")], "no checkpoint")]:
        out = run(*args, check=False)
        assert out.returncode == 2, args
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and message in last and "Traceback" not in out.stderr, out.stderr


ABLATION = ROOT / "day06" / "code" / "ablation.py"


def test_ablation_runs_a_variant_through_train_py_and_tabulates_it(tmp_path):
    # one variant of 10 steps: what it checks (the variant's overrides reach train.py, its row is that run's
    # metrics) needs no second one and no longer training; BASE's wider U-Net makes each step cost ~1 s here
    subprocess.run([sys.executable, str(ABLATION), "--preset", "smoke", "--only", "min_snr", "--jobs", "1",
                    "--steps", "10", "--out", str(tmp_path)],
                   cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT, check=True)
    rows = {r["variant"]: r for r in json.loads((tmp_path / "ablation.json").read_text())}
    assert set(rows) == {"min_snr"} and not rows["min_snr"].get("failed")
    trained = json.loads((tmp_path / "min_snr" / "metrics.json").read_text())
    assert trained["config"]["min_snr_gamma"] == 5 and trained["preset"] == "smoke"
    assert rows["min_snr"]["fid"] == trained["fid"]
    table = (tmp_path / "ablation.md").read_text()
    assert table.count("\n") == 3 and "| min_snr | Min-SNR-5 loss weights |" in table


def test_the_ablation_table_puts_the_best_fid_first_and_failures_last():
    ablation = load_day(6, "ablation")
    row = {"change": "c", "steps": 1, "images_seen": 1, "fid_ci95": [0, 1], "confident_frac": 0.5,
           "class_entropy": 2.0, "precision": 0.5, "recall": 0.5}
    lines = ablation.table([{**row, "variant": "worse", "fid": 0.9}, {"variant": "broken", "failed": True},
                            {**row, "variant": "better", "fid": 0.2}]).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| better", "| worse", "| broken"]
    assert lines[-1] == "| broken | failed | | | | | | | |"


def test_ablation_names_unknown_variants_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(ABLATION), "--only", "preset,bigger", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: unknown variant(s) bigger")
