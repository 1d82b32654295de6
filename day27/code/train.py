"""Day 27 — diffusion policy: denoise an action chunk given the last observations, execute part, re-plan.

The navigation task (envs.py): a point agent passes a disk obstacle on the left or the right, the scripted
expert picking either side with probability ½ (experts.py). Three policies learn from the same windows
(O_τ, A_τ) of the demonstrations (T_o = 2 observations, chunks of H actions, rollout.py): diffusion policy (a
network predicting ε on the cosine DiscreteVP path, sampled by DDIM at few steps; an MLP on the cpu preset, Chi et
al.'s FiLM-conditioned temporal convolution with --net=conv),
MSE regression of the chunk, and a K-component mixture density network (policies.py). Each is trained with
`seeds` seeds and each seed is evaluated on the same `episodes` seeded starts, batched: success with its
Wilson interval, collisions, the share of episodes passing on the left; latency per action at batch 1 and
batched. Ablations on seed 0 of the diffusion policy: DDIM steps and the executed horizon H_a.

Push-T (gym-pusht, pusht.py): the same three policies learn from a scripted pusher's successful episodes (the block's
angle as cos and sin) and run on reset seeds the demonstrations never used, one episode after another: success
(coverage of the goal T > 95 %), final coverage, next to the expert's own on the same resets.

References: Chi et al. 2023 (arXiv:2303.04137); Song, Meng & Ermon 2021 (DDIM, arXiv:2010.02502);
Bishop 1994 (mixture density networks, NCRG/94/004).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from envs import NAV, starts
from experts import demonstrate
from figures import outcomes, plot_trajectories, save_rollout_gif
import pusht
from policies import (ChunkDenoiser, ChunkMixture, ChunkRegressor, DiffusionPolicy, MixturePolicy, Normalizer,
                      PolicyNetConfig, RegressionPolicy, diffusion_loss, mdn_loss, mse_loss)
from rollout import rollout, score, wilson, windows

from common.config import cli, parse_args, require
from common.loop import fit
from common.paths import DiscreteVP
from common.run import Run, write_metrics
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
POLICIES = ("diffusion", "mse", "mdn")


@dataclass
class Config(TrainConfig):                 # the recipe of every policy (steps: optimiser steps per policy)
    n_demos: int = 200                     # expert demonstrations
    T_o: int = 2                           # observations the policy sees
    H: int = 16                            # actions per predicted chunk
    H_a: int = 8                           # actions executed before re-planning
    net: str = "mlp"                       # diffusion's network: mlp, or conv (Chi et al.'s; ~6x slower a step)
    width: int = 64
    blocks: int = 3
    components: int = 5                    # K of the mixture density network
    levels: int = 100                      # noise levels of the cosine DiscreteVP path
    ddim_steps: int = 10                   # DDIM steps per chunk
    seeds: int = 3                         # training seeds of each policy
    episodes: int = 100                    # evaluation episodes per trained policy (the same starts for all)
    ablate_steps: tuple[int, ...] = (1, 3)       # more DDIM step counts, diffusion seed 0
    ablate_H_a: tuple[int, ...] = (1, 4, 16)     # more executed horizons, diffusion seed 0
    latency_repeats: int = 20              # timed policy calls per latency measurement
    n_show: int = 40                       # trajectories per panel of trajectories.png; GIF: 4
    pusht_demos: int = 100                 # Push-T expert episodes (the successful ones are kept); 0: no Push-T
    pusht_steps: int = 3000                # optimiser steps of each Push-T policy
    pusht_seeds: int = 1                   # training seeds of each Push-T policy
    pusht_episodes: int = 50               # Push-T evaluation episodes (resets the demonstrations never used)

    def check(self) -> None:
        require(self.net in ("conv", "mlp"), "net", "choose conv or mlp")
        require(1 <= self.H_a <= self.H and all(1 <= h <= self.H for h in self.ablate_H_a), "H_a",
                f"execute 1..H={self.H} actions per plan")
        require(self.T_o >= 1 and self.n_demos >= 2 and self.seeds >= 1 and self.episodes >= 1, "seeds",
                "choose T_o, seeds, episodes ≥ 1 and n_demos ≥ 2")
        require(self.width % 8 == 0, "width", "choose a multiple of 8 (GroupNorm of 8 groups)")
        require(1 <= self.ddim_steps <= self.levels and all(1 <= s <= self.levels for s in self.ablate_steps),
                "ddim_steps", f"choose 1..levels={self.levels} steps")
        require(self.pusht_demos == 0 or min(self.pusht_steps, self.pusht_seeds, self.pusht_episodes) >= 1,
                "pusht_steps", "choose pusht_steps, pusht_seeds and pusht_episodes ≥ 1 (or pusht_demos=0: no Push-T)")
        require(self.pusht_demos == 0 or self.pusht_steps >= self.warmup, "pusht_steps",
                f"choose at least warmup={self.warmup} steps")


PRESETS = {
    "smoke": Config(n_demos=20, steps=20, batch_size=64, lr=1e-3, warmup=5, ema_decay=0.9, bf16=False,
                    log_every=10, sample_every=0, ckpt_every=30, width=16, blocks=1, components=2, levels=20,
                    ddim_steps=3, seeds=1, episodes=6, ablate_steps=(1,), ablate_H_a=(16,), latency_repeats=1,
                    n_show=4, pusht_demos=2, pusht_steps=10, pusht_episodes=1),
    "cpu": Config(steps=4000, batch_size=256, lr=1e-3, warmup=100, ema_decay=0.995, bf16=False, log_every=100,
                  sample_every=0, ckpt_every=1500),
    "gpu": Config(n_demos=1000, steps=20_000, batch_size=256, lr=1e-4, warmup=500, ema_decay=0.999,
                  sample_every=0, ckpt_every=5000, net="conv", width=256, blocks=4, seeds=3, episodes=500),
}

# --- training ---------------------------------------------------------------------------------------------


def build(name: str, cfg: Config, obs_dim: int = 2) -> torch.nn.Module:
    net_cfg = PolicyNetConfig(cfg.net, cfg.H, obs_dim * cfg.T_o, cfg.width, cfg.blocks, cfg.components)
    return {"diffusion": ChunkDenoiser, "mse": ChunkRegressor, "mdn": ChunkMixture}[name](net_cfg)


def train(name: str, seed: int, data: tuple, cfg: Config, run: Run, path: DiscreteVP,
          task: str = "") -> tuple[torch.nn.Module, float]:
    """Fit policy `name` with training seed `seed` (its model init and its batches) on the windows `data` (chunks,
    flat observation histories); its EMA net and seconds."""
    part, cfg = run.part(f"{task}{name}_seed{seed}"), replace(cfg, seed=seed)
    torch.manual_seed(seed)
    loss = {"diffusion": diffusion_loss(path), "mse": mse_loss, "mdn": mdn_loss}[name]
    _, ema = fit(build(name, cfg, data[1].shape[1] // cfg.T_o), loss, *data, cfg, part)
    return ema.eval(), part.train_seconds


def policy(name: str, net, norms: tuple, seed: int, path: DiscreteVP, steps: int):
    g = torch.Generator().manual_seed(10_000 + seed)             # the policy's own draws (noise, components)
    if name == "diffusion":
        return DiffusionPolicy(net, *norms, g, path, steps)
    return {"mse": RegressionPolicy, "mdn": MixturePolicy}[name](net, *norms, g)


def latency_ms(act, history: torch.Tensor, repeats: int) -> float:
    """Milliseconds per policy call (one chunk for every row of `history`), the median of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        act(history)
        times.append(time.perf_counter() - start)
    return round(1000 * sorted(times)[len(times) // 2], 3)


# --- Push-T -------------------------------------------------------------------------------------------------------

def push_score(eps: list[pusht.PushEpisodes]) -> dict:
    """Success pooled over the seeds' episodes (Wilson interval), per seed; mean final coverage and episode length."""
    success, coverage = torch.cat([e.success for e in eps]), torch.cat([e.coverage for e in eps])
    k, n = int(success.sum()), len(success)
    return {"episodes": n, "success": round(k / n, 4), "success_ci95": wilson(k, n),
            "success_per_seed": [round(float(e.success.float().mean()), 4) for e in eps],
            "coverage": round(float(coverage.mean()), 4),
            "steps": round(float(torch.cat([e.length for e in eps]).float().mean()), 1)}


def push_t(cfg: Config, run: Run, path: DiscreteVP) -> dict:
    """The three policies on Push-T: trained on the expert's successful episodes, each run on the same
    pusht_episodes resets (seeds from 100,000: never a demonstration's), next to the expert on those resets."""
    start = time.time()
    demos = pusht.demonstrate(cfg.pusht_demos, cfg.seed)
    kept = [(torch.as_tensor(o), torch.as_tensor(a)) for o, a, ok, _ in demos if ok]
    histories, chunks = windows([pusht.features(o) for o, _ in kept], [a for _, a in kept], cfg.T_o, cfg.H)
    norms = Normalizer(histories), Normalizer(chunks)
    data = norms[1](chunks), norms[0](histories).flatten(1)
    demo_seconds = time.time() - start
    print(f"Push-T: {len(kept)} of {cfg.pusht_demos} expert episodes succeed, {len(chunks)} windows "
          f"({demo_seconds:.0f} s)")
    first = 100_000 + cfg.seed
    expert = [pusht.expert_episode(first + i) for i in range(cfg.pusht_episodes)]   # (obs, actions, ok, coverage)
    rows = {"expert": push_score([pusht.PushEpisodes(torch.tensor([e[2] for e in expert]),
                                                     torch.tensor([e[3] for e in expert]),
                                                     torch.tensor([len(e[0]) for e in expert]), 0, 0)])}
    pcfg = replace(cfg, steps=cfg.pusht_steps)
    for name in POLICIES:
        runs, seconds = [], []
        for s in range(cfg.pusht_seeds):
            net, sec = train(name, cfg.seed + s, data, pcfg, run, path, task="pusht_")
            act = policy(name, net, norms, s, path, cfg.ddim_steps)
            runs.append(pusht.evaluate(lambda h, act=act: act(pusht.features(h)), cfg.pusht_episodes, first,
                                       cfg.T_o, cfg.H_a))
            seconds.append(sec)
        rows[name] = push_score(runs) | {"train_seconds": round(sum(seconds) / len(seconds), 1)}
        print(f"Push-T {name}: success {rows[name]['success']:.0%}, coverage {rows[name]['coverage']:.2f}")
    return {"demos": {"n": cfg.pusht_demos, "kept": len(kept), "windows": len(chunks),
                      "seconds": round(demo_seconds, 1),
                      "coverage": round(sum(c for *_, c in demos) / len(demos), 4)}, "policies": rows}


def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, f"nav-expert-{cfg.n_demos}")
    # --- demonstrations -> normalised training windows (O_τ, A_τ)
    demos = demonstrate(cfg.n_demos, cfg.seed)
    histories, chunks = windows(demos.obs, demos.actions, cfg.T_o, cfg.H)     # (W, T_o, 2), (W, H, 2)
    norms = Normalizer(histories), Normalizer(chunks)
    data = norms[1](chunks), norms[0](histories).flatten(1)
    path = DiscreteVP.named("cosine", cfg.levels)
    print(f"{cfg.n_demos} demonstrations ({float(demos.success.float().mean()):.0%} succeed, "
          f"{float((demos.side > 0).float().mean()):.0%} left), {len(chunks)} windows")
    # --- train every policy with every seed, evaluate each on the same seeded starts
    p0 = starts(cfg.episodes, torch.Generator().manual_seed(cfg.seed + 12345))
    rows, nets, episodes = {}, {}, {}
    for name in POLICIES:
        runs, seconds = [], []
        for s in range(cfg.seeds):
            nets[name, s], sec = train(name, cfg.seed + s, data, cfg, run, path)
            runs.append(rollout(policy(name, nets[name, s], norms, s, path, cfg.ddim_steps), p0, cfg.T_o, cfg.H_a))
            seconds.append(sec)
        episodes[name] = runs[0]
        act = policy(name, nets[name, 0], norms, 0, path, cfg.ddim_steps)
        batch1, batched = latency_ms(act, p0[:1, None].repeat(1, cfg.T_o, 1), cfg.latency_repeats), \
            latency_ms(act, p0[:, None].repeat(1, cfg.T_o, 1), cfg.latency_repeats)
        rows[name] = {**score(runs), "train_seconds": round(sum(seconds) / len(seconds), 1),
                      "ms_per_action_batch1": round(batch1 / cfg.H_a, 3),
                      "ms_per_action_batched": round(batched / cfg.H_a / cfg.episodes, 4),
                      "ms_per_plan_batch1": batch1}
        print(f"{name}: success {rows[name]['success']:.0%} {rows[name]['success_ci95']}, collisions "
              f"{rows[name]['collision']:.0%}, left {rows[name]['left_share']:.0%}")
    # --- ablations on seed 0 of the diffusion policy: DDIM steps, executed horizon H_a
    steps_rows, horizon_rows = {}, {}
    for n in sorted({*cfg.ablate_steps, cfg.ddim_steps}):
        act = policy("diffusion", nets["diffusion", 0], norms, 0, path, n)
        steps_rows[n] = {**score([rollout(act, p0, cfg.T_o, cfg.H_a)]),
                         "ms_per_plan_batch1": latency_ms(act, p0[:1, None].repeat(1, cfg.T_o, 1), cfg.latency_repeats)}
    for h in sorted({*cfg.ablate_H_a, cfg.H_a}):
        e = rollout(policy("diffusion", nets["diffusion", 0], norms, 0, path, cfg.ddim_steps), p0, cfg.T_o, h)
        horizon_rows[h] = {**score([e]), "plans_per_episode": round(float((e.length / h).ceil().mean()), 1)}
    # --- outputs
    out = run.out
    shown = slice(0, cfg.n_show)
    panels = {"demonstrations": ([o.numpy() for o in demos.obs[shown]], ["success"] * len(demos.obs[shown]))}
    for name, e in episodes.items():
        panels[name] = ([xy[: n + 1].numpy() for xy, n in zip(e.positions[shown], e.length[shown])],
                        outcomes(e.success[shown], e.collision[shown]))
    plot_trajectories(panels, out / "trajectories.png")
    save_rollout_gif({name: e.positions[:4].float() for name, e in episodes.items()}, out / "rollouts.gif")
    push = push_t(cfg, run, path) if cfg.pusht_demos else None
    d, m, b = rows["diffusion"], rows["mse"], rows["mdn"]
    metrics = {"task": {"nav": vars(NAV)},
               "demos": {"n": cfg.n_demos, "windows": len(chunks), "success": float(demos.success.float().mean()),
                         "left_share": float((demos.side > 0).float().mean())},
               "policies": rows, "ablation_ddim_steps": steps_rows, "ablation_H_a": horizon_rows, "pusht": push,
               "headline": f"bimodal navigation, {cfg.seeds}×{cfg.episodes} episodes: diffusion policy "
                           f"{d['success']:.0%} success ({d['left_share']:.0%} left), MSE {m['success']:.0%} "
                           f"({m['collision']:.0%} collide), MDN {b['success']:.0%}"
                           + (f"; Push-T: diffusion {push['policies']['diffusion']['success']:.0%} success (coverage "
                              f"{push['policies']['diffusion']['coverage']:.2f}), expert "
                              f"{push['policies']['expert']['success']:.0%}" if push else "")}
    write_metrics(out, metrics, cfg, run, time.time() - start)
    print(metrics["headline"])


if __name__ == "__main__":
    cli(main)
