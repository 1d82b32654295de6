"""The navigation task: a point agent goes around a disk obstacle to a goal, left or right, as it likes.

    p_{τ+1} = box( p_τ + clip(a_τ − p_τ, v_max) )        clip(d, v) = d · min(1, v / |d|),  box: clamp to [-1, 1]²

The action a_τ is a target position (Chi et al. 2023 also command positions); the agent moves towards it by at
most v_max per step. An episode succeeds when |p − goal| < goal_radius within max_steps steps without ever
entering the obstacle (|p − centre| < radius), and ends at once on either event. The obstacle sits on the line
from the start region to the goal, so every good path passes it on one side or the other: the demonstrations'
two modes.

`step` is the batched rule in torch (N agents at once, for fast evaluation); `NavEnv` is the same rule behind
the gymnasium API, one agent, numpy in and out (the tests check that the two agree).

Reference: Chi, C. et al. (2023), "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion",
arXiv:2303.04137 (§4: position control, receding horizon).
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Nav:
    """The task's geometry (in the [-1, 1]² workspace)."""
    centre: tuple[float, float] = (0.0, 0.0)     # the obstacle
    radius: float = 0.3
    goal: tuple[float, float] = (0.8, 0.0)
    goal_radius: float = 0.08
    start_x: float = -0.8                        # starts at (start_x, y), y uniform in ±start_spread
    start_spread: float = 0.15
    v_max: float = 0.06                          # the largest move in one step
    max_steps: int = 80


NAV = Nav()


def step(p: Tensor, a: Tensor, nav: Nav = NAV) -> Tensor:
    """(N, 2) positions and (N, 2) target actions -> the next positions: p + clip(a − p, v_max), kept in the box."""
    d = a - p
    norm = d.norm(dim=-1, keepdim=True)
    scale = torch.clamp(nav.v_max / norm.clamp(min=1e-12), max=1.0)        # min(1, v_max / |a − p|)
    return (p + d * scale).clamp(-1, 1)


def collided(p: Tensor, nav: Nav = NAV) -> Tensor:
    """(N,) bool: inside the obstacle."""
    return (p - p.new_tensor(nav.centre)).norm(dim=-1) < nav.radius


def reached(p: Tensor, nav: Nav = NAV) -> Tensor:
    """(N,) bool: within goal_radius of the goal."""
    return (p - p.new_tensor(nav.goal)).norm(dim=-1) < nav.goal_radius


def starts(n: int, generator: torch.Generator, nav: Nav = NAV) -> Tensor:
    """(n, 2) start positions, x = start_x, y uniform in ±start_spread."""
    y = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * nav.start_spread
    return torch.stack([torch.full_like(y, nav.start_x), y], dim=1)


class NavEnv(gym.Env):
    """One agent of the navigation task behind the gymnasium API; obs = agent (x, y), action = target (x, y)."""
    metadata = {"render_modes": []}

    def __init__(self, nav: Nav = NAV):
        self.nav = nav
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float64)
        self.p, self.steps = np.zeros(2), 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        g = torch.Generator().manual_seed(int(self.np_random.integers(2 ** 62)))
        self.p, self.steps = starts(1, g, self.nav)[0].numpy(), 0
        return self.p.copy(), {}

    def step(self, action):
        p = step(torch.as_tensor(self.p)[None], torch.as_tensor(action, dtype=torch.float64)[None], self.nav)
        self.p, self.steps = p[0].numpy(), self.steps + 1
        hit, success = bool(collided(p, self.nav)[0]), bool(reached(p, self.nav)[0])
        info = {"is_success": success and not hit, "collision": hit}
        return self.p.copy(), float(info["is_success"]), hit or success, self.steps >= self.nav.max_steps, info
