"""Print day 16's result tables as Markdown from a metrics.json (default: day16/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day16/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"icfm": "I-CFM", "otcfm": "OT-CFM"}


def toys(m: dict) -> str:
    steps = list(next(r for r in m["toys"]["8gaussians"].values() if isinstance(r, dict))["sw"])
    heads = " | ".join(f"distance, {n} step{'s' * (n != '1')}" for n in steps)
    out = [f"| toy | pairing | straightness S | Euler steps needed | {heads} | distance, fine grid "
           "| field error vs exact |", "|---|---|---:|---:|" + "---:|" * (len(steps) + 2)]
    for toy, r in m["toys"].items():
        for pairing, row in r.items():
            if pairing == "floor_sw":
                continue
            error = f"{row['velocity_error']:.3f}" if "velocity_error" in row else "–"
            distances = " | ".join(f"{row['sw'][n]:.3f}" for n in steps)
            out.append(f"| {toy} (floor {r['floor_sw']:.3f}) | {NAMES[pairing]} | {row['straightness']:.3f} | "
                       f"{row['steps_needed'] or '> ' + steps[-1]} | {distances} | {row['sw_fine']:.3f} | {error} |")
    return "\n".join(out)


def mnist(m: dict) -> str:
    out = ["| sampler | model | network calls | FID / floor (95% interval of the FID) | confident / real | "
           "ms per sample |", "|---|---|---:|---:|---:|---:|"]
    for name, r in m["settings"].items():
        star = "**" if name == m["recommended"] else ""
        lo, hi = r["fid_ci95"]
        out.append(f"| {star}{name}{star} | {'flow (CFM)' if r['model'] == 'flow' else 'DDPM'} | {r['nfe']:g} | "
                   f"{r['fid_ratio']:.2f} ({lo:.3f}–{hi:.3f}) | {r['confident_ratio']:.2f} | "
                   f"{1000 * r['seconds_per_sample']:.1f} |")
    return "\n".join(out)


def aims(m: dict) -> str:
    """The flow against the DDPM at equal network calls, by Euler steps and ancestral steps."""
    s = m["settings"]
    lines = []
    for n in (50, 10):
        flow, ddpm = s.get(f"euler-{n}"), s.get(f"ddpm-{n}")
        if flow and ddpm:
            lines.append(f"- {n} calls: flow (Euler) {flow['fid_ratio']:.2f}× floor, DDPM (ancestral) "
                         f"{ddpm['fid_ratio']:.2f}×: ratio {flow['fid'] / ddpm['fid']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day16" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(toys(metrics), mnist(metrics), aims(metrics), sep="\n\n")
