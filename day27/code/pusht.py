"""Push-T through gym-pusht: a scripted expert that pushes the T onto its goal pose, and a chunked-policy runner.

The task (gym_pusht/envs/pusht.py, the Push-T of Chi et al. 2023 §5). A disk agent (radius 15) pushes a T inside
the walls of [5, 506]²; their contact is frictionless (the shapes' friction is 0: add_tee's body.friction sets
nothing). The action is the agent's target position in [0, 512]²; a PD law (k_p = 100, k_v = 20, critically
damped) drives the kinematic agent during 10 physics substeps of 0.01 s per control step (10 Hz), for at most 300
steps. The observation is (agent x, y, block x, y, block angle), the block's position being its body origin: the
middle of the bar's outer edge. The T is a bar [-60, 60] × [0, 30] and a stem [-15, 15] × [30, 120] (body frame);
its centre of gravity sits at (0, 45), the mean of the two rectangles' centroids, its mass is 1, its moment of
inertia 3000. Success: the T covers more than 95 % of the goal T at (256, 256, π/4); about 1.8 px of translation
or 1.7° of rotation alone already cost the 5 %. The space's damping is 0 (the share of velocity a body keeps per
second), so the block moves only while it is pushed: quasi-static.

The expert, a greedy pusher in pose space. A frictionless contact at boundary point c with inward normal n
transmits an impulse J along n; the block's centre of gravity p moves by J n / m and it turns by J (r × n) / I,
r = c − p. With the pose error e = (p* − p, ℓ (θ* − θ)) (ℓ px per radian weighs the angle as much as the
coverage it costs), the push ξ = (n / m, ℓ (r × n) / I) removes the most error at J* = ⟨e, ξ⟩ / |ξ|², leaving
|e|² − ⟨e, ξ⟩² / |ξ|² (a line search along ξ). So the expert picks the reachable contact with the largest gain
⟨e, ξ⟩₊² / |ξ|², goes around the block to a stand-off outside it (a shortest path over a ring of way-points), and
pushes: the agent aims J* (1/m + (r × n)² / I) past the touching position (at most 40 px), the normal travel
that J* needs, re-planned every step, until another contact gains twice as much. The PD law then makes the push
proportional: the agent's speed is k_p / k_v times that distance, so the block slows down as the error vanishes.
Deterministic: the seed fixes the reset, the expert draws nothing.

References: Chi, C. et al. (2023), "Diffusion Policy", arXiv:2303.04137; Florence, P. et al. (2021), "Implicit
Behavioral Cloning", arXiv:2109.00137 (the Push-T task); Mason, M. T. (1986), "Mechanics and planning of
manipulator pushing operations", IJRR 5(3).
"""
from __future__ import annotations

from dataclasses import dataclass

import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
import gymnasium as gym
import numpy as np
import shapely
import torch

GOAL = np.array([256.0, 256.0, np.pi / 4])                  # body origin x, y and angle of the goal T
OUTLINE = np.array([[-60, 0], [60, 0], [60, 30], [15, 30], [15, 120], [-15, 120], [-15, 30], [-60, 30]], float)
#         the T's boundary in the body frame, counter-clockwise (bar, then stem)
COG, MASS, INERTIA = np.array([0.0, 45.0]), 1.0, 3000.0      # the block's body (pusht.py add_tee)
AGENT_RADIUS, ARENA = 15.0, (22.0, 489.0)                  # the agent's centre stays inside the walls' inner faces
ELL = 60.0            # px per radian in the pose error: 1 px and 1/60 rad cost about the same coverage
STANDOFF = 8.0        # px between agent and block before a push starts
CLEARANCE = AGENT_RADIUS + 5.0                              # way-point paths keep the agent this far from the T
CARROT = 30.0         # px: the farthest target ahead of the agent while travelling (speed k_p / k_v · 30 px/s)
RING = 100.0          # way-points on a circle around the centre of gravity (the T reaches 77 px from it)


def make_env() -> gym.Env:
    return gym.make("gym_pusht/PushT-v0", obs_type="state")


def rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def to_world(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(K, 2) body-frame points -> world, for the block pose (origin x, y, angle)."""
    return pose[:2] + points @ rotation(pose[2]).T


def boundary_contacts(spacing: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame contact points along the T's edges (K, 2) and their inward normals (K, 2), keeping only those
    the agent can reach: its stand-off keeps CLEARANCE from the rest of the T (not in the inner corners)."""
    t_shape, points, normals = shapely.Polygon(OUTLINE), [], []
    for a, b in zip(OUTLINE, np.roll(OUTLINE, -1, 0)):
        d = (b - a) / np.linalg.norm(b - a)
        inward = np.array([-d[1], d[0]])                      # d turned +90°: inward on a counter-clockwise loop
        for s in np.arange(2.0, np.linalg.norm(b - a) - 1.0, spacing):
            c = a + s * d
            if t_shape.distance(shapely.Point(c - (AGENT_RADIUS + STANDOFF) * inward)) >= CLEARANCE:
                points.append(c), normals.append(inward)
    return np.array(points), np.array(normals)


CONTACTS, NORMALS = boundary_contacts()


def pose_error(block: np.ndarray) -> np.ndarray:
    """(3,) e = (p* − p, ℓ (θ* − θ)) with p the centre of gravity, the angle wrapped to (−π, π]."""
    p, p_goal = to_world(COG[None], block)[0], to_world(COG[None], GOAL)[0]
    dtheta = (GOAL[2] - block[2] + np.pi) % (2 * np.pi) - np.pi
    return np.array([*(p_goal - p), ELL * dtheta])


def push_plan(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per contact: the gain ⟨e, ξ⟩₊² / |ξ|² of its best push and the agent's travel J* s past touching (K,)."""
    n = NORMALS @ rotation(block[2]).T                                        # (K, 2) world normals
    r = to_world(CONTACTS, block) - to_world(COG[None], block)                # (K, 2) lever arms
    arm = r[:, 0] * n[:, 1] - r[:, 1] * n[:, 0]                               # r × n
    xi = np.concatenate([n / MASS, (ELL * arm / INERTIA)[:, None]], 1)        # (K, 3) pose change per unit impulse
    proj = np.clip(xi @ pose_error(block), 0, None)
    sq = (xi ** 2).sum(1)
    return proj ** 2 / sq, proj / sq * (1 / MASS + arm ** 2 / INERTIA)


def waypoint(agent: np.ndarray, target: np.ndarray, block: np.ndarray) -> np.ndarray | None:
    """The next point on a short collision-free way to `target`: straight if the line keeps CLEARANCE from the T,
    else through way-points on a ring around it (shortest path over the visibility graph, Bellman–Ford); None if
    there is no such way (a stand-off between the T and a wall)."""
    t_shape = shapely.Polygon(to_world(OUTLINE, block))
    near = shapely.Point(agent).distance(t_shape)
    if near < CLEARANCE - 2.0:                                # first step back out, away from the nearest point
        q = np.array(shapely.shortest_line(t_shape, shapely.Point(agent)).coords[0])
        return q + (agent - q) / max(near, 1e-6) * (CLEARANCE + 5)
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = to_world(COG[None], block) + RING * np.stack([np.cos(angles), np.sin(angles)], 1)
    nodes = np.concatenate([agent[None], np.clip(ring, *ARENA), target[None]])   # (N, 2): agent, ring, target
    i, j = np.triu_indices(len(nodes), 1)
    gap = shapely.distance(shapely.linestrings(np.stack([nodes[i], nodes[j]], 1)), t_shape)
    clear = gap > CLEARANCE - 2.0 * (i == 0)                  # the agent may start a little inside the margin
    w = np.full((len(nodes), len(nodes)), np.inf)
    w[i[clear], j[clear]] = w[j[clear], i[clear]] = np.linalg.norm(nodes[i] - nodes[j], axis=1)[clear]
    to_go = w[:, -1].copy()
    to_go[-1] = 0.0
    for _ in range(len(nodes)):                                # relax: to_go[a] = min_b w[a, b] + to_go[b]
        to_go = np.minimum(to_go, (w + to_go[None]).min(1))
    cost = w[0, 1:] + to_go[1:]
    return nodes[1 + np.argmin(cost)] if np.isfinite(cost).any() else None        # no way round


@dataclass
class Expert:
    """Call with an observation (5,), get the agent's target (2,). Keeps the contact it is pushing at."""
    contact: int = -1
    pushing: bool = False

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        agent, block = obs[:2], obs[2:]
        gain, travel = push_plan(block)
        n = NORMALS @ rotation(block[2]).T
        touch = to_world(CONTACTS, block) - AGENT_RADIUS * n                 # (K, 2) agent centres at contact
        standoff = touch - STANDOFF * n
        gain[~((standoff >= ARENA[0]) & (standoff <= ARENA[1])).all(1)] = 0.0    # beyond the walls
        if self.contact < 0 or gain[self.contact] < 0.5 * gain.max():      # hysteresis: switch for twice the gain
            k = next((k for k in np.argsort(-gain)[:30] if waypoint(agent, standoff[k], block) is not None), -1)
            self.contact, self.pushing = k, self.pushing and k == self.contact
        k = self.contact
        if k < 0:                                              # no stand-off reachable now: wait
            return agent
        if not self.pushing:
            if np.linalg.norm(agent - standoff[k]) > 2.0:
                d = waypoint(agent, standoff[k], block)
                if d is None:                                  # the way closed: stay, choose again next step
                    self.contact = -1
                    return agent
                d = d - agent                                  # a carrot at most CARROT px ahead: ≤ 15 px a step
                return np.clip(agent + d * min(1.0, CARROT / max(np.linalg.norm(d), 1e-6)), 0, 512)
            self.pushing = True
        return np.clip(touch[k] + min(travel[k], 40.0) * n[k], 0, 512)


def expert_episode(seed: int) -> tuple[np.ndarray, np.ndarray, bool, float]:
    """One expert episode from reset(seed): observations (L, 5) and actions (L, 2) float32, success, coverage."""
    env, expert = make_env(), Expert()
    obs, _ = env.reset(seed=seed)
    observations, actions, done, info = [], [], False, {"is_success": False, "coverage": 0.0}
    while not done:
        a = expert(obs)
        observations.append(obs), actions.append(a)
        obs, _, terminated, truncated, info = env.step(a)
        done = terminated or truncated
    env.close()
    return (np.array(observations, np.float32), np.array(actions, np.float32), bool(info["is_success"]),
            float(info["coverage"]))


def demonstrate(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, bool, float]]:
    """n expert episodes from the resets seed, seed + 1, ..., seed + n − 1 (successful or not: the caller keeps)."""
    return [expert_episode(seed + i) for i in range(n)]


def features(obs: torch.Tensor) -> torch.Tensor:
    """(..., 5) observations -> (..., 6) policy inputs (agent x, y, block x, y, cos θ, sin θ): the angle wraps at 2π,
    its cosine and sine do not, so nearby poses stay nearby for the network."""
    angle = obs[..., 4:]
    return torch.cat([obs[..., :4], angle.cos(), angle.sin()], -1)


@dataclass
class PushEpisodes:
    """Episodes run one after another: outcomes (N,) and the executor's counts."""
    success: torch.Tensor
    coverage: torch.Tensor       # at the last step
    length: torch.Tensor         # steps taken until success or the step limit
    plans: int                   # policy calls
    actions: int                 # actions executed


def evaluate(policy, n_episodes: int, seed: int, T_o: int, H_a: int) -> PushEpisodes:
    """Run `policy` ((1, T_o, 5) histories -> (1, H, 2) chunks, env units) from the resets seed, seed + 1, ...:
    execute H_a actions of each chunk, then re-plan (receding horizon, as rollout.rollout), until success or the
    step limit."""
    env = make_env()
    success, coverage, length, plans, executed = [], [], [], 0, 0
    for i in range(n_episodes):
        obs, _ = env.reset(seed=seed + i)
        history = torch.as_tensor(obs, dtype=torch.float64)[None].repeat(T_o, 1)   # (T_o, 5): first obs repeated
        done, steps, info = False, 0, {"is_success": False, "coverage": 0.0}
        while not done:
            chunk = policy(history[None])[0]                                      # (H, 2)
            plans += 1
            for a in chunk[:H_a]:
                obs, _, terminated, truncated, info = env.step(a.double().numpy())
                history = torch.cat([history[1:], torch.as_tensor(obs, dtype=torch.float64)[None]])
                steps, executed, done = steps + 1, executed + 1, terminated or truncated
                if done:
                    break
        success.append(bool(info["is_success"])), coverage.append(float(info["coverage"])), length.append(steps)
    env.close()
    return PushEpisodes(torch.tensor(success), torch.tensor(coverage), torch.tensor(length), plans, executed)
