"""Rewrite the syllabus table in README.md from each day's committed results/metrics.json.

    python scripts/update_readme.py          # rewrite README.md in place
    python scripts/update_readme.py --check  # exit 1 if README.md is out of date (used by the tests)

Numbers in the table are never typed by hand: status, cpu wall time and the headline metric all come from
dayNN/results/metrics.json (a day without one is "planned").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def _at(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in match.items()))


def _fid(m: dict) -> str:
    return f"FID {m['fid']:.2f} (floor {m['fid_floor']:.2f}, n={m['n']}), {m['confident_frac']:.0%} confident"


# The one number each day is judged by, read from its metrics.json (a day may also write a `headline` key).
HEADLINES = {
    1: lambda m: "Wiener PSNR {psnr_wiener:.1f} dB vs noisy {psnr_nothing:.1f} dB at σ=1".format(
        **_at(m["denoisers"], sigma=1.0)),
    3: lambda m: "β=1 prior samples: " + _fid(m["samples"]),
    4: lambda m: "half the signal power gone at t = {:.2f} (linear) / {:.2f} (cosine)".format(
        m["schedules"]["linear"]["half_power_t"], m["schedules"]["cosine"]["half_power_t"]),
    2: lambda m: ("U-Net DAE iterated from noise: FID {fid:.1f} (floor {fid_floor:.2f}), {confident_frac:.0%} "
                  "confident").format(**m["iterated"]["unet-range"][max(m["iterated"]["unet-range"], key=int)]),
    5: lambda m: "exact denoiser copies training digits: NN distance {:.1f} (test digits {:.1f})".format(
        m["nn_to_subset"]["exact_samples_median"], m["nn_to_subset"]["test_images_median"]),
    6: _fid,
}


def headline(day: int, m: dict) -> str:
    if day in HEADLINES:
        return HEADLINES[day](m)
    if "headline" in m:
        h = m["headline"]
        return h if isinstance(h, str) else f"{h['name']} {h['value']}"
    if "fid" in m:
        return _fid(m)
    return "see the day's README"


def row(day: int, ticked: bool) -> str:
    topic, paper = SYLLABUS[day]
    box = "[x]" if ticked else "[ ]"
    path = ROOT / f"day{day:02d}" / "results" / "metrics.json"
    link = f"[{topic}](day{day:02d}/README.md)"
    if not path.is_file():
        return f"| {day} | {link} | {paper} | planned | — | — | {box} |"
    m = json.loads(path.read_text())
    minutes = f"{m['wall_time_s'] / 60:.1f} min"
    return f"| {day} | {link} | {paper} | implemented | {minutes} | {headline(day, m)} | {box} |"


def table(old: str) -> str:
    """The table, keeping the boxes the reader has already ticked in `old`."""
    ticked_days = {int(line.split("|")[1]) for line in old.splitlines()
                   if line.startswith("| ") and line.split("|")[1].strip().isdigit() and "[x]" in line}
    weeks = [f"- [{'x' if f'[x] {name}' in old else ' '}] {name} (days {r.start}–{r.stop - 1})" for name, r in WEEKS]
    lines = ["| Day | Topic | Key paper | Status | cpu wall time | Headline metric | Done |",
             "|---|---|---|---|---|---|---|", *[row(d, d in ticked_days) for d in SYLLABUS], "", *weeks]
    return "\n".join(lines)


def render(readme: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    old, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table(old)}\n{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    old = path.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md's syllabus table is out of date: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
