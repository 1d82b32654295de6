"""Day 18's 2-D experiment: 1-, 2- and 3-rectified flows from N(0, I) to a toy, each measured the same way.

Round 1 is conditional flow matching on independent pairs; round k + 1 starts from round k's network and trains on
`n_pairs` fixed pairs (x1, Φ_k(x1)) made by round k's ODE (reflow.reflow_pairs). For every round, from the same
noise: straightness (common.metrics.straightness) on a fine Euler grid, the coupling cost E ‖x1 − x̂0‖² of its map,
and the sliced Wasserstein distance to the toy after 1, 2, 4, ... Euler steps and on the fine grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from common.reflow import PATH, coupling_cost, independent_loss, paired_loss, reflow_pairs, trainable_copy

from common.loop import fit
from common.metrics import straightness
from common.nets import MLP, MLPConfig
from common.paths import uniform_grid
from common.predictions import denoiser
from common.samplers import euler, last
from common.toy2d import sample_toy, sliced_wasserstein
from common.training import TrainConfig


@dataclass
class ToyConfig(TrainConfig):
    toys: tuple[str, ...] = ("8gaussians", "moons")
    rounds: int = 3                  # 1-RF, then rounds − 1 reflows
    mlp: MLPConfig = field(default_factory=lambda: MLPConfig(hidden=128, layers=3))
    n_train: int = 20_000            # points of each toy for 1-RF
    n_pairs: int = 20_000            # reflow pairs per round
    pair_steps: int = 50             # Heun steps that make the pairs (99 calls)
    n_eval: int = 2000               # noise points carried to data for every measurement
    euler_steps: tuple[int, ...] = (1, 2, 4, 8)
    fine_steps: int = 100            # Euler steps of the trajectories that straightness is measured on

    def check(self) -> None:
        """The 2-D fields' constraints (TrainConfig's own are checked by common.config.validate)."""
        from common.config import require
        from common.toy2d import TOYS

        require(len(self.toys) >= 1 and set(self.toys) <= set(TOYS), "toys", f"choose some of {', '.join(TOYS)}")
        require(self.rounds >= 2, "rounds", "choose 2 or more (1-RF and at least one reflow)")
        require(min(self.euler_steps, default=0) >= 1, "euler_steps", "choose step counts ≥ 1")
        for key in ("n_train", "n_pairs", "pair_steps"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        require(self.fine_steps >= 2 and self.n_eval >= 2, "fine_steps", "choose 2 or more fine steps and points")


def measure(denoise, x1: torch.Tensor, target: torch.Tensor, cfg: ToyConfig) -> dict:
    """Straightness and coupling cost on the fine grid; the distance to the target after each number of steps."""
    def distance(x):
        return round(sliced_wasserstein(x, target, generator=torch.Generator().manual_seed(0)), 4)
    ts = uniform_grid(PATH, cfg.fine_steps)
    states = [x1, *euler(denoise, x1, ts, path=PATH)]
    return {"straightness": round(straightness(states, ts), 4),
            "coupling_cost": round(coupling_cost(states[-1], x1), 4), "sw_fine": distance(states[-1]),
            "sw": {str(n): distance(last(euler(denoise, x1, uniform_grid(PATH, n), path=PATH)))
                   for n in cfg.euler_steps}, "states": states}


def rectify(toy: str, cfg: ToyConfig, run, seed: int, g: torch.Generator) -> tuple[dict, dict]:
    """Rounds 1..cfg.rounds on one toy: the measurements of each, and its fine trajectories for the figure."""
    data = sample_toy(toy, cfg.n_train, g)
    target, other = sample_toy(toy, cfg.n_eval, g), sample_toy(toy, cfg.n_eval, g)
    x1 = torch.randn(cfg.n_eval, 2, generator=g)
    rows = {"floor_sw": round(sliced_wasserstein(target, other, generator=torch.Generator().manual_seed(0)), 4)}
    trajectories = {}
    train_cfg = replace(cfg, sample_every=0, bf16=False)
    for k in range(1, cfg.rounds + 1):
        torch.manual_seed(seed + k)         # the first round's initial weights (later rounds start from the last)
        if k == 1:
            model = fit(MLP(cfg.mlp), independent_loss, data, None, train_cfg, run.part(f"toy_{toy}_1rf"))[1]
        else:  # pairs from round k − 1's ODE, fresh noise; round k starts from round k − 1's weights
            noise = torch.randn(cfg.n_pairs, 2, generator=g)
            pairs = reflow_pairs(denoiser(model, "velocity", PATH), noise, cfg.pair_steps, bf16=False)
            model = fit(trainable_copy(model), paired_loss, pairs, noise, train_cfg, run.part(f"toy_{toy}_{k}rf"))[1]
        model.eval()
        row = measure(denoiser(model, "velocity", PATH), x1, target, cfg)
        trajectories[k] = row.pop("states")
        rows[f"{k}-rf"] = row
        print(f"{toy} {k}-RF: straightness {row['straightness']:.3f}, coupling cost {row['coupling_cost']:.3f}, "
              f"distance at 1 step {row['sw'][str(cfg.euler_steps[0])]:.3f} (fine {row['sw_fine']:.3f}, "
              f"floor {rows['floor_sw']:.3f})")
    return rows, trajectories


def run_toys(cfg: ToyConfig, run, seed: int) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    results, trajectories = {}, {}
    for toy in cfg.toys:
        results[toy], trajectories[toy] = rectify(toy, cfg, run, seed, g)
    return results, trajectories
