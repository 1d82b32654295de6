"""Day 13 — image-to-image: SDEdit turns strokes, corrupted digits and other classes into digits; inpainting fills a
hidden region by replacement alone or with RePaint's resampling.

Nothing is trained here. Day 6's unconditional U-Net and day 9's class-conditional one (guided) do the work, each
read from its self-describing checkpoint; a missing one is made first by running that day's train.py.

1. SDEdit (img2img.sdedit): a sweep of t0 on three kinds of input — stroke drawings (guides.strokes), blocky noisy
   test digits (guides.corrupt), and test digits edited towards another class with day 9's model. For each t0:
   distance to the input (RMSE, SSIM), realism (FID / floor, confident share / real share), and whether the
   evaluator reads the intended class (the digit drawn, the digit corrupted, the new class). The chosen t0 of each
   kind is the most realistic (lowest FID) among those whose intended class is read at least `keep` times as
   often as at the best t0: as much realism as the edit's meaning allows.
2. Inpainting (img2img.inpaint) of test digits under three masks with the unconditional model: replacement on the
   plain grid, replacement at RePaint's number of network calls, and RePaint's walk (`jump`, `repeats`). Measured:
   the evaluator's label of the completion against the original's, the seam across the mask border against the
   original's, realism, and the diversity of several completions of one input.
3. The same two methods completing a 2-D point's missing coordinate with an exact mixture denoiser (toy.py),
   against the exact conditional law.

References: Meng et al. 2022 (SDEdit, arXiv:2108.01073); Lugmayr et al. 2022 (RePaint, arXiv:2201.09865);
Ho & Salimans 2022 (classifier-free guidance, arXiv:2207.12598).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from figures import plot_frontier, save_edits, save_inpaintings
from measures import diversity, faithfulness, labels, seam_ratio, share
from toy import run_toy

from common.checkpoint import load_ddpm
from common.config import UserError, cli, parse_args
from common.data import load_images
from common.evaluator import score_images
from common.guides import MASKS, corrupt, strokes
from common.img2img import inpaint, network_calls, resampling_walk, sdedit
from common.metrics import rmse
from common.paths import F64, uniform_grid
from common.predictions import guided
from common.run import Run, earlier_checkpoint, write_metrics
from common.samplers import ddpm, sample_batched

DAY = Path(__file__).resolve().parents[1]
ROOT = DAY.parent
CLASSES = 10                        # day 9's labels; CLASSES itself is its null token ∅
REALISM = ("n", "fid", "fid_ci95", "fid_floor", "fid_ratio", "confident_frac", "confident_frac_floor",
           "confident_ratio")


@dataclass
class Config:
    day6_results: str = "day06/results"  # day 6's run folder, from the repo root ("": a new one inside --out)
    day9_results: str = "day09/results"  # day 9's (its class-conditional U-Net is unet/checkpoint.pt there)
    day6_args: tuple[str, ...] = ()      # extra --key=value for day 6's train.py when it has to run
    day9_args: tuple[str, ...] = ()      # ... and for day 9's
    t0s: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)  # SDEdit's starting times (t0 = 0 is added)
    full_steps: int = 50                 # ancestral steps from t = 1; an edit from t0 takes round(t0 · full_steps)
    n_edit: int = 300                    # inputs of each kind of edit
    w: float = 3.0                       # guidance weight of the class change (w = 1: day 9's conditional model)
    keep: float = 0.9                    # chosen t0: the lowest FID among the t0 whose intended class is read at
                                         # least keep × as often as at the best t0
    masks: tuple[str, ...] = ("half", "centre", "strokes")
    n_inpaint: int = 200                 # test digits inpainted per mask and method
    inpaint_steps: int = 50              # the plain grid of replacement and of RePaint's walk
    jump: int = 5                        # RePaint: steps climbed back at each resampling ...
    repeats: int = 5                     # ... and passes over each stretch (1: replacement alone)
    toy_n: int = 20_000                  # 2-D points completed by each method against the exact conditional
    toy_repeats: int = 20                # RePaint's repeats in 2-D (steps and jump as above)
    n_diverse: int = 8                   # inputs completed k_diverse times each, for diversity
    k_diverse: int = 6
    n_show: int = 6                      # rows of the figures
    batch: int = 250
    bf16: bool = True                    # bf16 autocast for the networks (CPU and CUDA)
    seed: int = 0

    def check(self) -> None:
        """What the fields must satisfy, checked when the command line is parsed (common.config.validate)."""
        from common.config import require
        from common.samples import MIN_SCORED

        for key in ("day6_args", "day9_args"):
            require(all(a.startswith("--") and "=" in a for a in getattr(self, key)), key,
                    "write the day's options as --key=value, separated by commas")
        require(len(self.t0s) >= 1 and all(0 < t <= 1 for t in self.t0s), "t0s", "choose times in (0, 1]")
        require(self.w >= 0, "w", "choose a guidance weight ≥ 0 (1: the conditional model)")
        require(0 < self.keep <= 1, "keep", "choose a share in (0, 1]")
        require(len(self.masks) >= 1 and set(self.masks) <= set(MASKS), "masks", f"choose some of {', '.join(MASKS)}")
        require(min(self.n_edit, self.n_inpaint) >= MIN_SCORED, "n_edit", f"score {MIN_SCORED} or more images")
        require(self.repeats >= 1 and 1 <= self.jump < self.inpaint_steps, "jump",
                "choose 1 ≤ jump < inpaint_steps and repeats ≥ 1")
        require(self.toy_n >= 2 and self.toy_repeats >= 1, "toy_n", "choose 2 or more points and repeats ≥ 1")
        for key in ("full_steps", "n_diverse", "n_show", "batch"):
            require(getattr(self, key) >= 1, key, "choose 1 or more")
        require(self.k_diverse >= 2, "k_diverse", "choose 2 or more completions per input")


PRESETS = {
    "smoke": Config(day6_results="", day9_results="", day6_args=("--sample_every=0", "--n_samples=8"),
                    day9_args=("--ws=0,1", "--cg_scales=1", "--per_class_sweep=2", "--per_class=2",
                               "--toy_n=200", "--toy_steps=5", "--sample_steps=5"),
                    t0s=(0.5, 1.0), full_steps=4, n_edit=8, masks=("half", "strokes"), n_inpaint=6,
                    inpaint_steps=6, jump=2, repeats=2, toy_n=200, toy_repeats=2, n_diverse=2, k_diverse=2,
                    n_show=2, batch=8),
    "cpu": Config(),
    "gpu": Config(n_edit=2000, n_inpaint=2000, full_steps=100, inpaint_steps=250, jump=10, repeats=10,
                  n_diverse=32, k_diverse=10, batch=1000),
}


# --- the models ----------------------------------------------------------------------------------------------

def models(cfg: Config, run: Run, args):
    """Day 6's unconditional and day 9's guided conditional denoisers, their (shared) path, and what they are."""
    by = {"by": "day 13"}
    p6 = earlier_checkpoint(6, cfg.day6_results, run, args.device, args.data_dir, cfg.day6_args, **by)
    p9 = earlier_checkpoint(9, cfg.day9_results, run, args.device, args.data_dir, cfg.day9_args,
                            file="unet/checkpoint.pt", **by)
    _, uncond, path, c6 = load_ddpm(p6, run.device)
    _, cond, path9, c9 = load_ddpm(p9, run.device)
    if c6["dataset"] != c9["dataset"] or path.alpha_bar.shape != path9.alpha_bar.shape:
        raise UserError(f"day 6's model ({c6['dataset']}) and day 9's ({c9['dataset']}) were trained on different "
                        "data or schedules; point day6_results and day9_results at runs of the same dataset")
    about = {name: {"checkpoint": str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p), "step": c["step"],
                    "preset": c["preset"], **{k: c["config"][k] for k in ("prediction", "schedule", "n_steps")}}
             for name, p, c in (("unconditional", p6, c6), ("conditional", p9, c9))}
    return uncond, guided(cond, cfg.w, CLASSES), path, c6["dataset"], about


# --- 1. SDEdit -----------------------------------------------------------------------------------------------

def edit_grid(path, t0: float, full_steps: int) -> torch.Tensor:
    """The grid of an edit from t0: round(t0 · full_steps) uniform steps, at least one; t0 = 0: no step at all."""
    if t0 == 0:
        return torch.zeros(1, dtype=F64)
    return uniform_grid(path, max(1, round(t0 * full_steps)), t0)


def edit(denoise, guides: torch.Tensor, t0: float, path, cfg: Config, run: Run, y=None) -> torch.Tensor:
    """SDEdit of every guide from t0 with ancestral (DDPM) steps; y: the classes to edit towards."""
    return sample_batched(partial(sdedit, ddpm), denoise, guides, edit_grid(path, t0, cfg.full_steps), path=path,
                          device=run.device, batch=cfg.batch, bf16=cfg.bf16, desc=f"SDEdit t0={t0:g}",
                          generator=torch.Generator().manual_seed(cfg.seed + 1),
                          cond=None if y is None else {"y": y})


def edit_sweep(denoise, guides, intended, path, cfg: Config, run: Run, y=None, clean=None,
               source=None) -> tuple[list, dict]:
    """One row of measurements per t0 (0 first: the guide itself), and the first n_show edits of each t0.
    intended: the class each edit should show; clean: the images the guides were corrupted from; source: the
    classes the guides show before a class change to y."""
    rows, shown = [], {}
    for t0 in (0.0, *cfg.t0s):
        x = edit(denoise, guides, t0, path, cfg, run, y)
        s = score_images(x, dataset=run.dataset)
        read = labels(x, run.dataset)
        row = {"t0": t0, **faithfulness(x, guides), **{k: s[k] for k in REALISM},
               "intended_class": share(read == intended)}
        if clean is not None:
            row["rmse_to_clean"] = round(rmse(x, clean).mean().item(), 4)
        if source is not None:
            row["source_class"] = share(read == source)
        rows.append(row)
        shown[t0] = x[: cfg.n_show]
        print(f"t0={t0:g}: RMSE {row['rmse']:.3f}, SSIM {row['ssim']:.3f}, FID {s['fid_ratio']:.1f}× floor, "
              f"confident {s['confident_ratio']:.2f}× real, intended class {row['intended_class']:.1%}")
    return rows, shown


def chosen_t0(rows: list[dict], keep: float) -> float:
    """The lowest-FID t0 among those whose intended class is read at least keep × as often as at the best t0."""
    best = max(r["intended_class"] for r in rows)
    return min((r for r in rows if r["intended_class"] >= keep * best), key=lambda r: r["fid"])["t0"]


def sdedit_experiments(uncond, cond, path, x, y, cfg: Config, run: Run) -> dict:
    """The three kinds of edit of the test digits x (labels y): their sweeps, chosen t0 and figures."""
    g = torch.Generator().manual_seed(cfg.seed)
    drawn = torch.arange(cfg.n_edit) % CLASSES                                         # the digits drawn
    x, y = x[: cfg.n_edit], y[: cfg.n_edit]
    target = (y + torch.randint(1, CLASSES, (len(y),), generator=g)) % CLASSES        # another class each
    kinds = {"strokes": (uncond, strokes(drawn, cfg.seed), drawn, {}),
             "corrupted": (uncond, corrupt(x, cfg.seed), y, {"clean": x}),
             "class_change": (cond, x, target, {"y": target, "source": y})}
    out = {}
    for kind, (denoise, guides, intended, extra) in kinds.items():
        print(f"--- SDEdit: {kind}")
        rows, shown = edit_sweep(denoise, guides, intended, path, cfg, run, **extra)
        out[kind] = {"rows": rows, "chosen_t0": chosen_t0(rows, cfg.keep)}
        save_edits(guides[: cfg.n_show], shown, run.out / f"sdedit_{kind}.png",
                   [f"→ {int(c)}" for c in target[: cfg.n_show]] if kind == "class_change" else None)
    plot_frontier(out, run.out / "frontier.png")
    return out


# --- 2. inpainting -------------------------------------------------------------------------------------------

def walks(path, cfg: Config) -> dict[str, torch.Tensor]:
    """The three methods as time walks: replacement on the plain grid, replacement given RePaint's network
    calls, and RePaint (replacement plus resampling)."""
    repaint = resampling_walk(path, cfg.inpaint_steps, cfg.jump, cfg.repeats)
    return {"replace": uniform_grid(path, cfg.inpaint_steps),
            "replace_long": uniform_grid(path, network_calls(repaint)), "repaint": repaint}


def complete(uncond, known, mask, ts, path, cfg: Config, run: Run, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(known.shape, generator=g)
    return sample_batched(inpaint, uncond, noise, ts, path=path, device=run.device, batch=cfg.batch, bf16=cfg.bf16,
                          generator=g, desc=f"inpaint ({network_calls(ts)} calls)",
                          cond={"known": known, "mask": mask.expand_as(known)})


def inpainting(uncond, path, x, cfg: Config, run: Run) -> dict:
    """Every mask × method on test digits x: label kept, seam, realism, diversity; one figure per mask."""
    x = x[-cfg.n_inpaint:]                                       # other test digits than the edits' (when enough)
    original = labels(x, run.dataset)
    methods, out = walks(path, cfg), {}
    for name in cfg.masks:
        mask = MASKS[name](len(x), cfg.seed)
        m_div = mask[: cfg.n_diverse].repeat_interleave(cfg.k_diverse, 0)
        x_div = x[: cfg.n_diverse].repeat_interleave(cfg.k_diverse, 0)
        out[name], shown = {"hidden_share": round(1 - mask.float().mean().item(), 4)}, {}
        for method, ts in methods.items():
            filled = complete(uncond, x, mask, ts, path, cfg, run, cfg.seed + 2)
            several = complete(uncond, x_div, m_div, ts, path, cfg, run, cfg.seed + 3)
            s = score_images(filled, dataset=run.dataset)
            out[name][method] = {
                "network_calls": network_calls(ts), "label_kept": share(labels(filled, run.dataset) == original),
                "seam_ratio": seam_ratio(filled, x, mask),
                "rmse_in_hole": round(((filled - x).pow(2) * ~mask).flatten(1).sum(1).div(
                    (~mask).flatten(1).sum(1)).sqrt().mean().item(), 4),
                **{k: s[k] for k in REALISM},
                **diversity(several.view(cfg.n_diverse, cfg.k_diverse, *x.shape[1:]), mask[: cfg.n_diverse],
                            run.dataset)}
            shown[method] = several.view(cfg.n_diverse, cfg.k_diverse, *x.shape[1:])
            r = out[name][method]
            print(f"{name} / {method} ({r['network_calls']} calls): label kept {r['label_kept']:.1%}, seam "
                  f"{r['seam_ratio']:.2f}× real, FID {r['fid_ratio']:.1f}× floor, {r['distinct_labels']:.2f} labels")
        save_inpaintings(x[: cfg.n_diverse], mask[: cfg.n_diverse], shown, run.out / f"inpaint_{name}.png",
                         rows=min(cfg.n_show, cfg.n_diverse))
    return out


# --- the run -------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg, args = parse_args(PRESETS, DAY / "results", __doc__.splitlines()[0], argv)
    start = time.time()
    run = Run.from_args(args, "mnist")
    if not run.is_main:  # nothing to train here: under torchrun, rank 0 alone does the work
        return
    uncond, cond, path, run.dataset, about = models(cfg, run, args)
    test = load_images(run.dataset, "test", args.data_dir)
    if len(test.x) < max(cfg.n_edit, cfg.n_inpaint):
        raise UserError(f"{run.dataset} has {len(test.x)} test images: choose n_edit and n_inpaint ≤ that")
    order = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(cfg.seed))
    x, y = test.x[order], test.y[order]

    edits = sdedit_experiments(uncond, cond, path, x, y, cfg, run)
    fills = inpainting(uncond, path, x, cfg, run)
    toy = run_toy(cfg.inpaint_steps, cfg.jump, cfg.toy_repeats, cfg.toy_n, cfg.seed, run.out / "toy_conditional.png")
    print(f"2-D: KS distance to the exact conditional {toy['ks_replace']} (replace), {toy['ks_repaint']} (RePaint); "
          f"exact draws < {toy['ks_noise_99']} at 99%")

    strokes_t0 = edits["strokes"]["chosen_t0"]
    metrics = {"models": about, "sdedit": edits, "inpainting": fills, "toy_2d": toy,
               "repaint_walk": {"steps": cfg.inpaint_steps, "jump": cfg.jump, "repeats": cfg.repeats}}
    write_metrics(run.out, metrics, cfg, run, time.time() - start)
    print(f"strokes: chosen t0 = {strokes_t0}; results in {run.out}")


if __name__ == "__main__":
    cli(main)
