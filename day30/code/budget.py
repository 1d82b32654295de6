"""Compute matching and the statistics of three seeds: what a family's training step costs, how many steps a FLOP
budget buys, and the intervals the report quotes.

Cost. A step costs the FLOPs of everything it runs, counted by torch.utils.flop_counter (common.flops: matrix products
and convolutions, 2 FLOPs per multiply-add, forward and backward; elementwise work is free). With F the U-Net's
forward FLOPs per image and T its training FLOPs per image (forward + backward ≈ 3 F), per image of a batch:

    DDPM, flow matching, reflow   T                    one forward and backward of the network
    consistency distillation      T + 2 F              + the teacher's Euler step + the target f_θ(x_lo) (no grad)
    progressive distillation      T + 2 F              + two teacher DDIM steps (no grad)
    DDGAN                         G's T + D's work     counted on a whole update of D and G (R1 on lazy steps)
    reflow pairs                  n_pairs · NFE · F    once, before reflow trains

A family trains until its counted FLOPs reach the budget B: `steps_to_reach` returns the first step count whose
cumulative cost is ≥ B. B is also quoted as DDPM-step equivalents, B / (T · batch).

Seeds. With n seeds and values m_1..m_n, the 95 % interval of the mean is m̄ ± t_{0.975, n−1} s / √n (s with n − 1
in the denominator; t_{0.975, 2} = 4.30). Two settings run on the same seeds are compared by their differences
d_i = m_i^A − m_i^B (a paired t-interval), which removes what the seed does to both.

References: Peebles & Xie 2023 (Gflops as the cost axis), arXiv:2212.09748; Student 1908, "The probable error of a
mean", Biometrika 6(1).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from scipy import stats

from common.flops import flops

Tensor = torch.Tensor


# --- counted FLOPs ------------------------------------------------------------------------------------------------

def forward_flops(net: torch.nn.Module, x: Tensor, **cond) -> int:
    """FLOPs per image of one forward pass without gradients (a teacher's or a sampler's call). Integers
    throughout: budgets are sums of them, and sums of integers are exact."""
    t = torch.full((len(x),), 0.5)
    with torch.no_grad():
        return flops(lambda: net(x, t, **cond)) // len(x)


def step_flops(net: torch.nn.Module, loss_fn: Callable, x0: Tensor) -> int:
    """FLOPs per image of one training step of loss_fn(net, x0, y=None, generator), everything it runs included
    (a teacher's forwards too). Counted on a copy: the network's own gradients are not touched."""
    net = copy.deepcopy(net).train().requires_grad_(True)
    return flops(lambda: loss_fn(net, x0, None, torch.Generator().manual_seed(0)).backward()) // len(x0)


def steps_to_reach(budget: int, cost: Callable[[int], int]) -> int:
    """The first number of steps whose summed cost (cost(k): FLOPs of step k, from 0) reaches the budget."""
    total, steps = 0, 0
    while total < budget:
        total += cost(steps)
        steps += 1
    return steps


def spent(steps: int, cost: Callable[[int], int]) -> int:
    """FLOPs of the first `steps` steps."""
    return sum(cost(k) for k in range(steps))


# --- intervals over seeds -------------------------------------------------------------------------------------------

def t_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean of the seeds' values and its t-interval m̄ ± t_{(1+level)/2, n−1} s / √n; one value has no interval."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": None, "values": list(values)}
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * s / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "values": list(values)}


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """The t-interval of the per-seed differences a_i − b_i (same seeds: a paired comparison)."""
    return t_interval([x - y for x, y in zip(a, b)], level)
