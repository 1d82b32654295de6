"""Day 17's 2-D experiments, on the continuous VP path alpha = cos(πt/2), sigma = sin(πt/2) (the T → ∞ limit of
day 6's cosine schedule, smooth in t, with p_1 = N(0, I) exactly):

1. orders    data N(mu, s² I), whose probability-flow map is known: (x_t − alpha_t mu) / sqrt(alpha_t² s² + sigma_t²)
             stays constant along a solution. Euler, Heun and RK4 carry noise to t = t_end > 0 at several step
             counts; the slope of log error against log steps is each method's order (1, 2, 4).
2. identity  the 8 Gaussians' exact denoiser drives the ODE, the 2×2 Jacobian's trace is exact, and
             log p_{t0}(x) from the change of variables is compared with the closed form (the mixture noised to t0).
3. learned   a small MLP trained on the 8 Gaussians (v target): its ODE log-likelihood of held-out points against
             the true log-density; their mean difference is KL(data ‖ model) plus the solver's error.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from likelihood import drift, hutchinson, log_density, rademacher

from common.denoisers import MixtureDenoiser
from common.diffusion import diffusion_loss
from common.loop import fit
from common.nets import MLP, MLPConfig
from common.paths import VPCosine
from common.predictions import denoiser
from common.samplers import euler, heun, last, rk4
from common.toy2d import eight_gaussians
from common.training import TrainConfig

F64 = torch.float64
PATH = VPCosine()
SOLVERS = {"euler": euler, "heun": heun, "rk4": rk4}


@dataclass
class ToyConfig(TrainConfig):
    mlp: MLPConfig = field(default_factory=lambda: MLPConfig(hidden=128, layers=3))
    n_train: int = 20_000                        # 8-Gaussians points the MLP trains on
    n_eval: int = 2000                           # points whose log-density is computed
    order_steps: tuple[int, ...] = (8, 16, 32, 64, 128)
    t_end: float = 0.05                          # where the order runs stop (every step of each method is full)
    identity_steps: tuple[int, ...] = (4, 8, 16, 32, 64, 128)   # RK4 steps of the exact-field likelihood
    t0: float = 1e-3                             # the data end of the likelihood ODE (x0-predictors need sigma > 0)
    nll_steps: int = 64                          # RK4 steps of the learned model's likelihood
    probes: int = 8                              # Hutchinson probes per point, against the exact trace in 2-D
    grid: int = 60                               # density figure: grid × grid points on [-3, 3]²

    def check(self) -> None:
        """The 2-D fields' constraints (TrainConfig's own are checked by common.config.validate)."""
        from common.config import require

        require(len(self.order_steps) >= 2 and min(self.order_steps) >= 1, "order_steps",
                "choose two or more step counts ≥ 1 (a slope needs two points)")
        require(0 < self.t_end < 1, "t_end", "choose a time in (0, 1), e.g. 0.05")
        require(len(self.identity_steps) >= 1 and min(self.identity_steps) >= 1, "identity_steps",
                "choose step counts ≥ 1")
        require(0 < self.t0 < 1, "t0", "choose a small time in (0, 1), e.g. 1e-3")
        require(self.nll_steps >= 1 and self.probes >= 1, "nll_steps", "choose ≥ 1 steps and ≥ 1 probes")
        require(self.n_eval >= 2 and self.n_train >= 1 and self.grid >= 2, "n_eval",
                "choose ≥ 2 evaluation points, ≥ 1 training point and a grid of ≥ 2")


def slope(steps, errors) -> float:
    """The least-squares slope of log error against log steps, negated: the observed order."""
    a = torch.stack([torch.ones(len(steps), dtype=F64), torch.tensor(steps, dtype=F64).log()], 1)
    return -float(torch.linalg.lstsq(a, torch.tensor(errors, dtype=F64).log()[:, None]).solution[1, 0])


def orders(cfg: ToyConfig, generator: torch.Generator) -> dict:
    """Max error against the exact flow map of N(mu, s² I) at t_end, per solver and step count, and the slopes."""
    mu, s = torch.tensor([0.7, -0.4], dtype=F64), 0.5
    den = denoiser(MixtureDenoiser(mu[None], s, PATH), "x0", PATH)
    x1 = torch.randn(cfg.n_eval, 2, generator=generator, dtype=F64)
    t1, te = torch.tensor(1.0, dtype=F64), torch.tensor(cfg.t_end, dtype=F64)
    radius = [torch.sqrt(PATH.alpha(t) ** 2 * s ** 2 + PATH.sigma(t) ** 2) for t in (t1, te)]
    exact = PATH.alpha(te) * mu + radius[1] * (x1 - PATH.alpha(t1) * mu) / radius[0]
    out = {}
    for name, solver in SOLVERS.items():
        errors = [float((last(solver(den, x1, torch.linspace(1, cfg.t_end, n + 1, dtype=F64), path=PATH)) - exact)
                        .abs().max()) for n in cfg.order_steps]
        out[name] = {"steps": list(cfg.order_steps), "max_error": [float(f"{e:.3e}") for e in errors],
                     "order": round(slope(cfg.order_steps, errors), 2)}
    return out


def exact_mixture_denoiser():
    mix = eight_gaussians(F64)
    return denoiser(MixtureDenoiser(mix.means, mix.std, PATH), "x0", PATH)


def true_log_density(x: torch.Tensor, t0: float) -> torch.Tensor:
    """log p_{t0}(x): the 8 Gaussians noised to t0, a mixture again (closed form).  (B,)"""
    t = torch.tensor(t0, dtype=F64)
    return eight_gaussians(F64).noised(float(PATH.alpha(t)), float(PATH.sigma(t))).log_prob(x.double())


def likelihood_grid(t0: float, steps: int) -> torch.Tensor:
    return torch.linspace(t0, 1, steps + 1, dtype=F64)


def identity(cfg: ToyConfig, x: torch.Tensor) -> list[dict]:
    """|log p_ODE − log p| on the points x (drawn at t0) for the exact field and trace, per number of RK4 steps."""
    field_ = drift(exact_mixture_denoiser(), PATH)
    truth = true_log_density(x, cfg.t0)
    rows = []
    for n in cfg.identity_steps:
        err = (log_density(field_, x, likelihood_grid(cfg.t0, n))[0] - truth).abs()
        rows.append({"steps": n, "nfe": 4 * n, "mean_abs_err": float(f"{err.mean():.3e}"),
                     "max_abs_err": float(f"{err.max():.3e}")})
    return rows


def train_mlp(cfg: ToyConfig, run, seed: int, generator: torch.Generator) -> torch.nn.Module:
    data = eight_gaussians().sample(cfg.n_train, generator)
    torch.manual_seed(seed)

    def loss(net, x0, y, g):
        return diffusion_loss(net, x0, PATH, "v", g)[0].mean()
    model, _ = fit(MLP(cfg.mlp), loss, data, None, replace(cfg, sample_every=0, bf16=False), run.part("toy_mlp"))
    return model.eval()


def learned(cfg: ToyConfig, model, x: torch.Tensor, generator: torch.Generator) -> dict:
    """The learned model's log-likelihood of x (exact trace, and Hutchinson's estimate with `probes` probes) against
    the true log-density of the same points. The network works in float32."""
    field_ = drift(denoiser(model, "v", PATH), PATH)
    ts = likelihood_grid(cfg.t0, cfg.nll_steps)
    x = x.float()
    model_lp = log_density(field_, x, ts)[0]
    probes = torch.stack([log_density(field_, x, ts, hutchinson(rademacher(x.shape, generator)))[0]
                          for _ in range(cfg.probes)])                   # (probes, B)
    truth = true_log_density(x, cfg.t0)
    return {"nll_true": round(-float(truth.mean()), 4), "nll_model": round(-float(model_lp.mean()), 4),
            "kl_estimate": round(float((truth - model_lp).mean()), 4),
            "hutchinson_nll": round(-float(probes.mean()), 4),
            "hutchinson_std_per_point": round(float(probes.std(0).mean()), 4), "probes": cfg.probes}


def density_maps(cfg: ToyConfig, model) -> dict[str, torch.Tensor]:
    """log p on a grid over [-3, 3]²: the truth, the exact field's ODE and the learned model's ODE.  (grid, grid)"""
    axis = torch.linspace(-3, 3, cfg.grid, dtype=F64)
    points = torch.cartesian_prod(axis, axis).flip(1)                    # rows y, columns x
    ts = likelihood_grid(cfg.t0, cfg.nll_steps)
    maps = {"truth": true_log_density(points, cfg.t0),
            "exact field, ODE": log_density(drift(exact_mixture_denoiser(), PATH), points, ts)[0],
            "learned, ODE": log_density(drift(denoiser(model, "v", PATH), PATH), points.float(), ts)[0].double()}
    return {k: v.reshape(cfg.grid, cfg.grid) for k, v in maps.items()}


def run_toys(cfg: ToyConfig, run, seed: int) -> tuple[dict, dict]:
    """Every 2-D measurement, and the density maps for the figure."""
    g = torch.Generator().manual_seed(seed)
    out = {"orders": orders(cfg, g)}
    x = eight_gaussians(F64).noised(float(PATH.alpha(torch.tensor(cfg.t0, dtype=F64))),
                                    float(PATH.sigma(torch.tensor(cfg.t0, dtype=F64)))).sample(cfg.n_eval, g)
    out["identity"] = identity(cfg, x)
    model = train_mlp(cfg, run, seed, g)
    out["learned"] = learned(cfg, model, x, g)
    for name, row in out["orders"].items():
        print(f"{name}: observed order {row['order']}")
    print(f"identity: mean |log p_ODE − log p| {out['identity'][-1]['mean_abs_err']:.1e} at "
          f"{out['identity'][-1]['steps']} RK4 steps; learned model KL ≈ {out['learned']['kl_estimate']:.3f} nats")
    return out, density_maps(cfg, model)
