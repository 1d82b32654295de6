"""Print day 24's result tables as Markdown from a metrics.json (default: day24/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day24/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def settings(m: dict) -> str:
    """One row per model and mode, real test clips first: per-frame quality, identity, motion."""
    out = ["| clips | per-frame FID / floor (95% interval of the FID) | confident / real | same class in every "
           "frame | generated frames of the given frame's class | "
           "motion residual, px (wall-free triples × axes counted) |",
           "|---|---:|---:|---:|---:|---:|"]
    for key, r in m["settings"].items():
        name = r["model"] if key == "real" else f"{r['model']}, {r['mode']}"
        if key == "real":
            fid, conf = f"(floor: FID {r['fid_frames']:.2f})", f"({r['confident_frac']:.0%} confident)"
        else:
            lo, hi = r["fid_frames_ci95"]
            fid = f"{_num(r['fid_ratio'], '.2f')} ({lo:.2f}–{hi:.2f})"
            conf = _num(r["confident_ratio"], ".2f")
        kept = _num(r.get("given_label_agreement"), ".0%")
        out.append(f"| {name} | {fid} | {conf} | {r['identity']:.0%} | {kept} | "
                   f"{_num(r['motion_residual_px'], '.2f')} ({r['motion_triples']}) |")
    return "\n".join(out)


def costs(m: dict) -> str:
    s, p, t = m["sampler"], m["params"], m["train_seconds"]
    return (f"Both networks trained {m['config']['steps']} steps of {m['config']['batch_size']} clips: the temporal "
            f"one ({p['temporal']:,} parameters) in {t['temporal']:.0f} s, the frame-independent one "
            f"({p['independent']:,}) in {t['independent']:.0f} s. Sampling: Heun, {s['steps']} steps ({s['nfe']} "
            f"network calls); the whole run {m['wall_time_s'] / 60:.0f} min.")


ALL = (settings, costs)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day24" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
