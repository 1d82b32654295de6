"""Print day 20's result tables as Markdown from a metrics.json (default: day20/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day20/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stages(m: dict) -> str:
    """One row per step count: DDIM on day 6's model, and the student distilled down to that many steps."""
    s = m["settings"]
    out = ["| steps (network calls) | DDIM: FID / floor | DDIM: confident / real | student: FID / floor (95% interval "
           "of the FID) | student: confident / real | student / DDIM (FID) | stage training, s |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted({r["nfe"] for r in s.values()}, reverse=True):
        ddim, student = s[f"ddim-{n}"], s.get(f"student-{n}")
        if student is None:
            out.append(f"| {n} | {ddim['fid_ratio']:.2f} | {ddim['confident_ratio']:.2f} | (first teacher) | | | |")
            continue
        lo, hi = student["fid_ci95"]
        out.append(f"| {n} | {ddim['fid_ratio']:.2f} | {ddim['confident_ratio']:.2f} | {student['fid_ratio']:.2f} "
                   f"({lo:.3f}–{hi:.3f}) | {student['confident_ratio']:.2f} | {student['fid'] / ddim['fid']:.2f} | "
                   f"{student['train_seconds']:.0f} |")
    return "\n".join(out)


def costs(m: dict) -> str:
    c = m["cost"]
    total = sum(c["stage_train_seconds"].values())
    per_call = {k: 1000 * r["seconds_per_sample"] / r["nfe"] for k, r in m["settings"].items()}
    return (f"Training: the {len(c['stage_train_seconds'])} stages {total:.0f} s together. Sampling costs "
            f"{min(per_call.values()):.2f}–{max(per_call.values()):.2f} ms per network call and sample, whichever "
            f"model.")


def aims(m: dict) -> str:
    r = m["student_over_ddim"]
    if not r:
        return "- (no FID: the dataset has no evaluator)"
    saved = m["config"]["saved_steps"]
    return (f"- the {saved}-step student against DDIM at {saved} steps on day 6's model: FID ratio {r[str(saved)]:.2f} "
            f"(aim: clearly below 1)\n- the 1-step student against DDIM at 1 step: FID ratio {r['1']:.2f}")


ALL = (stages, costs, aims)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day20" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
