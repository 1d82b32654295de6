"""Cheaper training steps: each technique a switch on one recipe (day 6's U-Net, v-prediction, cosine VP, AdamW).

    naive_attention  softmax(Q Kᵀ / √d) V written out, instead of F.scaled_dot_product_attention (the fused kernel)
    bf16             the forward and backward under bfloat16 autocast (Kalamkar et al. 2019)
    channels_last    NHWC memory layout for activations and conv weights
    compile          torch.compile: TorchDynamo captures the graph, Inductor fuses it into generated kernels
    checkpointing    torch.utils.checkpoint on every ResBlock: keep its input, recompute its inside in backward
                     (Chen et al. 2016, arXiv:1604.06174)
    fused_adamw      AdamW's update of all parameters in one fused kernel (fused=True), not one loop per tensor

`measure(recipe)` times a recipe's training step and reads its peak memory in a process of its own (run this
file with a JSON recipe: `python speed.py '{"bf16": true}'`), so that no configuration inherits another's
memory or compiled kernels. `train` runs the same step for a short quality run.

References: Dao et al. 2022 (FlashAttention, the fused attention SDPA dispatches to, arXiv:2205.14135);
Micikevicius et al. 2018 (mixed precision, arXiv:1710.03740); Ansel et al. 2024 (PyTorch 2 / torch.compile).
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when this file runs as a subprocess
from common.diffusion import diffusion_loss  # noqa: E402
from common.nets import ResBlock, UNet, UNetConfig  # noqa: E402
from common.paths import DiscreteVP  # noqa: E402
from common.training import EMA, TrainConfig, lr_at, step_generator  # noqa: E402

Tensor = torch.Tensor
DAY6_UNET = UNetConfig(channels=16, mults=(1, 2, 2), n_res=1, attn_res=(7,))   # day 6's cpu U-Net
SPEED_UPS = ("bf16", "channels_last", "compile", "fused_adamw")   # the switches that may make a step faster


@dataclass(frozen=True)
class Recipe:
    """Which techniques a training step uses; all False is the baseline (fp32 eager, SDPA, foreach AdamW)."""
    naive_attention: bool = False
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    checkpointing: bool = False
    fused_adamw: bool = False

    @property
    def name(self) -> str:
        return "+".join(f.name for f in fields(self) if getattr(self, f.name)) or "baseline"


# --- the techniques -------------------------------------------------------------------------------------

def explicit_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, **_) -> Tensor:
    """softmax(Q Kᵀ / √d + M) V (Vaswani et al. 2017, Eq. 1), materialising the (B, nh, L, L) weights."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])          # (B, nh, L_q, L_k)
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, -math.inf)
    return logits.softmax(-1) @ v                                       # (B, nh, L_q, hs)


@contextlib.contextmanager
def naive_attention(enabled: bool = True):
    """While open, every F.scaled_dot_product_attention call (common.nets' attention) is the explicit one."""
    fused = F.scaled_dot_product_attention
    if enabled:
        F.scaled_dot_product_attention = explicit_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = fused


def checkpoint_resblocks(model: nn.Module) -> nn.Module:
    """Make every ResBlock forget its activations in the forward pass and recompute them in backward: memory
    for the block's inside is traded for a second forward of it. The weights (state_dict) are unchanged."""
    for block in model.modules():
        if isinstance(block, ResBlock):
            block.forward = functools.partial(checkpoint, type(block).forward, block, use_reentrant=False)
    return model


def fused_supported(device: torch.device) -> bool:
    """Whether AdamW(fused=True) runs here (CUDA, and CPU from torch 2.4)."""
    try:
        torch.optim.AdamW([nn.Parameter(torch.zeros(1, device=device))], fused=True).step()
        return True
    except (RuntimeError, TypeError):
        return False


def build(recipe: Recipe, device: torch.device, seed: int = 0, lr: float = 2e-3, unet: UNetConfig = DAY6_UNET):
    """(model, the callable the step runs — compiled or not —, AdamW) for a recipe; the same weights for every
    recipe of one seed."""
    torch.manual_seed(seed)
    model = UNet(unet).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if recipe.checkpointing:
        checkpoint_resblocks(model)
    fused = recipe.fused_adamw and fused_supported(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=fused or None,
                            foreach=None if fused else True)
    net = torch.compile(model) if recipe.compile else model
    return model, net, opt


def make_step(recipe: Recipe, model: nn.Module, net, opt, path: DiscreteVP, grad_clip: float = 1.0):
    """The training step of day 6 (Alg. 1 of Ho et al., v target), under the recipe's switches."""
    device = next(model.parameters()).device

    def step(x0: Tensor, generator: torch.Generator) -> Tensor:
        if recipe.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with naive_attention(recipe.naive_attention), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.bf16):
            loss = diffusion_loss(net, x0, path, "v", generator)[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return loss.detach()
    return step


# --- timing, in a process of its own -------------------------------------------------------------------

def peak_memory_mib(device: torch.device) -> float:
    """CUDA: the allocator's peak; CPU: the process's peak resident set (ru_maxrss, KiB on Linux), which
    includes Python, torch and the compiler — compare configurations by their differences."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(recipe: Recipe, device: torch.device, batch: int, warmup: int, windows: int, steps: int) -> dict:
    """images/s of the recipe's step: `warmup` untimed steps (the first compiles), then the median of `windows`
    timed windows of `steps` steps each. One synthetic batch in [-1, 1] (the speed does not depend on it)."""
    path = DiscreteVP.named("cosine", 1000)
    model, net, opt = build(recipe, device)
    x0 = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device)
    step = make_step(recipe, model, net, opt, path)
    first = time.perf_counter()
    for i in range(warmup):
        step(x0, step_generator(0, i))
        if i == 0:
            _sync(device)
            first = time.perf_counter() - first
    seconds = []
    for w in range(windows):
        _sync(device)
        start = time.perf_counter()
        for i in range(steps):
            step(x0, step_generator(1, w * steps + i))
        _sync(device)
        seconds.append(time.perf_counter() - start)
    per_step = statistics.median(seconds) / steps
    return {"recipe": recipe.name, "images_per_s": round(batch / per_step, 1), "ms_per_step": round(1e3 * per_step, 1),
            "windows_s": [round(s, 3) for s in seconds], "first_step_s": round(first, 2),
            "compile_s": round(first - per_step, 2) if recipe.compile else None,
            "peak_memory_mib": round(peak_memory_mib(device), 1),
            "fused_adamw": recipe.fused_adamw and fused_supported(device)}


def measure(recipe: Recipe, device: str, batch: int, warmup: int, windows: int, steps: int, threads: int) -> dict:
    """time_steps in a fresh Python process, so its peak memory is its own; a failure (say, torch.compile
    without a C compiler) is recorded as the result."""
    job = json.dumps({"recipe": asdict(recipe), "device": device, "batch": batch, "warmup": warmup,
                      "windows": windows, "steps": steps, "threads": threads})
    done = subprocess.run([sys.executable, __file__, job], capture_output=True, text=True)
    if done.returncode:
        return {"recipe": recipe.name, "failed": done.stderr.strip().splitlines()[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- a short training run with a recipe ----------------------------------------------------------------

def train(recipe: Recipe, x: Tensor, cfg: TrainConfig, device: torch.device, desc: str = "train") -> nn.Module:
    """cfg.steps of the recipe's step on the images x (batches and noise seeded by (seed, step), as common.loop
    draws them), AdamW with warm-up and cosine decay; returns the EMA of the weights."""
    from tqdm import tqdm  # here: the timing subprocess does not need them

    from common.loop import batch_indices

    model, net, opt = build(recipe, device, cfg.seed, cfg.lr)
    step = make_step(recipe, model, net, opt, DiscreteVP.named("cosine", 1000), cfg.grad_clip)
    ema = EMA(model, cfg.ema_decay)
    for i in tqdm(range(cfg.steps), desc=desc, leave=False):
        for group in opt.param_groups:
            group["lr"] = lr_at(i, cfg)
        loss = step(x[batch_indices(len(x), cfg.batch_size, cfg.seed, i)].to(device), step_generator(cfg.seed, i))
        if not torch.isfinite(loss):
            raise RuntimeError(f"{recipe.name}: loss became NaN/inf at step {i + 1}")
        ema.update(model)
    return ema.model.to(memory_format=torch.contiguous_format)


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    result = time_steps(Recipe(**job["recipe"]), torch.device(job["device"]), job["batch"], job["warmup"],
                        job["windows"], job["steps"])
    print(json.dumps(result))
