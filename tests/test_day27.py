"""Day 27: the navigation task's dynamics against the closed form (clipping, the box, collision and success), the
gymnasium Env against the batched rule and gymnasium's own checker; the expert's demonstrations; the training
windows' padding; the receding-horizon executor (H_a actions per plan, the observation history shifting); the
diffusion policy drawing through the shared DDIM sampler; the mixture NLL against torch.distributions; Wilson's
interval; the smoke run through the command line; and the README's tables."""

import json
import math

import pytest
import torch
from conftest import ROOT, load_day, smoke_run
from gymnasium.utils.env_checker import check_env

import common.samplers
from common.paths import DiscreteVP, uniform_grid
from common.predictions import clipped, denoiser

F64 = torch.float64
envs, experts, policies, rollout, tables = load_day(27, "envs", "experts", "policies", "rollout", "tables")
NAV = envs.NAV


def test_step_is_the_clipped_move_kept_in_the_box():
    """Within reach the agent lands on its target; beyond, it moves v_max towards it; never out of [-1, 1]²."""
    p = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.95, 0.0]], dtype=F64)
    a = torch.tensor([[0.52, 0.47], [0.5 + 3.0, 0.5 + 4.0], [2.0, 0.0]], dtype=F64)
    new = envs.step(p, a)
    torch.testing.assert_close(new[0], a[0])                                               # |a − p| < v_max
    torch.testing.assert_close(new[1], p[1] + NAV.v_max * torch.tensor([0.6, 0.8], dtype=F64))   # 3-4-5 direction
    torch.testing.assert_close(new[2], torch.tensor([1.0, 0.0], dtype=F64))                 # 0.95 + 0.06, boxed


def test_collision_and_success_regions():
    r, g = NAV.radius, torch.tensor(NAV.goal, dtype=F64)
    p = torch.tensor([[0.0, r - 1e-6], [0.0, r + 1e-6], [g[0] - NAV.goal_radius + 1e-6, g[1]],
                      [g[0] - NAV.goal_radius - 1e-6, g[1]]], dtype=F64)
    assert envs.collided(p).tolist() == [True, False, False, False]
    assert envs.reached(p).tolist() == [False, False, True, False]


def test_gymnasium_env_passes_the_checker_and_agrees_with_the_batched_rule():
    env = envs.NavEnv()
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    p, g = torch.tensor(obs)[None], torch.Generator().manual_seed(0)
    for _ in range(30):
        a = 2 * torch.rand(1, 2, generator=g, dtype=F64) - 1
        obs, reward, terminated, truncated, info = env.step(a[0].numpy())
        p = envs.step(p, a)
        assert torch.equal(torch.tensor(obs), p[0])
        assert terminated == bool(envs.collided(p)[0] or envs.reached(p)[0]) and reward == float(info["is_success"])
        if terminated:
            break


def test_expert_demonstrations_succeed_on_both_sides():
    demos = experts.demonstrate(200, seed=0)
    assert bool(demos.success.all())
    assert 0.4 < float((demos.side > 0).float().mean()) < 0.6
    for o, a, side in zip(demos.obs, demos.actions, demos.side):
        assert not bool(envs.collided(o).any()) and bool(envs.reached(envs.step(o[-1:], a[-1:]))[0])
        assert torch.sign(o[(o[:, 0] >= 0).nonzero()[0, 0], 1]) == side     # it passes where its coin said


def test_windows_pad_with_the_first_observation_and_the_last_action():
    """A demonstration of L = 5 steps, T_o = 2, H = 4: O_0 = (o_0, o_0), A_3 = (a_3, a_4, a_4, a_4)."""
    o = torch.arange(5, dtype=F64)[:, None].repeat(1, 2)
    a = 10 + o
    hist, chunks = rollout.windows([o], [a], T_o=2, H=4)
    assert hist.shape == (5, 2, 2) and chunks.shape == (5, 4, 2)
    assert hist[:, :, 0].tolist() == [[0, 0], [0, 1], [1, 2], [2, 3], [3, 4]]
    assert chunks[:, :, 0].tolist() == [[10, 11, 12, 13], [11, 12, 13, 14], [12, 13, 14, 14], [13, 14, 14, 14],
                                        [14, 14, 14, 14]]


@pytest.mark.parametrize("H_a", [1, 3, 5])
def test_executor_runs_h_a_actions_per_plan_and_shifts_the_history(H_a):
    """With v_max large the agent lands on each target: the trail is exactly the first H_a actions of each chunk,
    and the history at every plan holds the last T_o positions (the first repeated at the start)."""
    nav = envs.Nav(v_max=10.0, max_steps=12, radius=0.01, centre=(5.0, 5.0), goal=(9.0, 9.0))
    seen, planned = [], []

    def policy(history):
        seen.append(history.clone())
        k = len(planned)
        chunk = torch.stack([torch.full((len(history), 2), 0.002 * (40 * k + j), dtype=F64) for j in range(5)], 1)
        planned.append(chunk)
        return chunk
    p0 = torch.tensor([[-0.5, 0.2], [0.3, -0.1]], dtype=F64)
    e = rollout.rollout(policy, p0, T_o=2, H_a=H_a, nav=nav)
    assert len(planned) == e.plans == math.ceil(12 / H_a) and e.actions == 12
    executed = torch.cat([c[:, :H_a] for c in planned], 1)[:, :12]
    torch.testing.assert_close(e.positions[:, 1:], executed)
    trail = e.positions
    for k, history in enumerate(seen):
        now = k * H_a                                                     # the step the plan is made at
        torch.testing.assert_close(history, trail[:, [max(now - 1, 0), now]])


def test_sides_and_wilson():
    xy = torch.tensor([[[-0.5, 0.0], [-0.1, 0.3], [0.1, 0.35]], [[-0.5, 0.0], [-0.1, -0.3], [0.1, -0.2]],
                       [[-0.5, 0.0], [-0.4, 0.0], [-0.3, 0.0]]])
    assert rollout.sides(xy).tolist() == [1.0, -1.0, 0.0]
    lo, hi = rollout.wilson(5, 10)                                        # textbook values (Newcombe 1998)
    assert abs(lo - 0.2366) < 1e-4 and abs(hi - 0.7634) < 1e-4
    assert rollout.wilson(0, 20)[0] == 0.0 and 0.16 < rollout.wilson(0, 20)[1] < 0.17


def tiny_diffusion():
    torch.manual_seed(0)
    net = policies.ChunkDenoiser(policies.PolicyNetConfig("conv", horizon=4, obs_features=4, width=8, blocks=1))
    x = torch.rand(50, 4, 2, dtype=F64) * 2 - 1
    return net, policies.Normalizer(x[:, :2]), policies.Normalizer(x), DiscreteVP.named("cosine", 20)


def test_diffusion_policy_draws_with_the_shared_ddim_sampler(monkeypatch):
    """The policy's chunk is common.samplers.ddim's last state from the same noise (called directly here); and the
    policy does call that function (a spy wrapped around it records the grid it was given)."""
    net, obs_norm, act_norm, path = tiny_diffusion()
    history = torch.rand(3, 2, 2, dtype=F64)
    act = policies.DiffusionPolicy(net, obs_norm, act_norm, torch.Generator().manual_seed(5), path, steps=4)
    calls = []

    def spy(*args, **kw):
        calls.append(args[2])
        return common.samplers.ddim(*args, **kw)
    monkeypatch.setattr(policies, "ddim", spy)
    chunk = act(history)
    assert len(calls) == 1 and torch.equal(calls[0], uniform_grid(path, 4))
    noise = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(5))
    *_, a0 = common.samplers.ddim(clipped(denoiser(net, "eps", path), path), noise, uniform_grid(path, 4), path=path,
                                  obs=obs_norm(history).flatten(1))
    torch.testing.assert_close(chunk, act_norm.inverse(a0))
    assert bool((act_norm(chunk).abs() <= 1 + 1e-5).all())                # x̂0 clipped: chunks stay in the data range


def test_mixture_nll_against_torch_distributions():
    """K = 1: the diagonal Gaussian's log-density; K = 3: MixtureSameFamily's."""
    g = torch.Generator().manual_seed(0)
    a, mu, log_sigma = (torch.randn(6, 3, 8, generator=g, dtype=F64) for _ in range(3))
    a, logits = a[:, 0], torch.randn(6, 3, generator=g, dtype=F64)
    gauss = torch.distributions.Independent(torch.distributions.Normal(mu, log_sigma.exp()), 1)
    torch.testing.assert_close(policies.mixture_nll(logits[:, :1], mu[:, :1], log_sigma[:, :1], a),
                               -gauss.log_prob(a[:, None])[:, 0])
    mixture = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits), gauss)
    torch.testing.assert_close(policies.mixture_nll(logits, mu, log_sigma, a), -mixture.log_prob(a))


def test_normalizer_maps_the_data_range_onto_the_unit_box_and_back():
    x = torch.tensor([[0.2, -3.0], [0.6, 1.0], [0.4, 5.0]], dtype=F64)
    n = policies.Normalizer(x)
    torch.testing.assert_close(n(x).double(), torch.tensor([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]], dtype=F64))
    torch.testing.assert_close(n.inverse(n(x)), x, rtol=1e-6, atol=1e-6)


def test_smoke_run(tmp_path):
    result = smoke_run(27, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["policies"]) == {"diffusion", "mse", "mdn"} and m["headline"]
    assert m["policies"]["mse"]["episodes"] == m["config"]["seeds"] * m["config"]["episodes"]
    push = m["pusht"]
    assert set(push["policies"]) == {"expert", "diffusion", "mse", "mdn"}
    assert push["policies"]["diffusion"]["episodes"] == m["config"]["pusht_seeds"] * m["config"]["pusht_episodes"]
    for name in ("trajectories.png", "rollouts.gif", "diffusion_seed0/train_log.csv", "pusht_mdn_seed0/train_log.csv"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day27/results/metrics.json").read_text())
    readme = (ROOT / "day27/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
