"""The root README's leaderboard: every image generator of the course, one row per setting worth choosing, read
from dayNN/results/metrics.json. Nothing in the table is typed by hand.

    python scripts/leaderboard.py             # rewrite the table and docs/leaderboard.png; --check only compares
    refresh_leaderboard(out)                  # common.run.write_metrics calls this after writing OUT/metrics.json

Each day records its settings in its own shape, so each day has an adapter: a small function from its metrics.json
to `Entry`s (method, NFE, seconds per sample, FID / floor, confident / real, training seconds). Adding a day is one
more adapter in ADAPTERS; a day without an adapter or without results is not on the board.

What is comparable. FID / floor (common.syllabus explains the floor) is comparable between runs scored against the
same dataset's reference at the same sample count n. It is not comparable across n: at fewer samples the floor grows
faster than the FID (day 7 scores its 25-step sampler at both n: compare settings["posterior-25"] with npz), so a
setting scored on few samples would look better than a better one scored on many. The table therefore ranks only
settings scored on RANKED_N samples, grouped by dataset, and says below it which days scored others on other n.

Which settings. Per day and method (a trained model under one sampler), a setting is listed only when no other
setting of that method is at least as good in both NFE and FID / floor and strictly better in one (the Pareto
front): more steps that do not lower FID are no choice. The figure shows every ranked setting.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.syllabus import day_results, write_atomically

BEGIN, END = "<!-- leaderboard:begin -->", "<!-- leaderboard:end -->"
RANKED_N = 1000  # the sample count of every day's cpu-preset FID: the one n the table compares at
HEADER = ["| Day | Method | Dataset | NFE | ms / sample | FID / floor | confident / real | training |",
          "|---|---|---|---:|---:|---:|---:|---:|"]


@dataclass(frozen=True)
class Entry:
    """One scored setting: a model (trained for `train` seconds, a stage each when built on other models, None when
    unknown) sampled with `nfe` network calls and `seconds` per sample (None when not recorded), scored on n
    samples of `dataset`."""
    day: int
    method: str
    dataset: str
    n: int
    nfe: float
    seconds: float | None
    fid_ratio: float | None
    confident_ratio: float | None
    train: tuple[float | None, ...]


def ratio(s: dict, recorded: str, value: str, floor: str) -> float | None:
    """The record's own ratio `recorded`, else value / floor when both are there, else None (a run without scores)."""
    if s.get(recorded) is not None:
        return s[recorded]
    return s[value] / s[floor] if s.get(value) is not None and s.get(floor) else None


def scored(day: int, method: str, m: dict, s: dict, nfe: float, seconds: float | None,
           train: tuple[float | None, ...], n: int | None = None) -> Entry:
    """The Entry of a setting whose scores are the record `s` in day `day`'s metrics `m` (n: `s`'s own unless
    given, for days that record it once for all settings)."""
    return Entry(day, method, m["dataset"], n or s["n"], nfe, seconds,
                 ratio(s, "fid_ratio", "fid", "fid_floor"),
                 ratio(s, "confident_ratio", "confident_frac", "confident_frac_floor"), train)


def trained_seconds(root: Path, checkpoint: str) -> float | None:
    """Training seconds of the model in `checkpoint` (as a day records it, relative to `root`), from the metrics.json
    of the run that wrote it: in the checkpoint's folder, or one up for a part of a run that trains several models
    (day 16's flow/checkpoint.pt: train_seconds["flow"]). None when that record is missing."""
    path = root / checkpoint
    for results in (path.parent, path.parent.parent):
        if (results / "metrics.json").is_file():
            seconds = json.loads((results / "metrics.json").read_text()).get("train_seconds")
            return seconds.get(path.parent.name) if isinstance(seconds, dict) else seconds
    return None


# --- one adapter per day ----------------------------------------------------------------------------------
# Not on the board: day 12 (text-to-image on its own captioned scenes), day 13 (edits and inpaints given images) and
# day 14 (super-resolves given low-resolution images): their FIDs are conditioned on inputs, not unconditional.

SOLVERS = {"euler": "Euler", "heun": "Heun", "rk4": "RK4", "dopri5": "dopri5"}  # settings are named solver-steps


def day06(m: dict, root: Path) -> list[Entry]:
    """The DDPM, sampled with respaced ancestral steps."""
    return [scored(6, "DDPM, ancestral", m, m, m["sample_steps"], m["sample_seconds_per_image"],
                   (m["train_seconds"],))]


def day07(m: dict, root: Path) -> list[Entry]:
    """Day 6's model, ancestral steps of variance β̃ (posterior) or β; the sweep is scored on few samples (n_eval,
    fewer where its budget of network calls runs out), the setting saved as samples.npz (`npz`) again on more."""
    train = (trained_seconds(root, m["model"]["checkpoint"]),)
    variance = {"posterior": "DDPM, ancestral, σ² = β̃", "beta": "DDPM, ancestral, σ² = β"}
    sweep = [scored(7, variance[s["variance"]], m, s, s["steps"], s["seconds_per_sample"], train)
             for s in m["settings"].values()]
    npz = m["settings"][m["npz"]["setting"]]
    return [*sweep, scored(7, variance[npz["variance"]], m, m["npz"], npz["steps"], npz["seconds_per_sample"], train)]


def day08(m: dict, root: Path) -> list[Entry]:
    """One DDPM per beta schedule, trained alike; `sample_seconds` is the time for all n_samples."""
    steps, n = m["config"]["sample_steps"], m["config"]["n_samples"]
    return [scored(8, f"DDPM, ancestral, {s['schedule']} schedule", m, s, steps, s["sample_seconds"] / n,
                   (s["train_seconds"],)) for s in m["summary"]]


def day09(m: dict, root: Path) -> list[Entry]:
    """Class-conditional DDPM with classifier-free guidance, as many samples per class. Every step runs the conditional
    and the unconditional branch (one doubled batch, common.predictions.guided): two network calls a step."""
    return [scored(9, f"class-conditional, CFG w = {s['w']:g}, ancestral", m, s, 2 * m["sample_steps"],
                   s["seconds_per_sample"], (m["train_seconds"],))
            for s in [m["recommended"], *m["cfg_sweep"].values()]]


def day10(m: dict, root: Path) -> list[Entry]:
    """Day 6's model under DDPM and DDIM (η from 0 to 1) on a uniform or quadratic grid of steps."""
    def method(s: dict) -> str:
        name = "DDPM, ancestral" if s["sampler"] == "ddpm" else f"DDIM η = {s['eta']:g}"
        return name if s["grid"] == "uniform" else f"{name}, {s['grid']} grid"

    train = (trained_seconds(root, m["model"]["checkpoint"]),)
    return [scored(10, method(s), m, s, s["steps"], s["seconds_per_sample"], train) for s in m["table"].values()]


def day11(m: dict, root: Path) -> list[Entry]:
    """A DDPM in the autoencoder's latent space (trained after the autoencoder; its samples decoded, one decoder
    call not counted in NFE) and the same recipe on pixels."""
    latent, pixel, steps = m["latent"], m["pixel"], m["config"]["sample_steps"]
    autoencoder = latent["pipeline_train_seconds"] - latent["train_seconds"]
    return [scored(11, "latent diffusion, ancestral", m, latent, steps, latent["sample_seconds_per_image"],
                   (autoencoder, latent["train_seconds"])),
            scored(11, "DDPM, ancestral (pixel baseline)", m, pixel, steps, pixel["sample_seconds_per_image"],
                   (pixel["train_seconds"],))]


def day15(m: dict, root: Path) -> list[Entry]:
    """The EMA study's best post-hoc average, sampled with DDIM (η = 0); no sampling time is recorded."""
    best = next(s for s in m["posthoc"].values() if s["sigma_rel"] == m["best_posthoc"]["sigma_rel"])
    return [scored(15, f"post-hoc EMA σ_rel = {best['sigma_rel']:g}, DDIM η = 0", m, best, m["config"]["eval_steps"],
                   None, (m["train_seconds"],))]


def day16(m: dict, root: Path) -> list[Entry]:
    """Flow matching under ODE solvers, and a DDPM trained for as many steps; NFE counted per sample."""
    def method(name: str, s: dict) -> str:
        return f"flow matching, {SOLVERS[name.split('-')[0]]}" if s["model"] == "flow" else "DDPM, ancestral"

    return [scored(16, method(k, s), m, s, s["nfe"], s["seconds_per_sample"], (m["train_seconds"][s["model"]],),
                   n=m["config"]["n_samples"]) for k, s in m["settings"].items()]


def day17(m: dict, root: Path) -> list[Entry]:
    """Day 6's model as a probability-flow ODE under several solvers, and as the reverse SDE (ancestral steps)."""
    def method(name: str, s: dict) -> str:
        return f"PF-ODE, {SOLVERS[name.split('-')[0]]}" if s["kind"] == "ode" else "DDPM, ancestral"

    train = (trained_seconds(root, m["day6_checkpoint"]["path"]),)
    return [scored(17, method(k, s), m, s, s["nfe"], s["seconds_per_sample"], train, n=m["config"]["n_samples"])
            for k, s in m["settings"].items()]


def day18(m: dict, root: Path) -> list[Entry]:
    """Day 16's flow (1-RF), the 2-RF trained on its pairs, and a one-step model distilled from the 2-RF. Training
    is listed a model at a time: 1-RF, then each later model's pairs plus its own training."""
    cost = m["cost"]
    rf1 = trained_seconds(root, m["day16_checkpoint"]["path"])
    rf2 = cost["reflow_pairs"]["seconds"] + cost["train_seconds"]["2-rf"]
    distilled = cost["distill_pairs"]["seconds"] + cost["train_seconds"]["distill"]
    names = {"1-rf": "1-rectified flow, Euler", "2-rf": "2-rectified flow, Euler", "distilled": "distilled one-step"}
    train = {"1-rf": (rf1,), "2-rf": (rf1, rf2), "distilled": (rf1, rf2, distilled)}
    return [scored(18, names[s["model"]], m, s, s["nfe"], s["seconds_per_sample"], train[s["model"]],
                   n=m["config"]["n_samples"]) for s in m["settings"].values()]


def day19(m: dict, root: Path) -> list[Entry]:
    """Consistency models: CD fine-tuned from day 16's flow (whose own Euler rows are day 16's), CT from scratch."""
    teacher = trained_seconds(root, m["day16_checkpoint"]["path"])
    train = {"cd": (teacher, m["cost"]["train_seconds"]["cd"]), "ct": (m["cost"]["train_seconds"]["ct"],)}
    names = {"cd": "consistency distillation", "ct": "consistency training"}
    return [scored(19, names[s["model"]], m, s, s["nfe"], s["seconds_per_sample"], train[s["model"]],
                   n=m["config"]["n_samples"]) for s in m["settings"].values() if s["model"] in names]


def day20(m: dict, root: Path) -> list[Entry]:
    """Day 6's model under DDIM (day 10's rows cover it too), and the students of progressive distillation: each
    student's cost is day 6's training and every stage up to it."""
    teacher = trained_seconds(root, m["day6_checkpoint"]["path"])
    stages = sorted(((int(n), s) for n, s in m["cost"]["stage_train_seconds"].items()), reverse=True)
    return [scored(20, "progressive distillation, DDIM", m, s, s["nfe"], s["seconds_per_sample"],
                   (teacher, sum(sec for n, sec in stages if n >= s["nfe"])), n=m["config"]["n_samples"])
            for s in m["settings"].values() if s["model"] == "progressive distillation"]


def day21(m: dict, root: Path) -> list[Entry]:
    """The denoising diffusion GAN at its 4 steps (day 6's DDIM and DDPM rows are days 10 and 6's)."""
    return [scored(21, "denoising diffusion GAN", m, s, s["nfe"], s["seconds_per_sample"],
                   (m["cost"]["train_seconds"],), n=m["config"]["n_samples"])
            for s in m["settings"].values() if s["model"] == "ddgan"]


def day22(m: dict, root: Path) -> list[Entry]:
    """Class-conditional flow matching, 100 samples per class: the U-Net and every DiT of the three studies."""
    n = 10 * m["config"]["per_class"]
    return [scored(22, "class-conditional U-Net, Heun" if s["model"] == "unet" else f"class-conditional {name}, Heun",
                   m, s, s["nfe"], s["seconds_per_sample"], (s["train_seconds"],), n=n)
            for name, s in m["settings"].items()]


def day28(m: dict, root: Path) -> list[Entry]:
    """Day 6's model under DDIM, DPM-Solver++(2M) (three grids) and EDM's Heun at equal network calls."""
    train = (trained_seconds(root, m["day6_checkpoint"]["path"]),)
    return [scored(28, f"DDPM, {s['setting']}", m, s, s["nfe"], s["seconds_per_sample"], train,
                   n=m["config"]["n_samples"]) for s in m["sampling"]]


DAY30_SAMPLERS = {"ddim": "DDIM", "dpmpp_2m": "DPM-Solver++(2M)", "euler": "Euler", "heun": "Heun",
                  "consistency": "consistency sampling", "ddpm": "its denoising steps"}


def day30(m: dict, root: Path) -> list[Entry]:
    """Every few-step family trained to one FLOP budget: each setting's mean over the seeds (FID / floor and
    confident / real), with the family's mean training seconds (a student's include its teacher's half)."""
    rows = m["results"]
    seeds = len(m["config"]["seeds"])
    out = []
    for name, s in m["summary"].items():
        per_sample = [r["seconds_per_sample"] for r in rows if r["setting"] == name]
        train = [r["train_seconds"] for r in m["runs"] if r["family"] == s["family"]]
        sampler = DAY30_SAMPLERS.get(s["sampler"], s["sampler"])
        out.append(Entry(30, f"{s['family']}, {sampler}, equal budget (mean of {seeds} seeds)", m["dataset"],
                         m["config"]["n_samples"], s["nfe"], sum(per_sample) / len(per_sample),
                         s["fid_ratio"]["mean"], s["confident_ratio"]["mean"], (sum(train) / len(train),)))
    return out


ADAPTERS: dict[int, Callable[[dict, Path], list[Entry]]] = {
    6: day06, 7: day07, 8: day08, 9: day09, 10: day10, 11: day11, 15: day15, 16: day16, 17: day17, 18: day18,
    19: day19, 20: day20, 21: day21, 22: day22, 28: day28, 30: day30}


# --- the table ---------------------------------------------------------------------------------------------

def entries(root: Path) -> list[Entry]:
    """Every scored setting of every day with an adapter and results under `root`. A record the adapter cannot read
    (a run on data without an evaluator has no scores) leaves that day out instead of stopping the run."""
    found = []
    for day, adapter in ADAPTERS.items():
        path = root / f"day{day:02d}" / "results" / "metrics.json"
        if path.is_file():
            try:
                found += adapter(json.loads(path.read_text()), root)
            except KeyError:
                continue
    return [e for e in found if e.fid_ratio is not None]


def ranked(found: list[Entry]) -> list[Entry]:
    """The settings scored on RANKED_N samples, the only ones whose FID / floor the board compares."""
    return [e for e in found if e.n == RANKED_N]


def pareto(found: list[Entry]) -> list[Entry]:
    """The settings no other setting of the same day and method beats: ≤ NFE and ≤ FID / floor, one of them <."""
    def beats(o: Entry, e: Entry) -> bool:
        return ((o.day, o.method) == (e.day, e.method) and o.nfe <= e.nfe and o.fid_ratio <= e.fid_ratio
                and (o.nfe, o.fid_ratio) != (e.nfe, e.fid_ratio))

    return [e for e in found if not any(beats(o, e) for o in found)]


def figures(x: float) -> str:
    """About three significant figures, never in exponent notation: 0.47, 9.07, 13.7, 1156."""
    return f"{x:.{2 if x < 10 else 1 if x < 100 else 0}f}"


def row(e: Entry) -> str:
    """One line of the table; "—" where the day did not record the value."""
    ms = "—" if e.seconds is None else figures(1000 * e.seconds)
    confident = "—" if e.confident_ratio is None else f"{e.confident_ratio:.2f}"
    train = "—" if None in e.train else " + ".join(f"{s:.0f}" for s in e.train) + " s"
    return (f"| [{e.day}](day{e.day:02d}/README.md) | {e.method} | {e.dataset} | {e.nfe:g} | {ms} | "
            f"{figures(e.fid_ratio)} | {confident} | {train} |")


def elsewhere(found: list[Entry]) -> str:
    """The sentence under the table: the n it ranks at, and which days have settings scored on other n."""
    other = {}
    for e in found:
        if e.n != RANKED_N:
            other.setdefault(e.day, set()).add(e.n)
    days = ", ".join(f"day {d} (n = {', '.join(map(str, sorted(ns)))})" for d, ns in sorted(other.items()))
    return f"Ranked: settings scored on n = {RANKED_N} samples." + (
        f" Not ranked, scored on other n: {days}." if days else "")


def table(root: Path) -> str:
    """The whole block: the Pareto settings of every method, best FID / floor first within each dataset."""
    found = entries(root)
    rows = sorted(pareto(ranked(found)), key=lambda e: (e.dataset, e.fid_ratio, e.nfe))
    return "\n".join([*HEADER, *map(row, rows), "", elsewhere(found)])


def render(root: Path, readme: str) -> str:
    """`readme` with the text between the leaderboard markers regenerated."""
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table(root)}\n{END}{tail}"


def refresh_leaderboard(out: Path) -> None:
    """If `out` is the results/ of a day on the board, in a checkout whose README.md has the leaderboard, rewrite the
    whole block (the new scores may move rows anywhere in it). Any other folder: nothing. The figure is left to
    scripts/leaderboard.py: the tests compare the table, not the picture, and a run need not wait on matplotlib."""
    found = day_results(out)
    if found is None or found[1] not in ADAPTERS:
        return
    root = found[0]
    text = (root / "README.md").read_text()
    if BEGIN in text and END in text and (new := render(root, text)) != text:
        write_atomically(root / "README.md", new)
