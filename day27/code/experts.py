"""The scripted expert of the navigation task, and the demonstrations it records.

The expert flips a fair coin for the side (left: +y, right: −y, seen travelling towards +x), heads for a
via-point beside the obstacle, (0, ±via_y) plus N(0, via_noise²) per coordinate, then for the goal; each action
is the point v_max further along that line (so the dynamics of envs.step reach it exactly). The coin is
independent of the start: at every start both sides are equally likely, the bimodality that regression
averages away (Chi et al. 2023, §2 and Fig. 3).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from envs import NAV, Nav, collided, reached, starts, step

Tensor = torch.Tensor


@dataclass
class Demos:
    """Demonstrations: per episode its observations (L, 2) and actions (L, 2); side +1 left, −1 right."""
    obs: list[Tensor]
    actions: list[Tensor]
    side: Tensor                 # (n,)
    success: Tensor              # (n,) bool: reached the goal without a collision


def via_points(n: int, generator: torch.Generator, via_y: float = 0.45, noise: float = 0.03) -> tuple[Tensor, Tensor]:
    """(n,) sides ±1 with probability ½ each and (n, 2) via-points (0, side · via_y) + N(0, noise²)."""
    side = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0).double()
    via = torch.stack([torch.zeros(n, dtype=torch.float64), side * via_y], 1)
    return side, via + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def expert_action(p: Tensor, via: Tensor, passed: Tensor, nav: Nav = NAV) -> Tensor:
    """(N, 2) targets: v_max along the line to the via-point (until `passed`), then to the goal."""
    aim = torch.where(passed[:, None], p.new_tensor(nav.goal).expand_as(p), via)
    return step(p, aim, nav)                                     # the point v_max along the way, as the action


def demonstrate(n: int, seed: int, nav: Nav = NAV) -> Demos:
    """n seeded demonstrations, run side by side; each stops at the goal, a collision, or max_steps."""
    g = torch.Generator().manual_seed(seed)
    p = starts(n, g, nav)
    side, via = via_points(n, g)
    passed, done, hit = (torch.zeros(n, dtype=torch.bool) for _ in range(3))
    obs, actions, length = [], [], torch.full((n,), nav.max_steps)
    for tau in range(nav.max_steps):
        a = expert_action(p, via, passed, nav)
        obs.append(p), actions.append(a)
        p = step(p, a, nav)
        passed |= (p - via).norm(dim=1) < nav.v_max
        hit |= collided(p, nav) & ~done
        ended = (reached(p, nav) | collided(p, nav)) & ~done
        length[ended] = tau + 1
        done |= ended
        if bool(done.all()):
            break
    obs, actions = torch.stack(obs, 1), torch.stack(actions, 1)   # (n, steps, 2)
    return Demos([obs[i, : length[i]] for i in range(n)], [actions[i, : length[i]] for i in range(n)], side,
                 done & ~hit)
