"""Training throughput of our U-Net against diffusers' UNet2DModel of the same size, in one run.

One training step is what every day does: forward, MSE to the noise, backward, AdamW step, on the
same (B, 1, 28, 28) batch for both networks. Both are built from one description (day 6's cpu preset:
widths 16·(1, 2, 2), 1 residual block per level, attention at 7×7, batch 128); diffusers' width is searched
so its parameter count lands within 10 % of ours. Measurements alternate ours, diffusers, ours, ... after
untimed warm-up steps, so a neighbour's load hits both alike, and each number is the median over repeats,
once in fp32 and once under bf16 autocast.

Each rate is also given in GFLOP/s (the step's matmul and convolution FLOPs, forward and backward, counted by
torch.utils.flop_counter) and as a fraction of this CPU's peak in that precision, measured in the same run:
the fastest of a large square matmul and 3×3 convolutions (forward + backward) at the sizes of the U-Net's
levels.

    python bench/unet_throughput.py [--quick] [--profile] [--out DIR] [--key=value ...]
    python bench/unet_throughput.py --unet.channels=32 --unet.n_res=2 --batch_size=64   # day 6's earlier 1.7 M shape

References: Ho et al. 2020 (arXiv:2006.11239), the network and objective; diffusers' UNet2DModel
(github.com/huggingface/diffusers, src/diffusers/models/unets/unet_2d.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from common.config import UserError, apply_overrides, cli, flatten, to_dict
from common.nets import UNet, UNetConfig, count_params
from common.run import git_commit, pick_device

BENCH = Path(__file__).resolve().parent
T_TRAIN = 1000  # diffusers' networks take integer timesteps 0..999; ours take t = i / 1000 in [0, 1]


@dataclass
class Config:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1))  # our U-Net: day 6's cpu preset
    batch_size: int = 128
    warmup: int = 2                          # untimed steps per network and precision
    repeats: int = 5                         # timed blocks per network and precision; the median is reported
    steps: int = 3                           # training steps per timed block
    precisions: tuple[str, ...] = ("fp32", "bf16")
    peak_reps: int = 5                       # timed calls per peak microbenchmark; the median is reported
    matmul_n: int = 2048                     # side of the square matmul of the peak microbenchmarks
    threads: int = 0                         # torch intra-op threads (0: torch's default)
    device: str = "cpu"
    seed: int = 0


DEFAULT = Config()
QUICK = Config(unet=UNetConfig(channels=16, n_res=1), batch_size=8, warmup=1, repeats=2, steps=1, peak_reps=1,
               matmul_n=256, threads=1)


# --- the two networks ---------------------------------------------------------------------------------

def diffusers_unet(ucfg: UNetConfig, width: int) -> UNet2DModel:
    """diffusers' UNet2DModel laid out like our UNet(ucfg), with base width `width`.

    Same levels (widths width·mults), blocks per level, attention at the same resolutions (in the
    mid block too), 4 heads at the lowest level and 8 groups per GroupNorm as in common/nets.py.
    """
    sizes = [-(-ucfg.image_size // 2 ** level) for level in range(len(ucfg.mults))]   # 28, 14, 7
    attn = [size in ucfg.attn_res for size in sizes]
    return UNet2DModel(
        sample_size=ucfg.image_size, in_channels=ucfg.in_channels, out_channels=ucfg.out_channels or ucfg.in_channels,
        block_out_channels=tuple(width * m for m in ucfg.mults), layers_per_block=ucfg.n_res,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        norm_num_groups=8, attention_head_dim=width * ucfg.mults[-1] // 4)


def matched_diffusers_unet(ucfg: UNetConfig) -> tuple[UNet2DModel, dict[int, int]]:
    """The diffusers U-Net whose parameter count is closest to ours, and every width tried -> params."""
    target = count_params(UNet(ucfg))
    widths = range(max(8, ucfg.channels // 16 * 8), 3 * ucfg.channels // 2 + 1, 8)   # multiples of the 8 groups
    tried = {w: count_params(diffusers_unet(ucfg, w)) for w in widths}
    width = min(tried, key=lambda w: abs(tried[w] - target))
    if abs(tried[width] / target - 1) > 0.10:
        raise UserError(f"no diffusers width within 10 % of our {target:,} parameters (tried {tried})")
    return diffusers_unet(ucfg, width), tried


def forward(name: str, model: nn.Module, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Both networks called alike: ours on t in [0, 1], diffusers' on the integer step round(999·t)."""
    if name == "ours":
        return model(xt, t)
    return model(xt, (t * (T_TRAIN - 1)).round().long()).sample


# --- timing -------------------------------------------------------------------------------------------

def train_steps(name, model, opt, batch, steps: int, bf16: bool) -> None:
    """`steps` optimiser steps on one fixed batch: forward + eps-MSE + backward + AdamW."""
    xt, t, eps = batch
    for _ in range(steps):
        with torch.autocast(xt.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(name, model, xt, t)
        loss = F.mse_loss(out.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def images_per_second(name, model, opt, batch, cfg: Config, bf16: bool) -> float:
    sync = torch.cuda.synchronize if batch[0].is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    train_steps(name, model, opt, batch, cfg.steps, bf16)
    sync()
    return cfg.steps * cfg.batch_size / (time.perf_counter() - start)


def measure(models: dict[str, nn.Module], batch, cfg: Config) -> dict:
    """Median images/s per network and precision, timed blocks interleaved ABAB..."""
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    results = {}
    for precision in cfg.precisions:
        bf16 = precision == "bf16"
        for name, model in models.items():
            train_steps(name, model, opts[name], batch, cfg.warmup, bf16)
        runs = {name: [] for name in models}
        for _ in range(cfg.repeats):
            for name, model in models.items():
                runs[name].append(images_per_second(name, model, opts[name], batch, cfg, bf16))
        median = {name: statistics.median(r) for name, r in runs.items()}
        results[precision] = {"ours_img_s": round(median["ours"], 3), "diffusers_img_s": round(median["diffusers"], 3),
                              "ratio_ours_over_diffusers": round(median["ours"] / median["diffusers"], 3),
                              "ours_repeats": [round(v, 1) for v in runs["ours"]],
                              "diffusers_repeats": [round(v, 1) for v in runs["diffusers"]]}
    return results


def add_flop_rates(results: dict, flops: dict[str, int], peak: dict, batch_size: int) -> None:
    """Next to each images/s: GFLOP/s (FLOPs per image times images/s) and the fraction of that precision's peak."""
    for precision, row in results.items():
        for name, step in flops.items():
            gflops = row[f"{name}_img_s"] * step / batch_size / 1e9
            row[f"{name}_gflops"] = round(gflops, 1)
            row[f"{name}_frac_of_peak"] = round(gflops / peak[precision]["peak_gflops"], 3)


def step_flops(name: str, model: nn.Module, batch) -> int:
    """Matmul and convolution FLOPs of one training step (forward and backward), as torch counts them."""
    xt, t, eps = batch
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(forward(name, model, xt, t), eps).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# --- what this CPU can do: the peaks the training rates are a fraction of -----------------------------

def _median_seconds(fn, reps: int) -> float:
    fn()                                                   # untimed: oneDNN picks and caches its kernel here
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int, dtype: torch.dtype, reps: int, device) -> float:
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    return 2 * n ** 3 / _median_seconds(lambda: a @ b, reps) / 1e9


def conv3x3_gflops(batch: int, channels: int, size: int, dtype: torch.dtype, reps: int, device) -> float:
    """Forward + backward of one 3x3 convolution channels -> channels on (batch, channels, size, size), in
    channels_last, the layout oneDNN computes in."""
    conv = nn.Conv2d(channels, channels, 3, padding=1).to(device, dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, channels, size, size, device=device).to(dtype, memory_format=torch.channels_last)
    x.requires_grad_()
    with FlopCounterMode(display=False) as counter:
        conv(x).sum().backward()
    return counter.get_total_flops() / _median_seconds(lambda: conv(x).sum().backward(), reps) / 1e9


def peaks(ucfg: UNetConfig, batch_size: int, matmul_n: int, reps: int, device) -> dict:
    """GFLOP/s of a square matmul and of 3x3 convolutions at each U-Net level's width and side (the training
    batch), in fp32 and bf16; "peak" is the fastest of them."""
    sides = [-(-ucfg.image_size // 2 ** level) for level in range(len(ucfg.mults))]      # 28, 14, 7
    out = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rates = {f"matmul_{matmul_n}": matmul_gflops(matmul_n, dtype, reps, device)}
        for mult, side in zip(ucfg.mults, sides):
            c = ucfg.channels * mult
            rates[f"conv3x3_c{c}_{side}x{side}"] = conv3x3_gflops(batch_size, c, side, dtype, reps, device)
        rates = {k: round(v, 1) for k, v in rates.items()}
        out[precision] = {"peak_gflops": max(rates.values()), "microbenchmarks_gflops": rates}
    return out


def profile(models: dict[str, nn.Module], batch, cfg: Config, rows: int = 14) -> str:
    """Where `cfg.steps` training steps of each network spend their time (torch.profiler), as markdown."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    sections = []
    for precision in cfg.precisions:
        for name, model in models.items():
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            train_steps(name, model, opt, batch, 1, precision == "bf16")
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                train_steps(name, model, opt, batch, cfg.steps, precision == "bf16")
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
            sections.append(f"## {name}, {precision}: {cfg.steps} training steps, top ops by self CPU time\n\n"
                            f"```\n{table.strip()}\n```\n")
    return "\n".join(sections)


# --- the machine --------------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """What produced a timing: versions, threads, CPU (and GPU), commit, date."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "threads": torch.get_num_threads(), "cpu": f"{cpu_model()} ({os.cpu_count()} cores)",
            "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def load_average() -> float:
    """1-minute load average: above the core count, other processes were competing for the CPU."""
    return round(os.getloadavg()[0], 2)


# --- main ---------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=f"config keys (--key=value): {', '.join(flatten(to_dict(DEFAULT)))}")
    parser.add_argument("--quick", action="store_true", help="tiny networks and batch: seconds (tests)")
    parser.add_argument("--profile", action="store_true", help="also profile each network (unet_throughput_profile.md)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="folder for unet_throughput.json")
    args, rest = parser.parse_known_args(argv)
    cfg = apply_overrides(QUICK if args.quick else DEFAULT, rest)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if set(cfg.precisions) - {"fp32", "bf16"}:
        raise UserError(f"precisions={','.join(cfg.precisions)}: choose among fp32, bf16")
    device = pick_device(cfg.device)
    load_start = load_average()

    # --- build both networks from one description, then one shared batch
    ucfg = cfg.unet
    torch.manual_seed(cfg.seed)
    theirs, tried = matched_diffusers_unet(ucfg)
    models = {"ours": UNet(ucfg).to(device), "diffusers": theirs.to(device)}
    params = {name: count_params(m) for name, m in models.items()}
    width = theirs.config.block_out_channels[0]
    print(f"ours      common.nets.UNet        {params['ours']:>10,} parameters")
    print(f"diffusers UNet2DModel width {width:<4}  {params['diffusers']:>10,} parameters "
          f"({params['diffusers'] / params['ours'] - 1:+.1%}); widths tried: {tried}")
    g = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.batch_size, ucfg.in_channels, ucfg.image_size, ucfg.image_size)
    batch = tuple(z.to(device) for z in (torch.randn(shape, generator=g),                   # x_t
                                         torch.randint(1, T_TRAIN + 1, (cfg.batch_size,), generator=g) / T_TRAIN,
                                         torch.randn(shape, generator=g)))                  # eps target

    # --- measure (and optionally profile)
    flops = {name: step_flops(name, model, batch) for name, model in models.items()}
    peak = peaks(ucfg, cfg.batch_size, cfg.matmul_n, cfg.peak_reps, device)
    results = measure(models, batch, cfg)
    add_flop_rates(results, flops, peak, cfg.batch_size)
    print(f"\nbatch {cfg.batch_size}, {ucfg.image_size}x{ucfg.image_size}, {torch.get_num_threads()} threads, "
          f"median of {cfg.repeats} x {cfg.steps} steps; GFLOP/s and fraction of this CPU's peak in that precision")
    print(f"{'precision':<10}{'peak GFLOP/s':>13}{'ours img/s':>12}{'GFLOP/s':>9}{'of peak':>9}"
          f"{'diffusers img/s':>17}{'GFLOP/s':>9}{'of peak':>9}{'ours/diffusers':>16}")
    for precision, r in results.items():
        print(f"{precision:<10}{peak[precision]['peak_gflops']:>13.0f}{r['ours_img_s']:>12.1f}{r['ours_gflops']:>9.1f}"
              f"{r['ours_frac_of_peak']:>9.1%}{r['diffusers_img_s']:>17.1f}{r['diffusers_gflops']:>9.1f}"
              f"{r['diffusers_frac_of_peak']:>9.1%}{r['ratio_ours_over_diffusers']:>16.3f}")
    for precision, p in peak.items():
        rates = ", ".join(f"{k} {v:.0f}" for k, v in p["microbenchmarks_gflops"].items())
        print(f"{precision} microbenchmarks, GFLOP/s: {rates}")
    tables = profile(models, batch, cfg) if args.profile else None

    # --- record
    record = {**machine(device), "load_average_1min": {"start": load_start, "end": load_average()},
              "config": to_dict(cfg),
              "params": {**params, "ratio_diffusers_over_ours": round(params["diffusers"] / params["ours"], 4),
                         "diffusers_width": width, "diffusers_widths_tried": tried},
              "flops_per_image": {name: round(f / cfg.batch_size) for name, f in flops.items()},
              "peaks": peak, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "unet_throughput.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out / 'unet_throughput.json'}")
    if tables:
        header = (f"# Profile of `python bench/unet_throughput.py --profile`\n\n{record['date']}, commit "
                  f"{record['commit']}, {record['cpu']}, {record['threads']} threads, batch {cfg.batch_size}.\n\n")
        (args.out / "unet_throughput_profile.md").write_text(header + tables)
        print(tables)


if __name__ == "__main__":
    cli(main)
