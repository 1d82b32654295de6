"""The root README's syllabus table: each day's topic and key paper and, for a day with results, its status, wall
time and headline metric, read from dayNN/results/metrics.json. Nothing in the table is typed by hand.

    python scripts/update_readme.py           # rewrite the whole table; --check only compares (a test runs it)
    refresh_row(out)                          # common.run.write_metrics calls this after writing OUT/metrics.json

Why a run refreshes its own row. The table is a view of the results, and a test checks that the two agree exactly.
A learner's run into its day's own results/ (the quickstart's first command does this) rewrites those results: the
wall time always, the scores too on another CPU or a GPU, whose arithmetic differs. So such a run regenerates that
one row as it writes its metrics, keeping any tick the reader has set. The check can then stay strict: it still
catches a hand-edited number or a forgotten regeneration. A check that ignored what a run may change would have to
ignore the scores as well, and would check nothing. Runs into any other folder (`--out`, the tests) touch nothing.

FID in the table is written as a multiple of the floor: FID / (FID of real held-out images against the same
reference, at the same n). Our FID uses the features of this repository's small evaluator, not Inception, so its
raw values mean nothing outside this repository; the ratio to the floor does (1 = as close as real data).
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

BEGIN, END = "<!-- syllabus:begin -->", "<!-- syllabus:end -->"

# day: (topic, key paper)
SYLLABUS = {
    1: ("Gaussian noise basics", "Wiener 1949"), 2: ("Denoising autoencoder", "Vincent et al. 2008"),
    3: ("Variational autoencoder", "Kingma & Welling 2014"), 4: ("Forward diffusion", "Sohl-Dickstein et al. 2015"),
    5: ("Reverse process", "Ho et al. 2020"), 6: ("DDPM training loop", "Ho et al. 2020"),
    7: ("Sampling from DDPM", "Nichol & Dhariwal 2021"), 8: ("Beta schedules", "Nichol & Dhariwal 2021"),
    9: ("Classifier-free guidance", "Ho & Salimans 2022"), 10: ("DDIM", "Song et al. 2021"),
    11: ("Latent diffusion", "Rombach et al. 2022"), 12: ("Text conditioning (cross-attention)", "Rombach et al. 2022"),
    13: ("Image-to-image: SDEdit, inpainting", "Meng et al. 2022; Lugmayr et al. 2022"),
    14: ("Super-resolution 16→32", "Saharia et al. 2022 (SR3)"), 15: ("EMA", "Karras et al. 2024"),
    16: ("Flow matching", "Lipman et al. 2023"), 17: ("Probability-flow ODE", "Song et al. 2021 (score SDE)"),
    18: ("Rectified flow", "Liu et al. 2023"), 19: ("Consistency models", "Song et al. 2023"),
    20: ("Progressive distillation", "Salimans & Ho 2022"), 21: ("Diffusion GANs", "Xiao et al. 2022"),
    22: ("Diffusion transformers", "Peebles & Xie 2023"), 23: ("Score distillation", "Poole et al. 2023"),
    24: ("Flow matching for video", "Ho et al. 2022 (VDM)"), 25: ("SDEdit editing", "Meng et al. 2022"),
    26: ("ControlNet", "Zhang et al. 2023"), 27: ("Diffusion policy", "Chi et al. 2023"),
    28: ("Efficient diffusion", "Karras et al. 2022 (EDM)"), 29: ("Multimodal diffusion", "Bao et al. 2023"),
    30: ("Research mini-project", "—"),
}
WEEKS = [("Week 1 — Foundations", range(1, 8)), ("Week 2 — Core", range(8, 15)),
         ("Week 3 — Core & flows", range(15, 22)), ("Week 4 — Advanced", range(22, 29)),
         ("Week 5 — Multimodal & project", range(29, 31))]
HEADER = ["| Day | Topic | Key paper | Status | cpu wall time | Headline metric | Done |",
          "|---|---|---|---|---|---|---|"]


# --- headlines -------------------------------------------------------------------------------------------

def times_floor(s: dict) -> str:
    """'FID 3.4× floor (n=1000), 74% confident' for one scored sample set `s` (common.evaluator's scores).
    The ratio is the recorded `fid_ratio`, else fid / fid_floor of the same record."""
    ratio = s.get("fid_ratio") or s["fid"] / s["fid_floor"]
    n = f" (n={s['n']})" if "n" in s else ""
    return f"FID {ratio:.{1 if ratio < 10 else 0}f}× floor{n}, {s['confident_frac']:.0%} confident"


def _at(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in match.items()))


def _sampler(setting: str) -> str:
    """Day 7's setting name as words: 'posterior-25' -> '25 ancestral steps of variance β̃'."""
    variance, steps = setting.rsplit("-", 1)
    return f"{steps} ancestral steps of variance {'β̃' if variance == 'posterior' else 'β'}"


# The one result each day is judged by, read from its metrics.json (a day may also write a `headline` key).
HEADLINES = {
    1: lambda m: "Wiener PSNR {psnr_wiener:.1f} dB vs noisy {psnr_nothing:.1f} dB at σ=1".format(
        **_at(m["denoisers"], sigma=1.0)),
    2: lambda m: "U-Net DAE iterated from noise: " + times_floor(m["samples"]),
    3: lambda m: "β=1 prior samples: " + times_floor(m["samples"]),
    4: lambda m: "half the signal power gone at t = {:.2f} (linear) / {:.2f} (cosine)".format(
        m["schedules"]["linear"]["half_power_t"], m["schedules"]["cosine"]["half_power_t"]),
    5: lambda m: "exact denoiser copies training digits: NN distance {:.1f} (test digits {:.1f})".format(
        m["nn_to_subset"]["exact_samples_median"], m["nn_to_subset"]["test_images_median"]),
    6: times_floor,
    7: lambda m: f"{_sampler(m['npz']['setting'])}: " + times_floor(m["npz"]),
    8: lambda m: f"best schedule ({m['best']}): " + times_floor(_at(m["summary"], schedule=m["best"])),
    9: lambda m: "w = {w:g}: {class_accuracy:.1%} class accuracy, ".format(**m["recommended"])
    + times_floor(m["recommended"]),
    11: lambda m: "latent model: " + times_floor(m["latent"])
    + ", {:.1f}× the pixel model's training images/s".format(m["aims"]["latent_over_pixel_train_images_per_s"]),
    12: lambda m: "w = {w:g}: attributes ≥ {seen:.0%} right on seen captions, ≥ {held:.0%} on held-out ones".format(
        w=m["best"]["w"], seen=m["best"]["seen"]["min_attribute_accuracy"],
        held=m["best"]["held_out"]["min_attribute_accuracy"]),
    13: lambda m: _day13(m["sdedit"]["strokes"], m["inpainting"]["half"]),
    14: lambda m: "SR3 FID {:.2f}× floor, PSNR {:.1f} dB; L2 regression {:.2f}×, {:.1f} dB; bicubic {:.0f}×".format(
        m["methods"]["sr3"]["fid_ratio"], m["methods"]["sr3"]["psnr"], m["methods"]["regression"]["fid_ratio"],
        m["methods"]["regression"]["psnr"], m["methods"]["bicubic"]["fid_ratio"]),
    15: lambda m: "post-hoc EMA (σ_rel = {:g}): FID {:.2f}× floor; best fixed decay ({}): {:.2f}×".format(
        m["best_posthoc"]["sigma_rel"], m["best_posthoc"]["fid_ratio"], m["best_fixed"]["name"],
        m["best_fixed"]["fid_ratio"]),
    16: lambda m: "flow, {}: FID {:.1f}× floor at {:g} calls; vs DDPM at equal training: {:.2f}× its FID at 10 "
    "calls, {:.2f}× at 50".format(m["recommended"], m["settings"][m["recommended"]]["fid_ratio"],
                                  m["settings"][m["recommended"]]["nfe"],
                                  m["settings"]["euler-10"]["fid"] / m["settings"]["ddpm-10"]["fid"],
                                  m["settings"]["euler-50"]["fid"] / m["settings"]["ddpm-50"]["fid"]),
    17: lambda m: "PF-ODE, {}: FID {:.1f}× floor at {:g} calls; {:.2f} bits/dim (independent pixels {:.2f})".format(
        m["recommended"], m["settings"][m["recommended"]]["fid_ratio"], m["settings"][m["recommended"]]["nfe"],
        m["bits_per_dim"]["bpd"], m["bits_per_dim"]["histogram_bpd"]),
    18: lambda m: "one step: 2-RF FID {:.0f}× floor, distilled {:.0f}×, 1-RF {:.0f}×; 1-RF at 50 steps {:.1f}×".format(
        m["settings"]["2-rf-1"]["fid_ratio"], m["settings"]["distilled-1"]["fid_ratio"],
        m["settings"]["1-rf-1"]["fid_ratio"], m["settings"]["1-rf-50"]["fid_ratio"]),
    19: lambda m: "CD 1 step FID {:.0f}× floor, 2 steps {:.0f}×; CT {:.0f}× / {:.0f}×; teacher at 50 {:.1f}×".format(
        *(m["settings"][k]["fid_ratio"] for k in ("cd-1", "cd-2", "ct-1", "ct-2", "teacher-50"))),
    20: lambda m: "4-step student FID {:.1f}× floor vs DDIM-4 {:.1f}×; 1 step {:.0f}× vs {:.0f}×".format(
        *(m["settings"][k]["fid_ratio"] for k in ("student-4", "ddim-4", "student-1", "ddim-1"))),
    28: lambda m: "10 calls: {} {:.2f}× floor, {:.2f}× the best 50-call FID (aim ≤ 1.3); the combined training recipe "
    "at {:.2f}× the baseline's images/s".format(m["aim"]["winner"], m["aim"]["fid_ratio"],
                                               m["aim"]["over_best_at_most_calls"], m["training"]["speed_up"]),
}


def _day13(strokes: dict, half: dict) -> str:
    """Day 13: SDEdit of stroke drawings at the chosen t0, and how often each method keeps a half-hidden digit."""
    def times(v: float) -> str:
        return f"{v:.{1 if v < 10 else 0}f}×"

    before, after = strokes["rows"][0], _at(strokes["rows"], t0=strokes["chosen_t0"])
    return (f"SDEdit strokes (t0 = {after['t0']:g}): FID {times(before['fid_ratio'])} → {times(after['fid_ratio'])} "
            f"floor, {after['intended_class']:.0%} read as drawn; half mask: RePaint keeps "
            f"{half['repaint']['label_kept']:.1%} of digits, replacement {half['replace']['label_kept']:.1%}")


NO_HEADLINE = "no headline in this run's metrics.json"


def headline(day: int, m: dict) -> str:
    """The day's headline from its metrics.json. A record it cannot be read from (a run on data without an
    evaluator, such as CIFAR-10, has no FID) says so instead of stopping the run that writes it."""
    try:
        if day in HEADLINES:
            return HEADLINES[day](m)
        if "headline" in m:
            h = m["headline"]
            return h if isinstance(h, str) else f"{h['name']} {h['value']}"
        return times_floor(m)
    except (KeyError, StopIteration):
        return NO_HEADLINE


# --- the table -------------------------------------------------------------------------------------------

def row(root: Path, day: int, ticked: bool) -> str:
    """Day `day`'s line of the table under the repository `root`. A run of another preset than cpu says so."""
    topic, paper = SYLLABUS[day]
    box = "[x]" if ticked else "[ ]"
    link = f"[{topic}](day{day:02d}/README.md)"
    path = root / f"day{day:02d}" / "results" / "metrics.json"
    if not path.is_file():
        return f"| {day} | {link} | {paper} | planned | — | — | {box} |"
    m = json.loads(path.read_text())
    minutes = f"{m['wall_time_s'] / 60:.1f} min" + ("" if m["preset"] == "cpu" else f" ({m['preset']} preset)")
    return f"| {day} | {link} | {paper} | implemented | {minutes} | {headline(day, m)} | {box} |"


def ticked_days(table_text: str) -> set[int]:
    return {int(line.split("|")[1]) for line in table_text.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit() and "[x]" in line}


def table(root: Path, old: str) -> str:
    """The whole table, keeping the boxes the reader has already ticked in `old`."""
    ticked = ticked_days(old)
    weeks = [f"- [{'x' if f'[x] {name}' in old else ' '}] {name} (days {r.start}–{r.stop - 1})" for name, r in WEEKS]
    return "\n".join([*HEADER, *[row(root, d, d in ticked) for d in SYLLABUS], "", *weeks])


def render(root: Path, readme: str) -> str:
    """`readme` with the text between the syllabus markers regenerated."""
    head, _, rest = readme.partition(BEGIN)
    old, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table(root, old)}\n{END}{tail}"


def day_results(out: Path) -> tuple[Path, int] | None:
    """(root, NN) when `out` is dayNN/results of a checkout `root` with a README.md, else None: the one folder
    whose run may rewrite the root README (common.run.write_metrics), so that runs anywhere else touch nothing."""
    out = Path(out).resolve()
    root, match = out.parent.parent, re.fullmatch(r"day(\d\d)", out.parent.name)
    if out.name != "results" or not match or not (root / "README.md").is_file():
        return None
    return root, int(match[1])


def write_atomically(path: Path, text: str) -> None:
    """Replace the file `path` by `text` in one step, so no reader ever sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rewrite_or_check(path: Path, render: Callable[[str], str], check: bool, what: str, script: str) -> int:
    """The body of a script that regenerates a block of the file `path`: with `check`, exit status 1 (and one line
    naming `script`) if render(old) differs from the file, else rewrite the file with it. Returns the exit status."""
    old = path.read_text()
    new = render(old)
    if not check:
        write_atomically(path, new)
    elif new != old:
        print(f"{path.name}'s {what} is out of date: run python {script}", file=sys.stderr)
        return 1
    return 0


def refresh_row(out: Path) -> None:
    """If `out` is dayNN/results of a checkout whose README.md has the table, rewrite day NN's row in it (its tick
    kept). Any other folder: nothing."""
    found = day_results(out)
    if found is None or found[1] not in SYLLABUS:
        return
    root, day = found
    readme = root / "README.md"
    text = readme.read_text()
    head, begin, rest = text.partition(BEGIN)
    block, end, tail = rest.partition(END)
    if not begin or not end:
        return
    lines = [row(root, day, "[x]" in line) if line.startswith(f"| {day} | ") else line
             for line in block.split("\n")]
    new = head + begin + "\n".join(lines) + end + tail
    if new != text:
        write_atomically(readme, new)
