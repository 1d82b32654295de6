"""Day 27's Push-T: the expert's model of the T (outline, centre of gravity, inertia) against the env's own pymunk
body, its push model (pose change per unit of travel along a contact normal) against the physics, its episodes
(deterministic given the seed, shapes and ranges, coverage far above the start), and the chunked-policy runner
(exactly H_a actions of each chunk executed, the observation history shifting) against a replay of the env."""

import numpy as np
import pytest
import shapely
import torch
from conftest import load_day
from gym_pusht.envs.pusht import pymunk_to_shapely

pusht = load_day(27, "pusht")


@pytest.mark.parametrize("seed", [0, 5])
def test_outline_centre_of_gravity_and_inertia_are_the_envs(seed):
    env = pusht.make_env()
    obs, _ = env.reset(seed=seed)
    block = env.unwrapped.block
    t_env = pymunk_to_shapely(block, block.shapes)
    t_ours = shapely.Polygon(pusht.to_world(pusht.OUTLINE, obs[2:]))
    assert t_env.symmetric_difference(t_ours).area < 1e-6 and t_ours.area == pytest.approx(6300)
    cog = block.local_to_world(block.center_of_gravity)
    np.testing.assert_allclose(pusht.to_world(pusht.COG[None], obs[2:])[0], cog)
    assert (block.mass, block.moment) == (pusht.MASS, pusht.INERTIA)


def test_pose_error_vanishes_at_the_goal_and_the_goal_has_full_coverage():
    env = pusht.make_env()
    env.reset(seed=0)
    block = env.unwrapped.block
    block.angle, block.position = pusht.GOAL[2], tuple(pusht.GOAL[:2])     # angle first: position is the origin's
    assert env.unwrapped._get_coverage() == pytest.approx(1.0)
    np.testing.assert_allclose(pusht.pose_error(pusht.GOAL + [0, 0, 2 * np.pi]), 0, atol=1e-9)
    e = pusht.pose_error(pusht.GOAL + [0, 0, 0.1])
    np.testing.assert_allclose(e[2], -0.1 * pusht.ELL)


def test_contacts_lie_on_the_boundary_with_inward_normals():
    t_shape = shapely.Polygon(pusht.OUTLINE)
    for c, n in zip(pusht.CONTACTS, pusht.NORMALS):
        assert t_shape.exterior.distance(shapely.Point(c)) < 1e-9
        assert t_shape.contains(shapely.Point(c + 0.5 * n)) and not t_shape.contains(shapely.Point(c - 0.5 * n))


@pytest.mark.parametrize("k", [0, 25, 40, 60, 80])
def test_a_short_push_moves_the_block_as_the_impulse_model_says(k):
    """The agent pushes `travel` px past touching at contact k; the centre of gravity moves J n / m and the T turns
    J (r × n) / I with J = travel / (1/m + (r × n)²/I) (frictionless contact, quasi-static block)."""
    env = pusht.make_env()
    obs, _ = env.reset(seed=0, options={"reset_to_state": [50, 50, 250, 250, 0.3]})
    block, travel = obs[2:].copy(), 4.0
    n = pusht.NORMALS[k] @ pusht.rotation(block[2]).T
    c = pusht.to_world(pusht.CONTACTS[k:k + 1], block)[0]
    touch = c - pusht.AGENT_RADIUS * n
    env.unwrapped.agent.position = tuple(touch - 3 * n)
    for _ in range(15):
        obs, *_ = env.step(touch + travel * n)
    cog = pusht.to_world(pusht.COG[None], block)[0]
    r = c - cog
    arm = r[0] * n[1] - r[1] * n[0]                               # r × n
    J = travel / (1 / pusht.MASS + arm ** 2 / pusht.INERTIA)
    predicted = np.array([*(J * n / pusht.MASS), pusht.ELL * J * arm / pusht.INERTIA])
    moved = np.array([*(pusht.to_world(pusht.COG[None], obs[2:])[0] - cog), pusht.ELL * (obs[4] - block[2])])
    assert np.linalg.norm(moved - predicted) < 0.15 * np.linalg.norm(predicted)


def test_expert_episode_is_deterministic_and_well_formed():
    obs, actions, success, coverage = pusht.expert_episode(3)
    again = pusht.expert_episode(3)
    assert np.array_equal(obs, again[0]) and np.array_equal(actions, again[1])
    assert coverage == pytest.approx(again[3], abs=1e-12)       # shapely's area: last-bit noise
    first, _ = pusht.make_env().reset(seed=3)
    assert obs.dtype == actions.dtype == np.float32 and obs.shape == (len(actions), 5) and actions.shape[1] == 2
    assert 1 <= len(obs) <= 300 and np.allclose(obs[0], first)
    assert actions.min() >= 0 and actions.max() <= 512 and obs[:, :4].min() >= 0 and obs[:, :4].max() <= 512
    assert 0 <= obs[:, 4].min() and obs[:, 4].max() < 2 * np.pi
    assert success == (coverage > 0.95)


def test_expert_pushes_the_t_onto_the_goal():
    """From each start (coverage well under a half) the expert ends above 0.9 coverage; demonstrate(n, seed) is
    expert_episode of seed, seed + 1, ..."""
    env = pusht.make_env()
    demos = pusht.demonstrate(3, seed=10)
    for i, (obs, _, _, coverage) in enumerate(demos):
        env.reset(seed=10 + i)
        start = env.unwrapped._get_coverage()
        assert start < 0.5 and coverage > 0.9 and coverage > start + 0.4
        assert np.array_equal(obs, pusht.expert_episode(10 + i)[0])


@pytest.mark.parametrize("H_a", [3, 8])
def test_evaluate_executes_h_a_actions_per_plan(H_a):
    """A stub policy whose chunk's j-th action is a distinct target: the histories it sees are those of a replay
    that executes actions 0..H_a−1 of each chunk, the first one the reset observation repeated T_o times."""
    T_o, H, seen = 2, 10, []
    chunk = torch.stack([torch.full((H,), 60.0) + 30 * torch.arange(H), torch.full((H,), 470.0)], 1)   # (H, 2)

    def stub(history):
        seen.append(history.clone())
        return chunk[None].double()

    ep = pusht.evaluate(stub, n_episodes=1, seed=7, T_o=T_o, H_a=H_a)
    L = int(ep.length[0])
    assert ep.actions == L and ep.plans == len(seen) == -(-L // H_a)
    assert all(h.shape == (1, T_o, 5) for h in seen)
    env = pusht.make_env()
    obs, _ = env.reset(seed=7)
    replay = [obs]
    for tau in range(L - 1):
        replay.append(env.step(chunk[tau % H_a].double().numpy())[0])
    assert torch.equal(seen[0][0], torch.as_tensor(np.stack([obs] * T_o)))
    for p, history in enumerate(seen[1:], start=1):
        np.testing.assert_array_equal(history[0].numpy(), np.stack(replay[p * H_a - T_o + 1: p * H_a + 1]))


def test_features_replace_the_wrapping_angle_by_its_cosine_and_sine():
    """Angles a full turn apart give the same input; the positions pass through unchanged."""
    obs = torch.tensor([[100.0, 200.0, 300.0, 400.0, 0.3], [100.0, 200.0, 300.0, 400.0, 0.3 + 2 * np.pi]],
                       dtype=torch.float64)
    f = pusht.features(obs)
    assert f.shape == (2, 6) and torch.equal(f[:, :4], obs[:, :4])
    torch.testing.assert_close(f[0], f[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(f[0, 4:], torch.tensor([np.cos(0.3), np.sin(0.3)], dtype=torch.float64))
