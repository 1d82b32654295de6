#!/usr/bin/env bash
# GPU check, run on a CUDA machine from the repo root: every implemented day's smoke preset on CUDA, in
# parallel, plus a short run of day 6's `gpu` preset that measures training and sampling speed.
#   bash bench/gpu_smoke.sh      (logs and outputs under /tmp/gpu_smoke)
set -u
out=/tmp/gpu_smoke/logs
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi -L
for code in day*/code/train.py; do
  day=$(dirname "$(dirname "$code")")
  python3 "$code" --preset smoke --device cuda --out "/tmp/gpu_smoke/$day" > "$out/$day.log" 2>&1 &
done
python3 day06/code/train.py --preset gpu --device cuda --steps=500 --warmup=50 --sample_steps=100 \
  --n_samples=1000 --out /tmp/gpu_smoke/day06_gpu > "$out/day06_gpu.log" 2>&1 &
wait
for log in "$out"/*.log; do
  if grep -q "Traceback\|^error:" "$log"; then echo "FAIL $(basename "$log")"; tail -3 "$log"; else echo "ok   $(basename "$log")"; fi
done
python3 - <<'PY'
import json
m = json.load(open("/tmp/gpu_smoke/day06_gpu/metrics.json"))
print(json.dumps({k: m[k] for k in ("device_name", "params", "train_images_per_s", "sample_seconds_per_image",
                                    "fid", "fid_floor", "confident_frac")}, indent=1))
PY
