"""Benchmarks: the diffusers U-Net is really built like ours, and both benches run end to end (--quick)."""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

from conftest import HANG_TIMEOUT
from torch import nn

from common.nets import Attention, ResBlock, UNet, UNetConfig, count_params

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def load_throughput_module():
    spec = importlib.util.spec_from_file_location("unet_throughput", BENCH / "unet_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name)
    return module


def count(model: nn.Module, names: tuple[str, ...]) -> int:
    return sum(type(m).__name__ in names for m in model.modules())


def test_matched_diffusers_unet_has_our_layout_and_size():
    """Day 6's starting shape: same residual blocks, attention layers, resolutions; parameters within 10 %."""
    bench = load_throughput_module()
    ucfg = UNetConfig(in_channels=1, channels=32, mults=(1, 2, 2), n_res=2, attn_res=(7,))
    ours = UNet(ucfg)
    theirs, tried = bench.matched_diffusers_unet(ucfg)
    assert abs(count_params(theirs) / count_params(ours) - 1) <= 0.10
    assert theirs.config.block_out_channels == (32, 64, 64)               # the width the search picks
    assert count(theirs, ("ResnetBlock2D",)) == count(ours, (ResBlock.__name__,)) == 17
    assert count(theirs, ("Attention",)) == count(ours, (Attention.__name__,)) == 6
    assert sorted(tried) == list(tried) and all(p > 0 for p in tried.values())


def run_bench(script: str, out: Path) -> str:
    done = subprocess.run([sys.executable, f"bench/{script}", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_unet_throughput_quick(tmp_path):
    stdout = run_bench("unet_throughput.py", tmp_path)
    record = json.loads((tmp_path / "unet_throughput.json").read_text())
    assert abs(record["params"]["ratio_diffusers_over_ours"] - 1) <= 0.10
    for key in ("torch", "diffusers", "threads", "cpu", "date", "load_average_1min"):
        assert key in record, key
    assert set(record["results"]) == {"fp32", "bf16"}
    for precision, row in record["results"].items():
        assert row["ours_img_s"] > 0 and row["diffusers_img_s"] > 0
        assert math.isclose(row["ratio_ours_over_diffusers"], row["ours_img_s"] / row["diffusers_img_s"], rel_tol=0.01)
        assert len(row["ours_repeats"]) == len(row["diffusers_repeats"]) == record["config"]["repeats"]
        assert precision in stdout                                         # one printed row per precision


def test_ddpm_vs_diffusers_quick(tmp_path):
    stdout = run_bench("ddpm_vs_diffusers.py", tmp_path)
    record = json.loads((tmp_path / "ddpm_vs_diffusers.json").read_text())
    for name in ("ours", "diffusers"):
        r = record["results"][name]
        assert r["steps"] >= 1 and r["n_samples"] == record["config"]["n_samples"]
        for key in ("fid", "fid_floor", "train_images_per_s", "samples_per_s", "confident_frac", "class_entropy"):
            assert math.isfinite(r[key]) and r[key] >= 0, (name, key)
        assert r["fid_ci95"][0] <= r["fid"] <= r["fid_ci95"][1]
        assert (tmp_path / f"ddpm_vs_diffusers_{name}.png").is_file()
    assert record["results"]["ours"]["params"] != record["results"]["diffusers"]["params"]   # two networks trained
    assert record["diffusers"] and record["torch"]                           # library versions recorded
    assert set(record["ratios_ours_over_diffusers"]) == {"fid", "train_images_per_s", "samples_per_s"}
    for label in ("FID (lower is better)", "train images/s", "samples/s", "-> "):
        assert label in stdout, label


def test_samplers_quick(tmp_path):
    stdout = run_bench("samplers.py", tmp_path)
    record = json.loads((tmp_path / "samplers.json").read_text())
    floor, flow = record["floor"], record["exact_flow"]
    assert floor["sliced_w1_min"] <= floor["sliced_w1"] <= floor["sliced_w1_max"]
    assert abs(floor["spread"] - 0.1) < 0.03                      # true samples: within-mode std 0.1
    assert set(record["results"]) == {"ddpm posterior", "ddpm beta", "ddim eta=0", "euler", "heun",
                                      "euler (linear path)", "heun (linear path)"}
    for label, r in record["results"].items():
        assert [row["nfe_target"] for row in r["rows"]] == record["config"]["nfes"]
        for row in r["rows"]:
            assert row["nfe"] == (2 * row["steps"] - 1 if r["sampler"] == "heun" else row["steps"]) <= row["nfe_target"]
            assert math.isfinite(row["sliced_w1"]) and 0 <= row["mass_error"] <= 1 and row["spread"] > 0
            assert label in stdout
    # the ODE samplers head for the exact flow of the same noise; with 200 samples (quick) its sampling noise
    # dwarfs their discretisation error, so at 10 steps Euler is already within 5 % of it
    euler_10 = record["results"]["euler (linear path)"]["rows"][-1]
    assert abs(euler_10["sliced_w1"] / flow["sliced_w1"] - 1) < 0.05 and flow["nfe"] > 10
    assert (tmp_path / "samplers.png").is_file()


def test_train_step_speed_quick(tmp_path):
    """The re-implemented step matches common.loop's bit for bit, every checked variant is deterministic, and
    each row's rates hang together."""
    stdout = run_bench("train_step_speed.py", tmp_path)
    record = json.loads((tmp_path / "train_step_speed.json").read_text())
    numerics, results = record["numerics"], record["results"]
    assert numerics["replica"]["max_abs_weight_diff"] == 0.0                 # the replica is the real step
    assert all(n["deterministic"] for n in numerics.values())
    assert results["baseline"]["ratio"] == 1.0 and {"best", "adamw_fused", "batch_256"} <= set(results)
    for name, row in results.items():
        assert row["img_s"] > 0 and len(row["img_s_repeats"]) % record["config"]["repeats"] == 0, name
        assert math.isclose(row["gflops"], row["img_s"] * record["flops_per_image"] / 1e9, rel_tol=0.01), name
        assert 0 < row["frac_of_bf16_peak"] < 1.5, name
    table = (tmp_path / "train_step_speed.md").read_text()
    assert all(f"| {name} |" in table for name in results) and "top ops" in table
    assert "best" in stdout
