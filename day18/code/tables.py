"""Print day 18's result tables as Markdown from a metrics.json (default: day18/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day18/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"1-rf": "1-RF", "2-rf": "2-RF", "3-rf": "3-RF", "distilled": "one-step, distilled from 2-RF"}


def toys(m: dict) -> str:
    first = next(r for r in next(iter(m["toy"].values())).values() if isinstance(r, dict))
    steps = list(first["sw"])
    heads = " | ".join(f"distance, {n} step{'s' * (n != '1')}" for n in steps)
    out = [f"| toy | flow | straightness S | coupling cost | {heads} | distance, fine grid |",
           "|---|---|---:|---:|" + "---:|" * (len(steps) + 1)]
    for toy, r in m["toy"].items():
        for name, row in r.items():
            if name == "floor_sw":
                continue
            distances = " | ".join(f"{row['sw'][n]:.3f}" for n in steps)
            out.append(f"| {toy} (floor {r['floor_sw']:.3f}) | {NAMES[name]} | {row['straightness']:.4f} | "
                       f"{row['coupling_cost']:.3f} | {distances} | {row['sw_fine']:.3f} |")
    return "\n".join(out)


def mnist(m: dict) -> str:
    out = ["| model | Euler steps (network calls) | FID / floor (95% interval of the FID) | confident / real | "
           "ms per sample |", "|---|---:|---:|---:|---:|"]
    for r in m["settings"].values():
        lo, hi = r["fid_ci95"]
        out.append(f"| {NAMES[r['model']]} | {r['nfe']} | {r['fid_ratio']:.2f} ({lo:.3f}–{hi:.3f}) | "
                   f"{r['confident_ratio']:.2f} | {1000 * r['seconds_per_sample']:.2f} |")
    return "\n".join(out)


def flows(m: dict) -> str:
    out = ["| flow | straightness S | coupling cost E‖x1 − x̂0‖² |", "|---|---:|---:|"]
    out += [f"| {NAMES[name]} | {r['straightness']:.2f} | {r['coupling_cost']:.1f} |" for name, r in m["flows"].items()]
    return "\n".join(out)


def costs(m: dict) -> str:
    c = m["cost"]
    lines = [f"| {what} | {p['pairs']} | {p['solver']} | {p['nfe_per_pair']} | {p['seconds']:.0f} |"
             for what, p in (("reflow pairs (from 1-RF)", c["reflow_pairs"]),
                             ("distillation pairs (from 2-RF)", c["distill_pairs"]))]
    train = ", ".join(f"{k} {v:.0f} s" for k, v in c["train_seconds"].items())
    return ("| pairs | how many | ODE solver | network calls each | seconds |\n|---|---:|---|---:|---:|\n"
            + "\n".join(lines) + f"\n\nTraining on them: {train}.")


def aims(m: dict) -> str:
    a = m["aim"]
    if not a:
        return "- (no FID: the dataset has no evaluator)"
    return (f"- 2-RF at one step against 1-RF at {a['reference'].rsplit('-', 1)[1]} steps: FID ratio "
            f"{a['fid_2rf_1step_over_1rf']:.2f} (aim: ≤ 2)\n"
            f"- the distilled one-step model against the same: {a['distilled_over_1rf']:.2f}")


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day18" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(toys(metrics), mnist(metrics), flows(metrics), costs(metrics), aims(metrics), sep="\n\n")
