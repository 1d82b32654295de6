"""Chunks and horizons: training windows cut from demonstrations, the receding-horizon executor, episode scores.

Notation of Chi et al. (2023, §3.1): at control step τ the policy sees the last T_o observations
O_τ = (o_{τ−T_o+1}, ..., o_τ), predicts H actions A_τ = (a_τ, ..., a_{τ+H−1}), executes the first H_a of them
and plans again (receding horizon). A training window is (O_τ, A_τ) for every τ of a demonstration; indices
before its start repeat the first observation and indices past its end repeat the last action, as their
SequenceSampler pads.

Success rates get Wilson's 95 % score interval (Wilson 1927, JASA 22:209).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from envs import NAV, Nav, collided, reached, step

Tensor = torch.Tensor


def windows(obs: list[Tensor], actions: list[Tensor], T_o: int, H: int) -> tuple[Tensor, Tensor]:
    """All (O_τ, A_τ) of the demonstrations: (W, T_o, d_o) observation histories and (W, H, d_a) chunks."""
    histories, chunks = [], []
    for o, a in zip(obs, actions):
        tau = torch.arange(len(o))
        past = (tau[:, None] + torch.arange(-T_o + 1, 1)).clamp(min=0)           # (L, T_o): first obs repeated
        ahead = (tau[:, None] + torch.arange(H)).clamp(max=len(a) - 1)            # (L, H): last action repeated
        histories.append(o[past]), chunks.append(a[ahead])
    return torch.cat(histories), torch.cat(chunks)


@dataclass
class Episodes:
    """N episodes run side by side: positions (N, steps + 1, 2), outcomes (N,), and the executor's counts."""
    positions: Tensor
    success: Tensor
    collision: Tensor
    length: Tensor               # steps taken until the episode ended
    plans: int                   # policy calls (one batched call plans for every running episode)
    actions: int                 # actions executed per running episode between its plans, summed over plans


def rollout(policy: Callable[[Tensor], Tensor], p0: Tensor, T_o: int, H_a: int, nav: Nav = NAV) -> Episodes:
    """Run `policy` ((n, T_o, 2) histories -> (n, H, 2) chunks) from the starts p0 (N, 2): execute H_a actions
    of each chunk, then re-plan, until every episode has reached the goal, collided or used max_steps."""
    n = len(p0)
    p, history = p0.clone(), p0[:, None].repeat(1, T_o, 1)        # (N, T_o, 2): the first obs repeated
    trail, done = [p], torch.zeros(n, dtype=torch.bool)
    success, hit, length = torch.zeros_like(done), torch.zeros_like(done), torch.full((n,), nav.max_steps)
    tau, plans, executed = 0, 0, 0
    while tau < nav.max_steps and not bool(done.all()):
        live = ~done
        chunk = policy(history[live]).to(p)                       # (live, H, 2)
        plans += 1
        for a in chunk[:, :H_a].unbind(1):
            if tau == nav.max_steps:
                break
            p = p.clone()
            p[live] = torch.where(done[live, None], p[live], step(p[live], a, nav))
            history = torch.cat([history[:, 1:], p[:, None]], 1)  # shift in the newest observation
            hit |= collided(p, nav) & ~done
            success |= reached(p, nav) & ~done & ~hit
            ended = (hit | success) & ~done
            length[ended], done = tau + 1, done | ended
            trail.append(p)
            tau, executed = tau + 1, executed + 1
    return Episodes(torch.stack(trail, 1), success, hit, length, plans, executed)


def sides(positions: Tensor, centre_x: float = NAV.centre[0]) -> Tensor:
    """(N,) the side each trajectory passes the obstacle on: +1 left (y > 0 where it first reaches x ≥ the
    centre's), −1 right, 0 if it never gets that far."""
    beyond = positions[..., 0] >= centre_x                        # (N, steps + 1)
    first = beyond.float().argmax(1)
    y = positions[torch.arange(len(positions)), first, 1]
    return torch.where(beyond.any(1), torch.sign(y), torch.zeros_like(y))


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson's score interval for a success probability from k successes in n trials."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, round(centre - half, 4)), min(1.0, round(centre + half, 4))]   # no −0.0 from rounding at k = 0


def score(eps: list[Episodes]) -> dict:
    """Success (with its Wilson interval, pooled over the seeds' episodes), collisions, and the side taken."""
    success = torch.cat([e.success for e in eps])
    side = torch.cat([sides(e.positions) for e in eps])
    n, k = len(success), int(success.sum())
    return {"episodes": n, "success": round(k / n, 4), "success_ci95": wilson(k, n),
            "success_per_seed": [round(float(e.success.float().mean()), 4) for e in eps],
            "collision": round(float(torch.cat([e.collision for e in eps]).float().mean()), 4),
            "left_share": round(float((side > 0).sum() / (side != 0).sum().clamp(min=1)), 4),
            "passed_share": round(float((side != 0).float().mean()), 4),
            "steps_to_goal": round(float(torch.cat([e.length[e.success] for e in eps]).float().mean()), 1)
            if k else None}
