"""How many network calls each sampler needs: distance to the true 8-Gaussians law against NFE, exact denoiser.

The "network" is the exact posterior mean E[x0 | x_t] of the 8-Gaussians mixture (common.denoisers), so the
only error left is the sampler's own discretisation: what a perfectly trained model would still lose at a
given number of function evaluations (NFE). For each sampler and NFE in `nfes` the same N(0, I) noise is
carried to t = 0 along a uniform time grid (`uniform_grid`: DDPM's respaced levels on the discrete path),
in float64, and compared with fresh true samples:

    sliced Wasserstein-1 (256 directions) to a fresh true sample of the same size, the floor being the
    mean distance of `floor_sets` independent true samples to it; the largest error of a mode's mass
    |mass_k − 1/8|; the pooled within-mode standard deviation (true: 0.1); for the deterministic samplers,
    the RMS distance of each sample to where the exact flow takes the same noise ("flow error", below).

The deterministic samplers (DDIM η = 0, Euler, Heun) all converge to one set of points: where the exact
probability-flow ODE takes this noise, computed once with torchdiffeq's dopri5 (the "exact flow" row). That
set is itself one draw from the true law, so their distances level off at its distance, not at the floor.

Samplers: DDPM ancestral (σ² = β̃ "posterior" and σ² = β "beta"), DDIM η = 0, Euler and Heun (probability-flow
ODE) on the cosine schedule with 1000 levels; Euler and Heun on the straight (flow-matching) path. Heun calls
the network twice a step but once on the last, so it gets (NFE + 1) // 2 steps: 2·steps − 1 ≤ NFE.

    python bench/samplers.py [--quick] [--out DIR] [--key=value ...]      # ~1 min on 2 cores

References: Ho et al. 2020 (arXiv:2006.11239); Song, Meng & Ermon 2021 (DDIM, arXiv:2010.02502); Karras et al.
2022 (Heun, arXiv:2206.00364); Nichol & Dhariwal 2021 (cosine schedule, respacing, arXiv:2102.09672).
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files only
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchdiffeq import odeint  # noqa: E402

from common.config import UserError, apply_overrides, cli, to_dict  # noqa: E402
from common.denoisers import MixtureDenoiser  # noqa: E402
from common.paths import DiscreteVP, Linear, uniform_grid  # noqa: E402
from common.predictions import Coefficients, denoiser, velocity  # noqa: E402
from common.run import git_commit  # noqa: E402
from common.samplers import ddim, ddpm, euler, heun, last, nfe  # noqa: E402
from common.toy2d import eight_gaussians, sliced_wasserstein  # noqa: E402

BENCH = Path(__file__).resolve().parent
F64 = torch.float64


@dataclass
class Config:
    n_samples: int = 4000                    # per sampler and NFE, and per true sample set
    nfes: tuple[int, ...] = (5, 10, 20, 50, 100)
    schedule: str = "cosine"                 # the discrete path's β schedule
    levels: int = 1000                       # its number of levels T
    floor_sets: int = 5                      # independent true sample sets averaged into the floor
    n_proj: int = 256                        # directions of the sliced Wasserstein distance
    threads: int = 1                         # torch intra-op threads (0: torch's default): tiny tensors, 1 is fastest
    seed: int = 0


DEFAULT = Config()
QUICK = Config(n_samples=200, nfes=(5, 10), floor_sets=2, n_proj=32)

# label -> (path key, sampler, keyword arguments)
RUNS = {
    "ddpm posterior": ("discrete", ddpm, {"variance": "posterior"}),
    "ddpm beta": ("discrete", ddpm, {"variance": "beta"}),
    "ddim eta=0": ("discrete", ddim, {"eta": 0.0}),
    "euler": ("discrete", euler, {}),
    "heun": ("discrete", heun, {}),
    "euler (linear path)": ("linear", euler, {}),
    "heun (linear path)": ("linear", heun, {}),
}


def steps_for(sampler, target_nfe: int) -> int:
    """Steps whose NFE is the target (Heun: 2·steps − 1 on a grid ending at t = 0, the largest not above it)."""
    return max(1, (target_nfe + 1) // 2) if sampler is heun else target_nfe


def mixture_errors(x: torch.Tensor, means: torch.Tensor) -> tuple[float, float]:
    """(max_k |mass_k − 1/K|, pooled within-mode std) with each sample assigned to its nearest mean."""
    k = torch.cdist(x, means).argmin(1)
    mass = torch.bincount(k, minlength=len(means)).double() / len(x)
    spread = (x - means[k]).pow(2).sum(1).mean().div(x.shape[1]).sqrt()
    return float((mass - 1 / len(means)).abs().max()), float(spread)


def exact_flow(denoise, path, noise: torch.Tensor, t_end: float = 1e-4) -> tuple[torch.Tensor, int]:
    """Where the probability-flow ODE really takes `noise`: dopri5 (tolerances 1e-7) from t = 1 to t_end, then
    x̂0 (the ODE's last stretch to t = 0 in one step). Returns the samples and the number of network calls."""
    calls = [0]

    def field(t, x):                                   # dx/dt = d_alpha x̂0 + d_sigma ε̂
        calls[0] += 1
        return velocity(denoise(x, t.expand(len(x))), Coefficients.at(path, t, x))
    x = odeint(field, noise, torch.tensor([1.0, t_end], dtype=F64), method="dopri5", rtol=1e-7, atol=1e-7)[-1]
    return denoise(x, torch.full((len(x),), t_end, dtype=F64)).x0, calls[0] + 1


def measure(cfg: Config) -> tuple[dict, dict, dict]:
    mixture = eight_gaussians(F64)
    g = lambda i: torch.Generator().manual_seed(cfg.seed * 1000 + i)
    reference = mixture.sample(cfg.n_samples, g(1))
    sw = lambda x: sliced_wasserstein(x, reference, n_proj=cfg.n_proj, generator=g(2))

    # --- the floor: independent true samples of the same size
    true_sets = [mixture.sample(cfg.n_samples, g(10 + i)) for i in range(cfg.floor_sets)]
    floor_sw = [sw(x) for x in true_sets]
    floor_err = [mixture_errors(x, mixture.means) for x in true_sets]
    floor = {"sliced_w1": sum(floor_sw) / len(floor_sw), "sliced_w1_min": min(floor_sw),
             "sliced_w1_max": max(floor_sw), "mass_error": sum(e[0] for e in floor_err) / len(floor_err),
             "spread": sum(e[1] for e in floor_err) / len(floor_err)}

    # --- every sampler from the same noise
    paths = {"discrete": DiscreteVP.named(cfg.schedule, cfg.levels), "linear": Linear()}
    oracles = {key: denoiser(MixtureDenoiser(mixture.means, mixture.std, p), "x0", p) for key, p in paths.items()}
    noise = torch.randn(cfg.n_samples, 2, generator=g(3), dtype=F64)
    flow_x, calls = exact_flow(oracles["linear"], paths["linear"], noise)   # the limit of every ODE sampler below
    mass_error, spread = mixture_errors(flow_x, mixture.means)
    flow = {"nfe": calls, "sliced_w1": sw(flow_x), "mass_error": mass_error, "spread": spread}
    results = {}
    for label, (key, sampler, kw) in RUNS.items():
        rows = []
        for target in cfg.nfes:
            ts = uniform_grid(paths[key], steps_for(sampler, target))
            start = time.perf_counter()
            x = last(sampler(oracles[key], noise, ts, path=paths[key], generator=g(4), **kw))
            seconds = time.perf_counter() - start
            mass_error, spread = mixture_errors(x, mixture.means)
            deterministic = sampler is not ddpm and kw.get("eta", 0) == 0
            rows.append({"nfe_target": target, "steps": len(ts) - 1, "nfe": nfe(sampler, ts),
                         "sliced_w1": sw(x), "mass_error": mass_error, "spread": spread,
                         "flow_error": float((x - flow_x).norm(dim=1).pow(2).mean().sqrt()) if deterministic else None,
                         "seconds": round(seconds, 3)})
        results[label] = {"path": paths[key].name, "sampler": sampler.__name__, "options": kw, "rows": rows}
    return floor, flow, results


def print_table(floor: dict, flow: dict, results: dict) -> None:
    print(f"{'sampler':<22}{'NFE':>5}{'sliced W1':>11}{'/ floor':>9}{'mass err':>10}{'spread':>8}{'flow err':>10}")
    for label, r in results.items():
        for row in r["rows"]:
            flow_error = "" if row["flow_error"] is None else f"{row['flow_error']:.2e}"
            print(f"{label:<22}{row['nfe']:>5}{row['sliced_w1']:>11.4f}{row['sliced_w1'] / floor['sliced_w1']:>9.2f}"
                  f"{row['mass_error']:>10.4f}{row['spread']:>8.4f}{flow_error:>10}")
    print(f"{'exact flow (dopri5)':<22}{flow['nfe']:>5}{flow['sliced_w1']:>11.4f}"
          f"{flow['sliced_w1'] / floor['sliced_w1']:>9.2f}{flow['mass_error']:>10.4f}{flow['spread']:>8.4f}")
    print(f"{'true vs true (floor)':<22}{'':>5}{floor['sliced_w1']:>11.4f}{1:>9.2f}{floor['mass_error']:>10.4f}"
          f"{floor['spread']:>8.4f}")


def plot(floor: dict, flow: dict, results: dict, path: Path) -> None:
    """Two log-log panels against NFE: sliced W1 of every sampler with the floor and the exact flow's value;
    the flow error of the deterministic samplers."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (label, r) in enumerate(results.items()):
        nfes = [row["nfe"] for row in r["rows"]]
        style = {"color": f"C{i}", "marker": "o", "ms": 3, "ls": "--" if r["path"] == "linear" else "-"}
        left.plot(nfes, [row["sliced_w1"] for row in r["rows"]], label=label, **style)
        if r["rows"][0]["flow_error"] is not None:
            right.plot(nfes, [row["flow_error"] for row in r["rows"]], label=label, **style)
    left.axhline(flow["sliced_w1"], color="k", ls=":", label="exact flow of the same noise")
    left.axhline(floor["sliced_w1"], color="gray", ls="-.", label="true vs true (floor)")
    left.set(ylabel="sliced W1 to the true law", title="distance to the 8 Gaussians")
    right.set(ylabel="RMS distance to the exact flow", title="deterministic samplers: flow error")
    for ax in (left, right):
        ax.set(xscale="log", yscale="log", xlabel="network calls (NFE)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=f"config keys (--key=value): {', '.join(to_dict(DEFAULT))}")
    parser.add_argument("--quick", action="store_true", help="tiny sample counts: seconds (tests)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="folder for samplers.json / .png")
    args, rest = parser.parse_known_args(argv)
    cfg = apply_overrides(QUICK if args.quick else DEFAULT, rest)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if min(cfg.nfes) < 1:
        raise UserError(f"nfes={cfg.nfes}: every NFE must be at least 1")
    commit, start = git_commit(), time.perf_counter()   # the commit before this run rewrites tracked results

    floor, flow, results = measure(cfg)
    print_table(floor, flow, results)

    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": commit, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "wall_s": round(time.perf_counter() - start, 1), "config": to_dict(cfg),
              "floor": floor, "exact_flow": flow, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "samplers.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(floor, flow, results, args.out / "samplers.png")
    print(f"wrote {args.out / 'samplers.json'} and samplers.png ({record['wall_s']} s)")


if __name__ == "__main__":
    cli(main)
