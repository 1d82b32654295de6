"""Print day 29's result tables as Markdown from a metrics.json (default: day29/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day29/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _share(s: dict) -> str:
    lo, hi = s["ci95"]
    return f"{s['share']:.3f} ({lo:.3f}–{hi:.3f})"


def _realism(row: dict) -> str:
    fid = f"{row['fid_ratio']:.2f}" if row.get("fid_ratio") is not None else ""
    conf = f"{row['confident_ratio']:.2f}" if row.get("confident_ratio") is not None else ""
    return f"{fid} | {conf}"


def directions(m: dict) -> str:
    """Every task of the one model: what it generates from what, and how often the result names the right digit."""
    out = ["| task | generated | given (t = 0) | score (95% interval) | image: FID / floor | image: confident / real |"
           " ms per sample |", "|---|---|---|---:|---:|---:|---:|"]
    for name, row in m["tasks"].items():
        key = next(k for k in ("accuracy", "readable", "agreement") if k in row)
        out.append(f"| {name} | {', '.join(row['generate'])} | {', '.join(row['given']) or '—'} | {key} "
                   f"{_share(row[key])} | {_realism(row)} | {1000 * row['seconds_per_sample']:.1f} |")
    return "\n".join(out)


def readers(m: dict) -> str:
    """How well each reader reads real data: the ceiling of every accuracy above."""
    r = m["real"]
    return (f"Readers on real data ({r['image']['n']} test digits): the evaluator {_share(r['image'])}, the Goertzel "
            f"decoder {_share(r['audio'])}, exact spelling {_share(r['text'])}.")


def joint(m: dict) -> str:
    """The joint samples: how often each pair of modalities names the same digit."""
    pairs = m["tasks"]["joint"]["pairs"]
    return ("| joint samples: pair | same digit |\n|---|---:|\n"
            + "\n".join(f"| {pair} | {value:.3f} |" for pair, value in pairs.items()))


def cost(m: dict) -> str:
    s = m["sampler"]
    return (f"One network of {m['params']:,} parameters, trained {m['config']['steps']} steps in "
            f"{m['train_seconds']:.0f} s; every task sampled by {s['name'].upper()} in {s['steps']} steps.")


ALL = (directions, readers, joint, cost)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day29" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
