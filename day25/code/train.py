"""Day 25 — editing with a trained model: SDEdit, DDIM inversion and inpainting on the realism–faithfulness frontier.

Nothing is trained here. Day 9's class-conditional U-Net with label dropout (one network, conditional and
unconditional; classifier-free guidance through common.predictions.guided) edits two sets of inputs towards a target
class: *rough edits* of held-out test digits (a 1 with a crude bar on top, to become a 7; 3→8, 4→9, 5→6, 7→9), and
*pure strokes* (day 13's stroke drawings of a random class, to become a handwritten digit of that class). Each input
is edited three ways (edits.py), each swept over its knob t0, the time the edit starts from:

    sdedit   noise to t0, ancestral steps down under the target with weight w          (Meng et al. 2022)
    invert   DDIM up to t0 under the source label, DDIM down under the target with w  (Song et al. 2021)
    inpaint  SDEdit inside the edited region, the input pasted back outside it        (Lugmayr et al. 2022)

Measured per method, set and t0: faithfulness (SSIM and RMSE to the input, RMSE outside the edited region), the
evaluator's target-class accuracy, and realism (FID / floor, confident share / real share). Also: how well DDIM
inversion reconstructs a test digit under its own label (PSNR) as the steps grow. frontier.png puts the curves on one
plot; edits_<set>.png shows them.

References: Meng et al. 2022 (SDEdit, arXiv:2108.01073); Song, Meng & Ermon 2021 (DDIM, arXiv:2010.02502);
Lugmayr et al. 2022 (RePaint, arXiv:2201.09865); Ho & Salimans 2022 (classifier-free guidance, arXiv:2207.12598).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from edits import METHODS, PAIRS, region, rough_edit, round_trip
from figures import plot_frontier, save_edits

from common.checkpoint import load_ddpm
from common.config import UserError, cli, parse_args
from common.data import load_images
from common.evaluator import load_evaluator, score_images
from common.guides import strokes
from common.metrics import fid, fid_bootstrap, psnr, rmse, ssim
from common.paths import F64, uniform_grid
from common.predictions import guided
from common.run import ROOT, Run, earlier_checkpoint, write_metrics
from common.samplers import sample_batched
from common.samples import quantize, save_samples_npz

DAY = Path(__file__).resolve().parents[1]
CLASSES = 10                        # day 9's labels; CLASSES itself is its null token ∅
REALISM = ("confident_ratio",)      # from score_images; FID comes from `Realism`, matched to the target classes


@dataclass
class Config:
    day9_results: str = "day09/results"  # day 9's run folder, from the repo root ("": a new one inside --out)
    day9_args: tuple[str, ...] = ()      # extra --key=value for day 9's train.py when it has to run
    # every method's knob (t0 = 0, the input itself, is added)
    t0s: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    full_steps: int = 20                 # steps from t = 1; an edit from t0 takes round(t0 · full_steps)
    w: float = 3.0                       # guidance weight towards the target (1: day 9's conditional model)
    dilate: int = 2                      # the edited region: pixels within this many of the edit's ink
    n_pairs: int = 50                    # rough edits of each source digit; n_pairs × 5 pairs in all (at most)
    n_strokes: int = 100                 # pure stroke drawings
    recon_steps: tuple[int, ...] = (10, 20, 50, 100)  # DDIM inversion to t = 1 and back under the digit's own label
    n_recon: int = 50
    aim: float = 0.8                     # the headline: the most realistic t0 whose target accuracy reaches this
    shown_t0: float = 0.6                # results/samples.npz: the SDEdit rough edits from this t0
    n_show: int = 4                      # rows of each method in the figures
    batch: int = 250
    bf16: bool = True                    # bf16 autocast for the network (not while inverting: a round trip)
    seed: int = 0

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require

        require(all(a.startswith("--") and "=" in a for a in self.day9_args), "day9_args",
                "write day 9's options as --key=value, separated by commas")
        require(len(self.t0s) >= 1 and all(0 < t <= 1 for t in self.t0s), "t0s", "choose times in (0, 1]")
        require(self.shown_t0 in self.t0s, "shown_t0", "choose one of t0s")
        require(self.w >= 0, "w", "choose a guidance weight ≥ 0 (1: the conditional model)")
        require(self.dilate >= 0, "dilate", "choose 0 or more pixels")
        require(min(self.n_pairs, self.n_strokes) >= 1, "n_pairs", "choose 1 or more inputs")
        require(0 < self.aim <= 1, "aim", "choose a share in (0, 1]")
        require(all(k >= 1 for k in self.recon_steps), "recon_steps", "choose 1 or more steps")
        for key in ("full_steps", "n_recon", "n_show", "batch"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")


PRESETS = {
    "smoke": Config(day9_results="", day9_args=("--ws=0,1", "--cg_scales=1", "--per_class_sweep=2", "--per_class=2",
                                                "--toy_n=200", "--toy_steps=5", "--sample_steps=5"),
                    t0s=(0.5, 1.0), shown_t0=0.5, full_steps=4, n_pairs=2, n_strokes=6, recon_steps=(2, 4),
                    n_recon=4, n_show=2, batch=8),
    "cpu": Config(),
    "gpu": Config(t0s=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), full_steps=100, n_pairs=1000,
                  n_strokes=2000, recon_steps=(10, 20, 50, 100, 250, 1000), n_recon=500, n_show=6, batch=1000),
}


# --- the model and the inputs ----------------------------------------------------------------------------------

def model(cfg: Config, run: Run, args):
    """Day 9's network: its conditional denoiser (y = the class, CLASSES = none), its path, and what it is."""
    p9 = earlier_checkpoint(9, cfg.day9_results, run, args.device, args.data_dir, cfg.day9_args,
                            file="unet/checkpoint.pt", by="day 25")
    _, cond, path, ckpt = load_ddpm(p9, run.device)
    about = {"checkpoint": str(p9.relative_to(ROOT) if p9.is_relative_to(ROOT) else p9), "step": ckpt["step"],
             "preset": ckpt["preset"], **{k: ckpt["config"][k] for k in ("prediction", "schedule", "n_steps")}}
    return cond, path, ckpt["dataset"], about


def inputs(x: torch.Tensor, y: torch.Tensor, cfg: Config) -> dict[str, dict]:
    """The two sets of edits: input, source and target classes, and edited region (True: may change)."""
    g = torch.Generator().manual_seed(cfg.seed)
    parts = []
    for src, tgt in PAIRS:
        digits = x[y == src][: cfg.n_pairs]
        edited, stroke = rough_edit(digits, (src, tgt), g)
        parts.append((edited, torch.full((len(digits),), src), torch.full((len(digits),), tgt), stroke))
    edited, source, target, stroke = (torch.cat(p) for p in zip(*parts))
    drawn = torch.randint(CLASSES, (cfg.n_strokes,), generator=g)
    drawings = strokes(drawn, cfg.seed)
    return {"rough": {"x": edited, "source": source, "target": target, "edit": region(stroke, cfg.dilate)},
            "strokes": {"x": drawings, "source": torch.full_like(drawn, CLASSES), "target": drawn,
                        "edit": region(drawings, cfg.dilate)}}


# --- edits and what they are worth ---------------------------------------------------------------------------

def edit_grid(path, t0: float, full_steps: int) -> torch.Tensor:
    """The grid of an edit from t0: round(t0 · full_steps) uniform steps, at least one; t0 = 0: no step at all."""
    if t0 == 0:
        return torch.zeros(1, dtype=F64)
    return uniform_grid(path, max(1, round(t0 * full_steps)), t0)


def run_edit(method: str, cond, data: dict, t0: float, path, cfg: Config, run: Run) -> torch.Tensor:
    """Every input of one set edited by `method` from t0, towards its target with weight w; the same noise per t0."""
    extra = {"encoder": cond} if method == "invert" else {}
    keys = {"invert": ("source",), "inpaint": ("edit",)}.get(method, ())
    return sample_batched(METHODS[method], guided(cond, cfg.w, CLASSES), data["x"], edit_grid(path, t0, cfg.full_steps),
                          path=path, device=run.device, batch=cfg.batch, bf16=cfg.bf16 and method != "invert",
                          generator=torch.Generator().manual_seed(cfg.seed + 1), desc=f"{method} t0={t0:g}",
                          cond={"y": data["target"], **{k: data[k] for k in keys}}, **extra).clamp(-1, 1)


class Realism:
    """FID of edits against real digits *of their target classes*. The edits of a set aim at a few classes (all
    rough edits at 6, 7, 8 or 9), and FID against all ten classes would mostly measure that mix. So the reference is
    real training digits with the same class mix as the targets, and the floor is as many real test digits with
    that mix (each class as far as the test split has it), scored against the same reference."""

    def __init__(self, dataset: str, data_dir, seed: int):
        self.evaluator = load_evaluator(dataset)
        self.train, self.test = (load_images(dataset, split, data_dir) for split in ("train", "test"))
        self.seed = seed

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluator.features(quantize(x))                # what samples.npz would store

    def same_mix(self, y: torch.Tensor, targets: torch.Tensor, per: int | None) -> torch.Tensor:
        """Indices into y with the class mix of `targets`: `per` × each class's count (None: the largest whole
        multiple that every class allows), at most all of a class, without replacement."""
        g = torch.Generator().manual_seed(self.seed)
        classes, counts = targets.unique(return_counts=True)
        pools = [torch.nonzero(y == c).flatten() for c in classes]
        per = per or max(1, min(len(p) // int(n) for p, n in zip(pools, counts)))
        return torch.cat([p[torch.randperm(len(p), generator=g)[: per * int(n)]] for p, n in zip(pools, counts)])

    def __call__(self, out: torch.Tensor, targets: torch.Tensor) -> dict:
        ref = self.features(self.train.x[self.same_mix(self.train.y, targets, None)])
        floor = fid(self.features(self.test.x[self.same_mix(self.test.y, targets, 1)]), ref)
        feat = self.features(out)
        value = fid(feat, ref)
        return {"fid": round(value, 4), "fid_ci95": [round(v, 4) for v in fid_bootstrap(feat, ref)],
                "fid_floor": round(floor, 4), "fid_ratio": round(value / floor, 3), "fid_reference_n": len(ref)}


def measure(out: torch.Tensor, data: dict, realism: Realism, dataset: str) -> dict:
    """Faithfulness to the input (whole image; outside the edited region), target accuracy and realism."""
    keep = (~data["edit"]).float()
    outside = ((out - data["x"]).pow(2) * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp(min=1)
    s = score_images(out, data["target"], dataset=dataset)
    return {"ssim": round(ssim(out, data["x"]).mean().item(), 4), "rmse": round(rmse(out, data["x"]).mean().item(), 4),
            "rmse_outside": round(outside.sqrt().mean().item(), 4), "target_accuracy": s.get("class_accuracy"),
            **realism(out, data["target"]), **{k: s.get(k) for k in REALISM}}


def sweep(cond, path, sets: dict, realism: Realism, cfg: Config, run: Run) -> tuple[dict, dict]:
    """Rows of measurements per set and method over t0 (0 first), and the first n_show edits of each."""
    rows, shown = {}, {}
    for name, data in sets.items():
        for method in METHODS:
            key = f"{name}/{method}"
            rows[key], shown[key] = [], {}
            for t0 in (0.0, *cfg.t0s):
                out = run_edit(method, cond, data, t0, path, cfg, run)
                rows[key].append({"t0": t0, **measure(out, data, realism, run.dataset)})
                shown[key][t0] = out[: cfg.n_show]
                if name == "rough" and method == "sdedit" and t0 == cfg.shown_t0:
                    save_samples_npz(run.out / "samples.npz", out, data["target"])
                r = rows[key][-1]
                print(f"{key} t0={t0:g}: SSIM {r['ssim']:.3f}, target {r['target_accuracy']:.1%}, "
                      f"FID {r['fid_ratio']}× floor, outside RMSE {r['rmse_outside']:.3f}")
    return rows, shown


def reconstruction(cond, path, x: torch.Tensor, y: torch.Tensor, cfg: Config, run: Run) -> list[dict]:
    """DDIM inversion of test digits to t = 1 under their own label and back (no guidance): PSNR per step count."""
    out = []
    for k in cfg.recon_steps:
        back = sample_batched(round_trip, cond, x, uniform_grid(path, k), path=path, device=run.device,
                              batch=cfg.batch, bf16=False, desc=f"invert {k}", cond={"y": y})
        out.append({"steps": k, "psnr_db": round(psnr(back, x).mean().item(), 2),
                    "rmse": round(rmse(back, x).mean().item(), 4)})
        print(f"inversion and back, {k} steps: PSNR {out[-1]['psnr_db']} dB")
    return out


def headline(rows: dict, aim: float) -> tuple[dict, str]:
    """Per rough-edit method: the most realistic t0 (lowest FID) among those whose target accuracy reaches `aim`."""
    chosen = {}
    for method in METHODS:
        ok = [r for r in rows[f"rough/{method}"] if (r["target_accuracy"] or 0) >= aim]
        chosen[method] = min(ok, key=lambda r: (r["fid"], r["t0"])) if ok else None
    said = [f"{m} t0={r['t0']:g} (SSIM {r['ssim']:.2f}, FID {r['fid_ratio']}× floor)" if r else f"{m} never"
            for m, r in chosen.items()]
    return chosen, f"rough class edits reaching {aim:.0%} target accuracy: " + "; ".join(said)


# --- the run -------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    if not run.is_main:  # nothing to train here: under torchrun, rank 0 alone does the work
        return
    cond, path, run.dataset, about = model(cfg, run, args)
    test = load_images(run.dataset, "test", args.data_dir)
    if not any((test.y == src).any() for src, _ in PAIRS):
        raise UserError(f"{run.dataset}'s test split has none of the source digits {sorted({s for s, _ in PAIRS})}")
    sets = inputs(test.x, test.y, cfg)

    rows, shown = sweep(cond, path, sets, Realism(run.dataset, args.data_dir, cfg.seed), cfg, run)
    recon = reconstruction(cond, path, test.x[-cfg.n_recon:], test.y[-cfg.n_recon:], cfg, run)
    plot_frontier(rows, run.out / "frontier.png")
    for name, data in sets.items():
        save_edits(data, {k.split("/")[1]: v for k, v in shown.items() if k.startswith(name)}, cfg.n_show,
                   run.out / f"edits_{name}.png")

    chosen, line = headline(rows, cfg.aim)
    about_sets = {name: {"n": len(d["x"]), "edited_share": round(d["edit"].float().mean().item(), 4)}
                  for name, d in sets.items()}
    metrics = {"model": about, "sets": about_sets,
               "frontier": rows, "chosen": chosen, "reconstruction": recon, "headline": line}
    write_metrics(run.out, metrics, cfg, run, time.time() - start)
    print(f"{line}; results in {run.out}")


if __name__ == "__main__":
    cli(main)
