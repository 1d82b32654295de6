"""A day under torchrun: two processes (gloo, CPU) train together, then rank 0 alone samples, scores and writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import HANG_TIMEOUT

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_train_and_one_writes(tmp_path):
    # day 5 trains four models (Run.part) and prints one summary line at the end; its smoke preset is small
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "day05/code/train.py", "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results in") == 1, done.stdout              # one process wrote the summary
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["preset"] == "smoke"
    for part in ("net_x0", "net_eps", "net_v", "toy_mlp"):                 # every model trained to the end
        assert (tmp_path / part / "checkpoint.pt").is_file()
        rows = (tmp_path / part / "train_log.csv").read_text().splitlines()
        assert len(rows) == len(set(rows)), part                            # no row written twice
