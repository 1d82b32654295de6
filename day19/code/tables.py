"""Print day 19's result tables as Markdown from a metrics.json (default: day19/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day19/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"exact-euler": "exact field, Euler", "cd": "CD (exact teacher)", "ct": "CT (no teacher)"}
MODELS = {"teacher": "teacher (day 16's flow)", "cd": "CD student", "ct": "CT, from scratch"}


def toy(m: dict) -> str:
    t = m["toy"]
    out = [f"8 Gaussians; distance floor (two samples of the data) {t['floor_sw']:.3f}, exact ODE map "
           f"{t['exact_map_sw']:.3f}.", "",
           "| model | one-step map error E‖x̂ − Φ(ε)‖ | distance, 1 step | distance, 2 steps |", "|---|---:|---:|---:|"]
    out += [f"| {NAMES[k]} | {t[k]['map_error']:.3f} | {t[k]['sw']['1']:.3f} | {t[k]['sw']['2']:.3f} |"
            for k in NAMES]
    return "\n".join(out)


def consistency_error(m: dict) -> str:
    errors = {k: m["toy"][k]["consistency_error"] for k in ("cd", "ct")}
    bins = len(errors["cd"])
    heads = " | ".join(f"{k / bins:.1f}–{(k + 1) / bins:.1f}" for k in range(bins))
    out = [f"| model | {heads} |", "|---|" + "---:|" * bins]
    out += [f"| {k.upper()} | " + " | ".join("—" if e is None else f"{e:.3f}" for e in err) + " |"
            for k, err in errors.items()]
    return "\n".join(out)


def mnist(m: dict) -> str:
    out = ["| model | sampler | network calls | FID / floor (95% interval of the FID) | confident / real | "
           "ms per sample |", "|---|---|---:|---:|---:|---:|"]
    for r in m["settings"].values():
        lo, hi = r["fid_ci95"]
        out.append(f"| {MODELS[r['model']]} | {r['sampler']} | {r['nfe']} | {r['fid_ratio']:.2f} ({lo:.3f}–{hi:.3f}) "
                   f"| {r['confident_ratio']:.2f} | {1000 * r['seconds_per_sample']:.2f} |")
    return "\n".join(out)


def costs(m: dict) -> str:
    c, train = m["cost"], m["cost"]["train_seconds"]
    return (f"Training: CD {train['cd']:.0f} s "
            f"({c['teacher_calls_per_cd_step']} teacher call per example and step), CT {train['ct']:.0f} s.")


def aims(m: dict) -> str:
    a = m["aim"]
    if not a:
        return "- (no FID: the dataset has no evaluator)"
    steps = a["reference"].rsplit("-", 1)[1]
    return "\n".join(f"- {MODELS[k.split('-')[0]]} at {k.split('-')[1]} step{'s' * (k[-1] != '1')} against the "
                     f"teacher at {steps} steps: FID ratio {a[f'{k}_over_teacher']:.2f}"
                     + (" (aim: ≤ 2)" if k == "cd-1" else "") for k in ("cd-1", "cd-2", "ct-1", "ct-2"))


ALL = (toy, consistency_error, mnist, costs, aims)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day19" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
