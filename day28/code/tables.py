"""Print day 28's result tables as Markdown from a metrics.json (default: day28/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day28/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _num(value, fmt: str = ".2f") -> str:
    return "–" if value is None else format(value, fmt)


def training(m: dict) -> str:
    """One row per recipe: images/s, its ratio to the baseline, peak memory, compile seconds."""
    rows = m["training"]["recipes"]
    base = next(r for r in rows if r["recipe"] == "baseline")
    out = ["| recipe | images/s | × baseline | ms per step | peak memory, MiB | compile, s |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "failed" in r:
            out.append(f"| {r['recipe']} | failed: {r['failed']} | | | | |")
            continue
        out.append(f"| {r['recipe']} | {r['images_per_s']:.0f} | {r['images_per_s'] / base['images_per_s']:.2f} | "
                   f"{r['ms_per_step']:.0f} | {_num(r['peak_memory_mib'], '.0f')} | {_num(r['compile_s'], '.0f')} |")
    fused = "fused AdamW runs here" if m["fused_adamw_supported"] else "fused AdamW is not supported here (foreach)"
    return "\n".join(out) + (f"\n\nCombined: {m['training']['combined']}, {m['training']['speed_up']:.2f}× the "
                             f"baseline's images/s. Memory: {m['training']['memory']}; {fused}.")


def quality(m: dict) -> str:
    q = m["quality"]
    out = ["| run | recipe | training, s | FID / floor | FID (95% interval) | confident / real |",
           "|---|---|---:|---:|---:|---:|"]
    for key, r in q.items():
        ci = "–" if not r["fid_ci95"] else f"{r['fid']:.3f} ({r['fid_ci95'][0]:.3f}–{r['fid_ci95'][1]:.3f})"
        out.append(f"| {key} | {r['recipe']} | {r['train_seconds']:.0f} | {_num(r['fid_ratio'])} | {ci} | "
                   f"{_num(r['confident_ratio'])} |")
    return "\n".join(out) + f"\n\nThe two FID intervals overlap: {m['quality_intervals_overlap']}."


def sampling(m: dict) -> str:
    """Samplers × calls: FID / floor (interval of the FID), confident / real, ms per sample."""
    out = ["| sampler, grid | calls (steps) | FID / floor | FID (95% interval) | confident / real | ms per sample |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in m["sampling"]:
        ci = "–" if not r["fid_ci95"] else f"{r['fid']:.3f} ({r['fid_ci95'][0]:.3f}–{r['fid_ci95'][1]:.3f})"
        out.append(f"| {r['setting']} | {r['nfe']} ({r['steps']}) | {_num(r['fid_ratio'])} | {ci} | "
                   f"{_num(r['confident_ratio'])} | {1e3 * r['seconds_per_sample']:.1f} |")
    return "\n".join(out)


def aims(m: dict) -> str:
    a, n = m["aim"], m["config"]["aim_nfe"]
    if not a:
        return "- (no FID: the dataset has no evaluator)"
    most = max(m["config"]["nfes"])
    return (f"- best at {n} calls: {a['winner']} ({a['nfe']} calls), FID / floor {a['fid_ratio']:.2f}; its FID over "
            f"the best at {most} calls ({a['best_at_most_calls']}): {a['over_best_at_most_calls']:.2f} (aim: ≤ 1.3)\n"
            f"- training: the combined recipe ({m['training']['combined']}) at {m['training']['speed_up']:.2f}× the "
            f"baseline's images/s; FID intervals of the two quality runs overlap: {m['quality_intervals_overlap']}")


ALL = (training, quality, sampling, aims)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day28" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
