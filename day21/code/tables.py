"""Print day 21's result tables as Markdown from a metrics.json (default: day21/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day21/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"ddgan": "DDGAN (G + posterior), ancestral", "ddim": "DDIM η = 0, day 6's model",
          "ddpm": "DDPM ancestral, day 6's model"}


def mnist(m: dict) -> str:
    out = ["| model, sampler | steps (network calls) | FID / floor (95% interval of the FID) | confident / real | "
           "precision | recall (real digits) | ms per sample |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in m["settings"].values():
        lo, hi = r["fid_ci95"]
        out.append(f"| {MODELS[r['model']]} | {r['nfe']} | {r['fid_ratio']:.2f} ({lo:.3f}–{hi:.3f}) | "
                   f"{r['confident_ratio']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} ({r['recall_floor']:.3f}) | "
                   f"{1000 * r['seconds_per_sample']:.2f} |")
    return "\n".join(out)


def spread(m: dict) -> str:
    levels = list(m["z_spread"])
    return ("| step from t = | " + " | ".join(levels) + " |\n|---|" + "---:|" * len(levels) + "\n"
            "| pixel std of G's x̂0 across z | " + " | ".join(f"{m['z_spread'][t]:.3f}" for t in levels) + " |")


def costs(m: dict) -> str:
    c, p = m["cost"], m["params"]  # day 6's own training time is day 6's lesson's
    return (f"Training: the DDGAN {c['train_seconds']:.0f} s from scratch ({m['config']['steps']} updates of D and of "
            f"G; {p['generator']:,} and {p['discriminator']:,} parameters).")


def two(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def aims(m: dict) -> str:
    a = m["aim"]
    if not a:
        return "- (no FID: the dataset has no evaluator)"
    gan = next(iter(m["settings"]))
    return (f"- DDGAN against DDIM at {m['settings'][a['ddim']]['nfe']} steps on day 6's model: FID ratio "
            f"{two(a['ddgan_fid_over_ddim'])} (aim: below 1)\n"
            f"- DDGAN's recall against day 6's DDPM at {m['settings'][a['ddpm']]['nfe']} steps: "
            f"{two(a['ddgan_recall_over_ddpm'])} (aim: near 1), at {m['settings'][gan]['nfe']} network calls instead "
            f"of {m['settings'][a['ddpm']]['nfe']}")


ALL = (mnist, spread, costs, aims)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day21" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
