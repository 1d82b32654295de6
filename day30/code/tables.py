"""Print day 30's result tables as Markdown from a metrics.json (default: day30/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day30/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ci(s: dict, digits: int = 1) -> str:
    """'12.3 [10.1, 14.5] (11.0 / 12.9 / 13.0)': the mean, its t-interval over seeds, each seed's value."""
    values = " / ".join(f"{v:.{digits}f}" for v in s["values"])
    interval = f" [{s['ci95'][0]:.{digits}f}, {s['ci95'][1]:.{digits}f}]" if s["ci95"] else ""
    return f"{s['mean']:.{digits}f}{interval} ({values})"


def budget(m: dict) -> str:
    """The budget and what each family bought with it: steps, counted FLOPs, measured seconds (means over seeds)."""
    b = m["budget"]
    out = [f"Budget B = {b['flops'] / 1e12:.2f} TFLOPs = {b['ddpm_step_equivalents']} DDPM steps of "
           f"{b['batch_size']} images (U-Net: {b['unet_train_flops_per_image'] / 1e9:.3f} GFLOPs per training image, "
           f"{b['unet_forward_flops_per_image'] / 1e9:.3f} per forward).", "",
           "| family | own steps | share of B (teacher's half included) | training seconds (teacher's included) |",
           "|---|---:|---:|---:|"]
    for family in dict.fromkeys(r["family"] for r in m["runs"]):
        rows = [r for r in m["runs"] if r["family"] == family]
        mean = lambda k, rows=rows: sum(r[k] for r in rows) / len(rows)
        out.append(f"| {family} | {mean('steps'):.0f} | {mean('budget_share'):.3f} | {mean('train_seconds'):.0f} |")
    return "\n".join(out)


def quality(m: dict) -> str:
    """FID / floor and confident share / real share per setting: mean [95 % t-interval] (each seed's value)."""
    out = ["| family | sampler | NFE | FID / floor | confident / real |", "|---|---|---:|---:|---:|"]
    for s in sorted(m["summary"].values(), key=lambda s: (s["nfe"], s["fid_ratio"]["mean"])):
        out.append(f"| {s['family']} | {s['sampler']} | {s['nfe']} | {_ci(s['fid_ratio'])} | "
                   f"{_ci(s['confident_ratio'], 2)} |")
    return "\n".join(out)


def duels(m: dict) -> str:
    """The paired comparisons: winner − runner-up in FID / floor on the same seeds."""
    out = ["| NFE | winner | runner-up | winner − runner-up, FID / floor (paired) |", "|---:|---|---|---:|"]
    for d in m["paired"]:
        out.append(f"| {d['nfe']} | {d['winner']} | {d['runner_up']} | {_ci(d['difference'])} |")
    return "\n".join(out)


def ablation(m: dict) -> str:
    """CD from the B/4 teacher (student 3B/4) against the B/2 split, one seed."""
    a = m["ablation"]
    if not a or "settings" not in a:
        return "(no ablation in this run)"
    out = ["| setting | NFE | FID / floor | confident / real |", "|---|---:|---:|---:|"]
    for name, s in a["settings"].items():
        out.append(f"| {name} | {s['nfe']} | {s['fid_ratio']['mean']:.1f} | {s['confident_ratio']['mean']:.2f} |")
    return "\n".join(out)


ALL = (budget, quality, duels, ablation)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day30" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
