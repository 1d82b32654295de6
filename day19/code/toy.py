"""Day 19's 2-D experiment: consistency models of 8 Gaussians, where the teacher's ODE is known exactly.

The exact denoiser E[x0 | x_t] of the mixture (common.denoisers) is the CD teacher; CT sees only samples. Both
are measured against the exact ODE map Φ (RK4 on the exact field, many steps) from the same noise:
  * the one-step map error E ‖f(ε, 1) − Φ(ε)‖, and the distance to the data (sliced Wasserstein) at 1 and 2 steps,
    beside the exact field's own Euler steps at the same number of calls;
  * the consistency error E ‖f(x_t, t) − Φ(ε)‖ along exact trajectories x_t, in bins of t.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from common.consistency import PATH, cd_loss, consistency, consistency_fn, ct_loss

from common.denoisers import MixtureDenoiser
from common.loop import fit
from common.nets import MLP, MLPConfig
from common.paths import uniform_grid
from common.predictions import denoiser
from common.samplers import euler, last, rk4
from common.toy2d import eight_gaussians, sliced_wasserstein
from common.training import TrainConfig


@dataclass
class ToyConfig(TrainConfig):
    mlp: MLPConfig = field(default_factory=lambda: MLPConfig(hidden=128, layers=3))
    n_train: int = 20_000          # CT's data points
    cd_levels: int = 18            # CD's N (Song et al. 2023 use 18 on CIFAR-10)
    ct_start: int = 10             # CT's curriculum: N from ct_start, doubling, up to ct_end (s0, s1)
    ct_end: int = 160
    n_eval: int = 2000             # noise points for every measurement
    exact_steps: int = 200         # RK4 steps of the exact map Φ
    bins: int = 10                 # t bins of the consistency error
    mid_t: float = 0.5             # the intermediate level of 2-step sampling

    def check(self) -> None:
        from common.config import require

        for key in ("n_train", "cd_levels", "ct_start", "n_eval", "exact_steps", "bins"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        require(self.ct_end >= self.ct_start, "ct_end", "choose ct_end ≥ ct_start")
        require(0 < self.mid_t < 1, "mid_t", "choose a level in (0, 1)")


ONE_STEP = torch.tensor([1.0, 0.0], dtype=torch.float64)


def two_step_grid(mid_t: float) -> torch.Tensor:
    return torch.tensor([1.0, mid_t, 0.0], dtype=torch.float64)


def consistency_errors(f, states: list[torch.Tensor], ts: torch.Tensor, bins: int) -> list[float]:
    """Mean ‖f(x_t, t) − x_0‖ over the exact trajectories' states, averaged within `bins` equal bins of t."""
    end = states[-1]
    sums, counts = torch.zeros(bins, dtype=torch.float64), torch.zeros(bins)
    for x, t in zip(states[:-1], ts[:-1]):                          # t = 0 is the end itself
        k = min(int(t * bins), bins - 1)
        with torch.no_grad():
            sums[k] += (f(x, t.expand(len(x))).double() - end).norm(dim=1).mean()
        counts[k] += 1
    return [round(float(s / c), 4) if c else None for s, c in zip(sums, counts)]


def run_toy(cfg: ToyConfig, run, seed: int) -> tuple[dict, dict]:
    """CD (exact teacher) and CT on 8 Gaussians; the measurements, and the one-step samples for the figure."""
    g = torch.Generator().manual_seed(seed)
    mixture = eight_gaussians(torch.float64)
    exact = denoiser(MixtureDenoiser(mixture.means, mixture.std, PATH), "x0", PATH)
    data = mixture.sample(cfg.n_train, g).float()
    target = mixture.sample(cfg.n_eval, g)
    noise = torch.randn(cfg.n_eval, 2, generator=g, dtype=torch.float64)
    fine = uniform_grid(PATH, cfg.exact_steps)
    states = [noise, *rk4(exact, noise, fine, path=PATH)]              # the exact trajectories; Φ(ε) = states[-1]

    def distance(x):
        return round(sliced_wasserstein(x.double(), target, generator=torch.Generator().manual_seed(0)), 4)

    rows = {"floor_sw": distance(mixture.sample(cfg.n_eval, g)), "exact_map_sw": distance(states[-1])}
    euler1 = last(euler(exact, noise, uniform_grid(PATH, 1), path=PATH))     # = E[x0 | x_1]: the mean, for every ε
    rows["exact-euler"] = {"sw": {"1": distance(euler1),
                                  "2": distance(last(euler(exact, noise, uniform_grid(PATH, 2), path=PATH)))},
                           "map_error": round(float((euler1 - states[-1]).norm(dim=1).mean()), 4)}
    train_cfg = replace(cfg, sample_every=0, bf16=False)
    losses = {"cd": cd_loss(exact, cfg.cd_levels), "ct": ct_loss(cfg.steps, cfg.ct_start, cfg.ct_end)}
    shown = {"exact ODE map": states[-1], "exact field, 1 Euler step": euler1}
    for name, loss in losses.items():
        torch.manual_seed(seed)
        model = fit(MLP(cfg.mlp), loss, data, None, train_cfg, run.part(f"toy_{name}"))[1].eval()
        f = consistency_fn(model)
        x1 = noise.float()
        one = last(consistency(denoiser(model, "velocity", PATH), x1, ONE_STEP))
        two = last(consistency(denoiser(model, "velocity", PATH), x1, two_step_grid(cfg.mid_t),
                               generator=torch.Generator().manual_seed(seed + 1)))
        rows[name] = {"sw": {"1": distance(one), "2": distance(two)},
                      "map_error": round(float((one.double() - states[-1]).norm(dim=1).mean()), 4),
                      "consistency_error": consistency_errors(f, [s.float() for s in states], fine, cfg.bins)}
        shown[f"{name.upper()}, 1 step"] = one
        print(f"8 Gaussians {name.upper()}: one-step map error {rows[name]['map_error']:.3f} "
              f"(exact field's 1 Euler step: {rows['exact-euler']['map_error']:.3f}), distance at 1 / 2 steps "
              f"{rows[name]['sw']['1']:.3f} / {rows[name]['sw']['2']:.3f} (floor {rows['floor_sw']:.3f})")
    return rows, shown
