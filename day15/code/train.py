"""Day 15 — EMA: one run of day 6's recipe keeps several averages of its weights at once; FID over training for each,
and post-hoc EMA (Karras et al. 2024): any power-EMA profile rebuilt after training from stored snapshots.

Training is day 6's (v-prediction, cosine schedule, the small U-Net) with the loop keeping, beside the raw weights
and its own EMA (decay 0.999 with the warm-up ramp), the averages in `averages` (common.ema): fixed decays with and
without the ramp, and two power EMAs (σ_rel 0.05 and 0.10) whose snapshots are the raw material of post-hoc EMA. The
loop keeps a checkpoint every `keep_every` steps; everything after training reads them:

1. FID (DDIM, 20 steps, the same noises for every model) of raw weights and each average at `fid_points` of them.
2. At every kept step: the distance of each average from the raw weights, and its loss on a fixed held-out batch.
3. Post-hoc EMA: for each σ_rel in `posthoc`, the least-squares combination of the stored power-EMA snapshots that
   best matches that profile at the last step (common.ema.posthoc_weights), scored by FID; the best against the
   best fixed decay. One width (`check_sigma`) is also kept during training and not used to rebuild: its rebuilt
   and kept weights are compared.

References: Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models",
arXiv:2312.02696 (§3, App. C); Polyak & Juditsky 1992 (averaging of iterates); Ho et al. 2020 (arXiv:2006.11239).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from figures import draw_all

from common.checkpoint import kept_checkpoints, load_checkpoint
from common.config import UserError, cli, parse_args, to_dict
from common.data import load_images
from common.diffusion import diffusion_loss
from common.ema import combine, gamma_for, parse_average, posthoc_weights, profile_error
from common.evaluator import score_images
from common.loop import fit
from common.nets import UNet, UNetConfig, count_params
from common.paths import DiscreteVP, uniform_grid
from common.plotting import save_grid
from common.predictions import clipped, denoiser
from common.run import Run, write_metrics
from common.samplers import ddim, sample_batched
from common.training import TrainConfig

DAY = Path(__file__).resolve().parents[1]
MAIN = "ema-0.999-ramp"   # the loop's own EMA (ema_decay with the ramp), under the name the averages use
SCORES = ("n", "fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_ratio")


@dataclass
class Config(TrainConfig):
    dataset: str = "mnist"
    prediction: str = "v"            # day 6's recipe
    schedule: str = "cosine"
    n_steps: int = 1000
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16, n_res=1))
    ema_decay: float = 0.999         # the loop's own EMA, with the ramp: "ema-0.999-ramp"
    averages: tuple[str, ...] = ("ema-0.99", "ema-0.999", "ema-0.9999", "ema-0.9999-ramp", "power-0.05", "power-0.10",
                                 "power-0.07")
    posthoc: tuple[float, ...] = (0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25)  # σ_rel rebuilt after training
    check_sigma: float = 0.07        # this power EMA is also kept during training, not used to rebuild: the check
    fid_points: int = 4              # kept checkpoints scored for every average, evenly spaced, the last included
    eval_steps: int = 20             # DDIM (η = 0) steps of every scored sample set
    n_eval: int = 400                # samples per score (the same noises for every model)
    n_val: int = 1000                # held-out images of the fixed validation batch
    batch: int = 250

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.evaluator import EVALUATORS
        from common.samples import MIN_SCORED

        require(self.dataset in EVALUATORS, "dataset", f"choose one with an evaluator: {', '.join(EVALUATORS)}")
        require(self.keep_every >= 1 and self.steps // self.keep_every >= 2, "keep_every",
                "keep 2 or more snapshots: choose keep_every ≤ steps / 2")
        require(self.steps % self.keep_every == 0, "keep_every", "choose a divisor of steps (the last step is kept)")
        require(1 <= self.fid_points <= self.steps // self.keep_every, "fid_points", "choose 1..the kept snapshots")
        powers = [s for s in self.averages if parse_average(s)[0] == "power"]
        require(len(powers) >= 1, "averages", "keep at least one power EMA (power-σ): post-hoc EMA rebuilds from them")
        require(MAIN not in self.averages, "averages", f"{MAIN} is the loop's own EMA (ema_decay): leave it out")
        require(all(0 < s < 0.3 for s in self.posthoc), "posthoc", "choose widths σ_rel in (0, 0.3)")
        require(f"power-{self.check_sigma:g}" in self.averages and self.check_sigma in self.posthoc, "check_sigma",
                "keep it as an average (power-σ) and rebuild it (posthoc), or the check compares nothing")
        require(len(powers) >= 2, "averages", "keep a power EMA to rebuild from besides the checked one")
        require(self.n_eval >= MIN_SCORED, "n_eval", f"the evaluator scores {MIN_SCORED} or more samples")
        for key in ("eval_steps", "n_val", "batch"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")


PRESETS = {
    "smoke": Config(steps=20, batch_size=32, warmup=5, log_every=5, sample_every=0, ckpt_every=10, keep_every=5,
                    fid_points=2, posthoc=(0.05, 0.07, 0.2), eval_steps=4, n_eval=8, n_val=16, batch=8),
    "cpu": Config(steps=800, batch_size=128, warmup=50, sample_every=0, ckpt_every=100, keep_every=100),
    "gpu": Config(steps=40_000, batch_size=256, lr=2e-4, warmup=1000, sample_every=0, ckpt_every=2000,
                  keep_every=2000, unet=UNetConfig(channels=64, attn_res=(7, 14)), fid_points=5, n_eval=5000,
                  batch=1000, averages=("ema-0.999", "ema-0.9999", "ema-0.99999", "ema-0.9999-ramp", "power-0.05",
                                        "power-0.10", "power-0.07")),
}


# --- the model and its loss (day 6's) ---------------------------------------------------------------------------

def build(cfg: Config):
    """Day 6's network, schedule and loss (Alg. 1 of Ho et al.)."""
    path = DiscreteVP.named(cfg.schedule, cfg.n_steps)
    torch.manual_seed(cfg.seed)

    def loss_fn(net, x0, y, generator):
        return diffusion_loss(net, x0, path, cfg.prediction, generator)[0].mean()
    return UNet(cfg.unet), path, loss_fn


def weights(ckpt: dict) -> dict[str, dict]:
    """Every set of weights a kept checkpoint holds, by name: raw, the loop's EMA, and the further averages."""
    return {"raw": ckpt["model"], MAIN: ckpt["ema"], **ckpt["averages"]}


# --- measuring a set of weights ----------------------------------------------------------------------------------

def scorer(model: UNet, path, cfg: Config, run: Run, x1: torch.Tensor):
    """score(state) -> (scores, samples): load the weights, draw from the fixed noises x1 with DDIM, score."""
    denoise = clipped(denoiser(model, cfg.prediction, path), path)
    ts = uniform_grid(path, cfg.eval_steps)

    def score(state: dict) -> tuple[dict, torch.Tensor]:
        model.load_state_dict(state)
        x = sample_batched(ddim, denoise, x1, ts, path=path, device=run.device, batch=cfg.batch, bf16=cfg.bf16,
                           desc="score")
        s = score_images(x, dataset=run.dataset)
        return {k: s[k] for k in SCORES}, x
    return score


@torch.no_grad()
def validation_loss(model: UNet, state: dict, path, x0: torch.Tensor, cfg: Config, run: Run) -> float:
    """The training loss of `state` on a fixed held-out batch with fixed t and noise (one generator seed)."""
    model.load_state_dict(state)
    g = torch.Generator().manual_seed(cfg.seed + 7)
    losses = [diffusion_loss(model, chunk.to(run.device), path, cfg.prediction, g)[0] for chunk in x0.split(cfg.batch)]
    return torch.cat(losses).mean().item()


def distance(state: dict, raw: dict) -> float:
    """‖θ_avg − θ‖ / ‖θ‖ over all float weights."""
    diff = sum((state[k].double() - raw[k].double()).pow(2).sum() for k in raw if raw[k].is_floating_point())
    norm = sum(raw[k].double().pow(2).sum() for k in raw if raw[k].is_floating_point())
    return (diff / norm).sqrt().item()


# --- post-hoc EMA -----------------------------------------------------------------------------------------------

def rebuilt_from(cfg: Config) -> list[str]:
    """The power EMAs whose snapshots post-hoc EMA combines: all but the one kept to check it."""
    return [s for s in cfg.averages if parse_average(s)[0] == "power" and s != f"power-{cfg.check_sigma:g}"]


def posthoc(snapshots: list[dict], steps: list[int], cfg: Config) -> dict[float, tuple[dict, torch.Tensor, float]]:
    """For each σ_rel in cfg.posthoc: the weights rebuilt at the last step from every stored power-EMA snapshot (but
    the checked one's), the coefficients, and the relative L² error of the rebuilt profile."""
    names = rebuilt_from(cfg)
    states = [snap[name] for snap in snapshots for name in names]
    ks = torch.tensor([k for k in steps for _ in names], dtype=torch.float64)
    gammas = torch.tensor([gamma_for(parse_average(n)[1]) for _ in steps for n in names], dtype=torch.float64)
    out = {}
    for sigma in cfg.posthoc:
        c = posthoc_weights(ks, gammas, steps[-1], gamma_for(sigma))
        out[sigma] = (combine(states, c), c, profile_error(ks, gammas, c, steps[-1], gamma_for(sigma)))
    return out


# --- the run ----------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    data = load_images(cfg.dataset, "train", args.data_dir)
    test = load_images(cfg.dataset, "test", args.data_dir)
    run = Run.from_args(args, data.name)
    model, path, loss_fn = build(cfg)
    print(f"U-Net: {count_params(model):,} parameters; averages kept: {MAIN}, {', '.join(cfg.averages)}")
    fit(model, loss_fn, data.x, None, cfg, run)
    if not run.is_main:
        return
    model.eval()

    # --- what the kept checkpoints hold
    files = kept_checkpoints(run.out)
    if not files or load_checkpoint(files[-1])["step"] != cfg.steps:
        raise UserError(f"{run.out} lacks the kept checkpoints of this run; rerun without --resume into a new --out")
    snapshots, steps = [], []
    for f in files:
        ckpt = load_checkpoint(f)
        snapshots.append(weights(ckpt))
        steps.append(ckpt["step"])
    names = list(snapshots[0])
    fixed = [n for n in names if n == "raw" or parse_average(n)[0] == "ema"]

    # --- 1. FID over training (the fixed decays and raw weights), and every average at the last step
    x1 = torch.randn(cfg.n_eval, *data.x.shape[1:], generator=torch.Generator().manual_seed(cfg.seed + 1))
    score = scorer(model, path, cfg, run, x1)
    every = len(steps) // cfg.fid_points
    scored_at = [i for i in range(len(steps)) if (len(steps) - 1 - i) % every == 0][-cfg.fid_points:]
    fid = {name: {} for name in names}
    for i in scored_at:
        for name in names if i == len(steps) - 1 else fixed:
            fid[name][steps[i]], _ = score(snapshots[i][name])
            print(f"step {steps[i]}, {name}: FID {fid[name][steps[i]]['fid_ratio']:.2f}× floor")

    # --- 2. distance from the raw weights and held-out loss at every kept step
    x_val = test.x[: cfg.n_val]
    tracks = {name: {"distance": [distance(s[name], s["raw"]) for s in snapshots],
                     "val_loss": [validation_loss(model, s[name], path, x_val, cfg, run) for s in snapshots]}
              for name in names}

    # --- 3. post-hoc EMA at the last step
    rebuilt, shown, rebuilt_states = {}, {}, {}
    for sigma, (state, c, err) in posthoc(snapshots, steps, cfg).items():
        rebuilt_states[sigma] = state
        s, x = score(state)
        rebuilt[f"{sigma:g}"] = {"sigma_rel": sigma, "profile_error": round(err, 5), **s,
                                 "coefficients": [round(v, 5) for v in c.tolist()]}
        shown[sigma] = x[:64]
        print(f"post-hoc σ_rel = {sigma:g} (profile error {err:.4f}): FID {s['fid_ratio']:.2f}× floor")
    last, checked = steps[-1], f"power-{cfg.check_sigma:g}"
    check = {"sigma_rel": cfg.check_sigma, "fid_rebuilt": rebuilt[f"{cfg.check_sigma:g}"]["fid"],
             "fid_kept": fid[checked][last]["fid"], "profile_error": rebuilt[f"{cfg.check_sigma:g}"]["profile_error"],
             "relative_distance": round(distance(rebuilt_states[cfg.check_sigma], snapshots[-1][checked]), 5)}
    print(f"check: σ_rel = {cfg.check_sigma:g} rebuilt vs kept: relative distance {check['relative_distance']}, "
          f"FID {check['fid_rebuilt']:.3f} vs {check['fid_kept']:.3f}")
    best_fixed = min((n for n in fixed if n != "raw"), key=lambda n: fid[n][last]["fid"])
    best_post = min(rebuilt, key=lambda k: rebuilt[k]["fid"])
    save_grid(shown[rebuilt[best_post]["sigma_rel"]], run.out / "samples_posthoc_best.png", nrow=8)

    metrics = {
        "params": count_params(model), "train_seconds": round(run.train_seconds, 1), "kept_steps": steps,
        "fid": {name: {str(k): v for k, v in by_step.items()} for name, by_step in fid.items()},
        "tracks": tracks, "posthoc": rebuilt, "posthoc_check": check,
        "best_fixed": {"name": best_fixed, **fid[best_fixed][last]},
        "best_posthoc": {"sigma_rel": rebuilt[best_post]["sigma_rel"], "fid": rebuilt[best_post]["fid"],
                         "fid_ratio": rebuilt[best_post]["fid_ratio"], "fid_ci95": rebuilt[best_post]["fid_ci95"]},
        "aims": {"posthoc_over_best_fixed_fid": round(rebuilt[best_post]["fid"] / fid[best_fixed][last]["fid"], 4)},
    }
    draw_all({**metrics, "config": to_dict(cfg)}, run.out)         # the figures come from the numbers alone
    write_metrics(run.out, metrics, cfg, run, time.time() - start)
    print(f"best fixed decay {best_fixed}: FID {fid[best_fixed][last]['fid_ratio']:.2f}× floor; best post-hoc "
          f"σ_rel = {best_post}: {rebuilt[best_post]['fid_ratio']:.2f}× floor; results in {run.out}")


if __name__ == "__main__":
    cli(main)
