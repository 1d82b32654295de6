"""Speed of day 6's training step on a CPU, and which changes to it pay, as ratios measured in one run.

The baseline is the step every day runs, called as fit() calls it: common.loop.train_step (LR schedule,
bf16-autocast forward of the loss, backward, gradient clipping, AdamW), then common.training.EMA.update,
on day 6's cpu preset and loss (imported from day06/code/train.py) and batches drawn by
common.loop.batch_indices from 4,000 fixed random images. Each variant re-implements that step with one
change (memory format, AdamW / clipping / EMA implementation, batch size, thread count, torch.compile);
"best" combines the changes worth adopting. The variant with no change ("replica") must match the baseline
bit for bit, which checks the re-implementation.

Speed: after untimed warm-up steps, every round times each variant's block next to a block of the baseline
(the order of the pair and of the variants changes from round to round), so a ratio compares two blocks
seconds apart and a neighbour's load hits both alike; a variant's ratio is the median of its paired ratios.
Rates are also given in GFLOP/s (matmul and convolution FLOPs, forward and backward, by
torch.utils.flop_counter) and as a fraction of this CPU's bf16 peak, from bench/unet_throughput.py's
microbenchmarks timed once in each round. The AdamW, clipping and EMA implementations are also timed alone,
since what they save is smaller than the noise of a whole step.

Numerics: each variant not clearly slower than the baseline trains `check_steps` steps from the same seed
twice (deterministic: bit-identical weights), and its weights are compared with the baseline's after as many
steps; the baseline started from weights one ulp away ("one_ulp") shows how far round-off alone moves them.

    python bench/train_step_speed.py [--quick] [--out DIR] [--key=value ...]     # ~5 min on 2 idle cores
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from day06_shapes import load_day6
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode
from unet_throughput import load_average, machine, peaks

from common.config import apply_overrides, cli, to_dict
from common.loop import batch_indices, train_step
from common.training import EMA, lr_at, step_generator

BENCH = Path(__file__).resolve().parent
CPU = SimpleNamespace(device=torch.device("cpu"))      # all of common.loop.Run that train_step reads


@dataclass
class Config:
    warmup: int = 2                  # untimed steps per variant before the rounds (compile: its warm-up)
    repeats: int = 5                 # rounds of timed blocks; medians over them are reported
    part_reps: int = 20              # timed calls of each AdamW / clipping / EMA implementation alone
    steps: int = 2                   # training steps per timed block
    check_steps: int = 20            # steps of each determinism / round-off run
    n_images: int = 4000             # the fixed random training set the batches are drawn from
    compile: bool = True             # include the torch.compile variants (a minute or more of warm-up)
    matmul_n: int = 2048
    profile_steps: int = 3           # steps profiled for the top-ops tables (0: no profile)
    threads: int = 2                 # torch intra-op threads of the run (the threads_1 variant uses 1)
    preset: str = "cpu"              # day 6's preset
    batch_size: int = 0              # 0: the preset's


DEFAULT = Config()
QUICK = Config(warmup=1, repeats=2, part_reps=2, steps=1, check_steps=2, n_images=64, compile=False, matmul_n=256,
               profile_steps=1, threads=1, preset="smoke", batch_size=8)


@dataclass(frozen=True)
class Recipe:
    """How a variant runs the step; the defaults are what common.loop and common.training do today."""
    channels_last: bool = False      # model weights and batch in NHWC (torch.channels_last)
    adamw: str = "for-loop"          # torch.optim.AdamW implementation: for-loop (CPU default) | foreach | fused
    clip: str = "for-loop"           # nn.utils.clip_grad_norm_: for-loop (CPU default) | foreach
    ema: str = "for-loop"            # EMA: lerp_ per tensor | foreach (one torch._foreach_lerp_)
    batch: int = 0                   # batch size (0: the preset's)
    threads: int = 0                 # intra-op threads during the step (0: the run's)
    compile: bool = False            # torch.compile(model)
    nudge: bool = False              # every initial weight one ulp up: not timed, the yardstick of round-off


BEST = Recipe(adamw="fused", clip="foreach", ema="foreach")
VARIANTS: dict[str, Recipe | None] = {            # None: the real common.loop.train_step + EMA.update
    "baseline": None,
    "replica": Recipe(),
    "channels_last": Recipe(channels_last=True),
    "adamw_foreach": Recipe(adamw="foreach"),
    "adamw_fused": Recipe(adamw="fused"),
    "clip_foreach": Recipe(clip="foreach"),
    "ema_foreach": Recipe(ema="foreach"),
    "threads_1": Recipe(threads=1),
    "batch_64": Recipe(batch=64),
    "batch_256": Recipe(batch=256),
    "best": BEST,
    "compile": Recipe(compile=True),
    "best_compile": dataclasses.replace(BEST, compile=True),
    "one_ulp": Recipe(nudge=True),
}
SAME_MATH = {"batch_64": False, "batch_256": False}     # other batches train on other data: no weight comparison
ALWAYS_CHECKED = ("baseline", "replica", "best", "best_compile", "one_ulp")
CANDIDATE = 0.95                # other variants get their numerics checked when at least this fast as the baseline


# --- one trainer per variant --------------------------------------------------------------------------

def trainer(day6, cfg6, recipe: Recipe | None, data: torch.Tensor) -> SimpleNamespace:
    """Fresh model (day 6's init from its seed), optimiser and EMA; `.step()` runs the next training step."""
    r = recipe or Recipe()
    cfg = dataclasses.replace(cfg6, batch_size=r.batch or cfg6.batch_size)
    model, _, loss_fn = day6.build(cfg)
    if r.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if r.nudge:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.nextafter(p, torch.tensor(float("inf"))))
    impl = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(r.adamw, {})
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, **impl)    # as in fit()
    ema = EMA(model, cfg.ema_decay)
    net = torch.compile(model) if r.compile else model
    t = SimpleNamespace(model=model, ema=ema, cfg=cfg, threads=r.threads, n=0)
    step = real_step if recipe is None else variant_step

    def next_step():
        step(net, model, opt, ema, loss_fn, data, t.n, cfg, r)
        t.n += 1
    t.step = next_step
    return t


def real_step(net, model, opt, ema, loss_fn, data, step, cfg, r) -> None:
    """fit()'s loop body without logging and checkpoints: batch, common.loop.train_step, NaN guard, EMA."""
    x0 = data[batch_indices(len(data), cfg.batch_size, cfg.seed, step)]
    loss, grad_norm = train_step(net, model, opt, loss_fn, x0, None, step, cfg, CPU)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        raise RuntimeError(f"loss or gradient not finite at step {step}")
    ema.update(model)
    loss.item(), grad_norm.item()                                     # fit() logs both


def variant_step(net, model, opt, ema, loss_fn, data, step, cfg, r: Recipe) -> None:
    """real_step with the recipe's changes; with Recipe() it computes exactly what real_step computes."""
    x0 = data[batch_indices(len(data), cfg.batch_size, cfg.seed, step)]
    if r.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        loss = loss_fn(net, x0, None, step_generator(cfg.seed, step))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=r.clip == "foreach")
    if torch.isfinite(grad_norm):
        opt.step()
    loss = loss.detach().float()
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        raise RuntimeError(f"loss or gradient not finite at step {step}")
    if r.ema == "foreach":
        ema_update_foreach(ema, model)
    else:
        ema.update(model)
    loss.item(), grad_norm.item()


@torch.no_grad()
def ema_update_foreach(ema: EMA, model: nn.Module) -> None:
    """EMA.update with one torch._foreach_lerp_ over all parameters (the model has no buffers)."""
    d = min(ema.decay, (1 + ema.updates) / (10 + ema.updates))
    torch._foreach_lerp_(list(ema.model.parameters()), [p.detach() for p in model.parameters()], 1 - d)
    ema.updates += 1


def run_steps(t: SimpleNamespace, n: int) -> float:
    """n steps of trainer t under its thread count; returns the seconds they took."""
    threads = torch.get_num_threads()
    torch.set_num_threads(t.threads or threads)
    start = time.perf_counter()
    for _ in range(n):
        t.step()
    seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    return seconds


# --- measurements ---------------------------------------------------------------------------------------

def time_pairs(trainers: dict[str, SimpleNamespace], peak_probe: Callable[[], dict], cfg: Config):
    """images/s of each trainer in `cfg.repeats` rounds. In a round each variant's block sits next to a block of
    the baseline (before it in even rounds, after it in odd ones; the variants' order rotates), so a ratio
    compares two blocks seconds apart; the peak microbenchmarks are timed once per round."""
    base, names = "baseline", [n for n in trainers if n != "baseline"]
    runs, ratios, round_peaks = {name: [] for name in trainers}, {name: [] for name in names}, []
    for i in range(cfg.repeats):
        round_peaks.append(peak_probe())
        for name in names[i % len(names):] + names[:i % len(names)]:
            pair = (base, name) if i % 2 == 0 else (name, base)
            rate = {n: cfg.steps * trainers[n].cfg.batch_size / run_steps(trainers[n], cfg.steps) for n in pair}
            runs[name].append(rate[name])
            runs[base].append(rate[base])
            ratios[name].append(rate[name] / rate[base])
    return runs, ratios, round_peaks


def part_ms(t: SimpleNamespace, reps: int) -> dict[str, float]:
    """Milliseconds per call of the per-parameter pieces of a step, each implementation in turn, on a copy of
    day 6's parameters with gradients: what the AdamW, clipping and EMA variants change, timed alone because
    their difference is smaller than the noise of a whole step."""
    model = copy.deepcopy(t.model)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opts = {impl: torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0, **kw)
            for impl, kw in (("for-loop", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True}))}
    ema = EMA(model, 0.995)
    pieces = {**{f"adamw {impl}": opt.step for impl, opt in opts.items()},
              "clip for-loop": lambda: nn.utils.clip_grad_norm_(params, 1.0, foreach=False),
              "clip foreach": lambda: nn.utils.clip_grad_norm_(params, 1.0, foreach=True),
              "ema for-loop": lambda: ema.update(model), "ema foreach": lambda: ema_update_foreach(ema, model)}
    times = {name: [] for name in pieces}
    for fn in pieces.values():
        fn()                                                           # untimed: creates the optimiser state
    for _ in range(reps):
        for name, fn in pieces.items():
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: round(statistics.median(v), 3) for name, v in times.items()}


def step_flops(t: SimpleNamespace) -> int:
    """Matmul and convolution FLOPs of one training step (forward and backward) of trainer t."""
    with FlopCounterMode(display=False) as counter:
        t.step()
    return counter.get_total_flops()


def weights(t: SimpleNamespace) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def check_numerics(make: Callable[[], SimpleNamespace], steps: int, reference: torch.Tensor | None) -> dict:
    """Two fresh runs of `steps` steps: bit-identical weights? Max |weight - reference weight| after them."""
    runs = []
    for _ in range(2):
        t = make()
        run_steps(t, steps)
        runs.append(weights(t))
    out = {"deterministic": bool(torch.equal(runs[0], runs[1]))}
    if reference is not None:
        diff = runs[0] - reference
        out["max_abs_weight_diff"] = float(diff.abs().max())
        out["rel_weight_diff"] = float(diff.norm() / reference.norm())             # ||w - w_ref|| / ||w_ref||
    return out, runs[0]


def top_ops(t: SimpleNamespace, steps: int, rows: int = 12) -> str:
    """torch.profiler's table of the ops with the most self CPU time over `steps` steps of trainer t."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_steps(t, steps)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows).strip()


# --- main -------------------------------------------------------------------------------------------------

def summarise(runs: dict[str, list[float]], ratios: dict[str, list[float]], bf16_peaks: list[float],
              flops_per_image: float) -> dict:
    """Per variant: median images/s, ratio to the baseline (median and range of the paired ratios), GFLOP/s,
    and the median over rounds of (GFLOP/s) / (that round's bf16 peak)."""
    rows = {}
    for name, rates in runs.items():
        paired = ratios.get(name, [1.0])
        rounds = [i * len(bf16_peaks) // len(rates) for i in range(len(rates))]      # the round of each block
        fracs = [v * flops_per_image / 1e9 / bf16_peaks[r] for v, r in zip(rates, rounds)]
        img_s = statistics.median(rates)
        rows[name] = {"img_s": round(img_s, 1), "ratio": round(statistics.median(paired), 3),
                      "ratio_range": [round(min(paired), 3), round(max(paired), 3)],
                      "gflops": round(img_s * flops_per_image / 1e9, 1),
                      "frac_of_bf16_peak": round(statistics.median(fracs), 3),
                      "img_s_repeats": [round(v, 1) for v in rates]}
    return rows


def median_peaks(round_peaks: list[dict]) -> dict:
    """unet_throughput.peaks' layout, each microbenchmark the median of its per-round rates."""
    out = {}
    for precision, first in round_peaks[0].items():
        rates = {k: round(statistics.median(r[precision]["microbenchmarks_gflops"][k] for r in round_peaks), 1)
                 for k in first["microbenchmarks_gflops"]}
        out[precision] = {"peak_gflops": max(rates.values()), "microbenchmarks_gflops": rates}
    return out


def markdown(record: dict) -> str:
    """The results as the short report bench/results/train_step_speed.md."""
    cfg, peak, numerics, load = record["config"], record["peaks"], record["numerics"], record["load_average_1min"]
    lines = [f"# `python bench/train_step_speed.py`: day 6's training step, {record['date']}",
             "",
             f"{record['cpu']}, {record['threads']} threads, torch {record['torch']}, commit {record['commit']}, "
             f"load average {load['start']} -> {load['after_timing']} after the timings and profiles -> "
             f"{load['end']}, "
             f"{record['seconds']} s. Batch {record['batch_size']} of 1x28x28 unless the variant says otherwise. "
             f"{cfg['repeats']} rounds; in each, every variant's {cfg['steps']}-step block is timed next to one of "
             f"the baseline: x baseline is the median of these paired ratios (min-max in brackets), images/s the "
             f"median block. Peaks, timed in the same rounds: bf16 {peak['bf16']['peak_gflops']:.0f}, "
             f"fp32 {peak['fp32']['peak_gflops']:.0f} GFLOP/s; {record['flops_per_image'] / 1e6:.1f} MFLOP per "
             f"image and step.",
             "",
             f"| variant | images/s | x baseline (range) | GFLOP/s | of bf16 peak | deterministic | "
             f"weights vs baseline after {cfg['check_steps']} steps: max abs diff, relative L2 |",
             "| --- | ---: | ---: | ---: | ---: | :---: | ---: |"]
    for name, r in record["results"].items():
        n = numerics.get(name, {})
        det = {True: "yes", False: "**no**"}.get(n.get("deterministic"), "not checked")
        diff = f"{n['max_abs_weight_diff']:.2g}, {n['rel_weight_diff']:.2g}" if "rel_weight_diff" in n else "n/a"
        low, high = r["ratio_range"]
        lines.append(f"| {name} | {r['img_s']:.0f} | {r['ratio']:.3f} ({low:.2f}-{high:.2f}) "
                     f"| {r['gflops']:.0f} | {r['frac_of_bf16_peak']:.0%} | {det} | {diff} |")
    if "one_ulp" in numerics:
        n = numerics["one_ulp"]
        lines += ["", f"Round-off yardstick: the baseline started from weights one ulp away ends "
                      f"{n['max_abs_weight_diff']:.2g} (max abs), {n['rel_weight_diff']:.2g} (relative L2) from it "
                      f"after {cfg['check_steps']} steps (deterministic: {'yes' if n['deterministic'] else 'no'})."]
    if record.get("compile_warmup_s"):
        lines += ["", "torch.compile warm-up (the untimed first steps, compiling from an empty inductor cache): " +
                  ", ".join(f"{k} {v:.0f} s" for k, v in record["compile_warmup_s"].items()) + "."]
    step_ms = 1000 * record["batch_size"] / record["results"]["baseline"]["img_s"]
    lines += ["", f"The per-parameter pieces timed alone (median ms per call of {cfg['part_reps']}; the baseline "
                  f"step takes {step_ms:.0f} ms):", "", "| piece | ms per call | of a baseline step |",
              "| --- | ---: | ---: |"]
    lines += [f"| {name} | {ms:.2f} | {ms / step_ms:.1%} |" for name, ms in record["parts_ms"].items()]
    lines += ["", f"Microbenchmarks (GFLOP/s, median over the rounds; convolutions forward + backward at batch "
                  f"{record['batch_size']}): " + "; ".join(
                      f"{precision}: " + ", ".join(f"{k} {v:.0f}" for k, v in p["microbenchmarks_gflops"].items())
                      for precision, p in peak.items()) + "."]
    for name, table in record.get("top_ops", {}).items():
        lines += ["", f"## {name}: top ops by self CPU time over {cfg['profile_steps']} steps", "", "```", table, "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=f"config keys (--key=value): {', '.join(to_dict(DEFAULT))}")
    parser.add_argument("--quick", action="store_true", help="day 6's smoke preset, a tiny batch: seconds (tests)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="folder for train_step_speed.json/.md")
    args, rest = parser.parse_known_args(argv)
    cfg = apply_overrides(QUICK if args.quick else DEFAULT, rest)
    torch.set_num_threads(cfg.threads)
    load_start, started = load_average(), time.perf_counter()

    # --- day 6's recipe, a fixed data set, one trainer per variant
    day6 = load_day6("train")
    cfg6 = day6.PRESETS[cfg.preset]
    cfg6 = dataclasses.replace(cfg6, batch_size=cfg.batch_size or cfg6.batch_size)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (cfg.n_images, 1, 28, 28), generator=g) / 127.5 - 1     # pixel levels, as loaded
    variants = {k: v for k, v in VARIANTS.items() if cfg.compile or not (v and v.compile)}
    trainers = {name: trainer(day6, cfg6, recipe, data) for name, recipe in variants.items()
                if not (recipe and recipe.nudge)}
    inductor_cache = tempfile.TemporaryDirectory(prefix="inductor_")   # removed at exit
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache.name      # compile from scratch, as a first run does
    warmup_s = {}
    for name, t in trainers.items():
        warmup_s[name] = run_steps(t, cfg.warmup)
        print(f"warm-up {name:<14} {warmup_s[name]:6.1f} s", flush=True)
    flops_per_image = step_flops(trainers["replica"]) / cfg6.batch_size

    # --- speed, where the time goes, then numerics
    ucfg = trainers["replica"].model.cfg
    runs, ratios, round_peaks = time_pairs(trainers, lambda: peaks(ucfg, cfg6.batch_size, cfg.matmul_n, 1, "cpu"),
                                           cfg)
    results = summarise(runs, ratios, [p["bf16"]["peak_gflops"] for p in round_peaks], flops_per_image)
    parts = part_ms(trainers["replica"], cfg.part_reps)
    tables = {name: top_ops(trainers[name], cfg.profile_steps) for name in ("baseline", "best", "channels_last")
              if cfg.profile_steps}
    load_timed = load_average()                                        # the load the timings and profiles saw
    peak = median_peaks(round_peaks)
    for name, r in results.items():
        low, high = r["ratio_range"]
        print(f"{name:<14} {r['img_s']:7.1f} images/s  x{r['ratio']:.3f} ({low:.2f}-{high:.2f})"
              f"  {r['gflops']:6.1f} GFLOP/s  {r['frac_of_bf16_peak']:.0%} of bf16 peak", flush=True)
    numerics, reference = {}, None
    for name, recipe in variants.items():
        if not SAME_MATH.get(name, True) or (name not in ALWAYS_CHECKED and results[name]["ratio"] < CANDIDATE):
            continue                                   # other data, or clearly slower: not a candidate
        make = functools.partial(trainer, day6, cfg6, recipe, data)
        numerics[name], final = check_numerics(make, cfg.check_steps, reference)
        reference = final if reference is None else reference          # the baseline comes first
        print(f"numerics {name:<14} {numerics[name]}", flush=True)

    # --- record
    record = {**machine(torch.device("cpu")),
              "load_average_1min": {"start": load_start, "after_timing": load_timed, "end": load_average()},
              "seconds": round(time.perf_counter() - started), "config": to_dict(cfg), "day6_preset": cfg.preset,
              "batch_size": cfg6.batch_size, "variants": {k: v and dataclasses.asdict(v) for k, v in variants.items()},
              "flops_per_image": round(flops_per_image), "peaks": peak, "results": results, "parts_ms": parts,
              "numerics": numerics,
              "compile_warmup_s": {k: round(v, 1) for k, v in warmup_s.items() if variants[k] and variants[k].compile},
              "top_ops": tables}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_step_speed.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "train_step_speed.md").write_text(markdown(record))
    print(markdown({**record, "top_ops": {}}))
    print(f"wrote {args.out / 'train_step_speed.json'} and .md in {record['seconds']} s")


if __name__ == "__main__":
    cli(main)
