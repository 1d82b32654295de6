"""Day 16's 2-D experiment: I-CFM and OT-CFM from N(0, I) to three toys, and how straight each learned flow is.

For every toy and pairing, a small MLP learns the velocity; from the same noise its ODE is solved by Euler steps:
on a fine grid for the trajectories and their straightness (common.metrics.straightness), and with 1, 2, 4, ...
steps for the sliced Wasserstein distance to the toy against the number of steps. "Steps needed" is the fewest
steps whose distance is within `tolerance` × that of the fine-grid solution: how many steps it takes to get
(nearly) as close to the toy as the flow itself can. The floor is the distance between two real samples of the same
size. On the 8 Gaussians, whose exact marginal velocity is known (common.denoisers.MixtureDenoiser on the linear
path), the learned fields are also compared with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from flows import PAIRINGS, PATH, cfm_loss

from common.denoisers import MixtureDenoiser
from common.loop import fit
from common.metrics import straightness
from common.nets import MLP, MLPConfig
from common.paths import uniform_grid
from common.predictions import Coefficients, denoiser, velocity
from common.samplers import euler, last
from common.toy2d import eight_gaussians, sample_toy, sliced_wasserstein
from common.training import TrainConfig


@dataclass
class ToyConfig(TrainConfig):
    toys: tuple[str, ...] = ("8gaussians", "moons", "checkerboard")
    pairings: tuple[str, ...] = ("icfm", "otcfm")
    mlp: MLPConfig = field(default_factory=lambda: MLPConfig(hidden=128, layers=3))
    n_train: int = 20_000           # points of each toy to train on
    n_eval: int = 2000              # noise points carried to data for every measurement
    euler_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    fine_steps: int = 100           # Euler steps of the trajectories that straightness is measured on
    tolerance: float = 1.25         # "reached": sliced Wasserstein ≤ tolerance × the fine-grid solution's

    def check(self) -> None:
        """The toy fields' constraints (TrainConfig's own are checked by common.config.validate)."""
        from common.config import require
        from common.toy2d import TOYS

        require(len(self.toys) >= 1 and set(self.toys) <= set(TOYS), "toys", f"choose some of {', '.join(TOYS)}")
        require(len(self.pairings) >= 1 and set(self.pairings) <= set(PAIRINGS), "pairings",
                f"choose some of {', '.join(PAIRINGS)}")
        require(self.tolerance >= 1, "tolerance", "choose a factor ≥ 1 of the fine-grid solution's distance")
        require(min(self.euler_steps, default=0) >= 1, "euler_steps", "choose step counts ≥ 1")
        require(self.fine_steps >= 2 and self.n_eval >= 2 and self.n_train >= 1, "fine_steps",
                "choose 2 or more fine steps and evaluation points")


def velocity_of(denoise):
    """(x, t) -> the velocity d_alpha x̂0 + d_sigma ε̂ on the linear path, for a denoiser."""
    def field(x, t):
        t = torch.as_tensor(t, dtype=torch.float64).expand(len(x))
        return velocity(denoise(x, t), Coefficients.at(PATH, t, x))
    return field


def exact_denoiser():
    """The 8 Gaussians' exact E[x0 | x_t] on the linear path, as a denoiser: its velocity is the true marginal."""
    mix = eight_gaussians(torch.float64)
    return denoiser(MixtureDenoiser(mix.means, mix.std, PATH), "x0", PATH)


@torch.no_grad()
def velocity_error(model, n: int, generator) -> float:
    """E ‖v_θ(x_t, t) − v(x_t, t)‖² / E ‖v(x_t, t)‖² over t ~ U(0, 1) and x_t from the 8 Gaussians' marginal."""
    x0 = eight_gaussians(torch.float64).sample(n, generator)
    t = torch.rand(n, generator=generator, dtype=torch.float64)
    xt = PATH.sample(x0, t, torch.randn(x0.shape, generator=generator, dtype=torch.float64))
    truth = velocity_of(exact_denoiser())(xt, t)
    learned = model(xt.float(), t.float()).double()
    return float((learned - truth).pow(2).sum(1).mean() / truth.pow(2).sum(1).mean())


def measure(denoise, x1: torch.Tensor, target: torch.Tensor, cfg: ToyConfig) -> dict:
    """Straightness on the fine grid, and the distance to the target after each number of Euler steps."""
    def distance(x):
        return sliced_wasserstein(x, target, generator=torch.Generator().manual_seed(0))
    ts = uniform_grid(PATH, cfg.fine_steps)
    states = [x1, *euler(denoise, x1, ts, path=PATH)]
    limit = distance(states[-1])
    sw = {n: distance(last(euler(denoise, x1, uniform_grid(PATH, n), path=PATH))) for n in cfg.euler_steps}
    reached = [n for n in cfg.euler_steps if sw[n] <= cfg.tolerance * limit]
    return {"straightness": round(straightness(states, ts), 4), "sw_fine": round(limit, 4),
            "sw": {str(n): round(d, 4) for n, d in sw.items()}, "steps_needed": reached[0] if reached else None,
            "states": states}


def run_toys(cfg: ToyConfig, run, seed: int) -> tuple[dict, dict]:
    """Train and measure every (toy, pairing); returns the measurements and the fine trajectories for figures."""
    results, paths = {}, {}
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(cfg.n_eval, 2, generator=g)
    for toy in cfg.toys:
        data = sample_toy(toy, cfg.n_train, g)
        target, other = sample_toy(toy, cfg.n_eval, g), sample_toy(toy, cfg.n_eval, g)
        floor = sliced_wasserstein(target, other, generator=torch.Generator().manual_seed(0))
        results[toy] = {"floor_sw": round(floor, 4)}
        for pairing in cfg.pairings:
            torch.manual_seed(seed)
            model, _ = fit(MLP(cfg.mlp), cfm_loss(pairing), data, None, replace(cfg, sample_every=0),
                           run.part(f"toy_{toy}_{pairing}"))
            model.eval()
            row = measure(denoiser(model, "velocity", PATH), x1, target, cfg)
            paths[toy, pairing] = row.pop("states")
            if toy == "8gaussians":
                row["velocity_error"] = round(velocity_error(model, cfg.n_eval, torch.Generator().manual_seed(1)), 4)
            results[toy][pairing] = row
            print(f"{toy} {pairing}: straightness {row['straightness']:.3f}, Euler steps needed "
                  f"{row['steps_needed']}, distance at 1 step {row['sw']['1']:.3f}, at {cfg.fine_steps} "
                  f"{row['sw_fine']:.3f} (floor {floor:.3f})")
    return results, paths
