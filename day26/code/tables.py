"""Print day 26's result tables as Markdown from a metrics.json (default: day26/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day26/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def settings(m: dict) -> str:
    """One row per sampled setting: which ControlNets at which scale, both fidelities, realism, class kept."""
    out = ["| setting | edge F1 (1-px tolerance) | mask IoU | FID / floor (95% interval of the FID) | "
           "confident / real | classified as the source digit |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in m["settings"].items():
        ci = f" ({r['fid_ci95'][0]:.3f}–{r['fid_ci95'][1]:.3f})" if r.get("fid_ci95") else ""
        out.append(f"| {name} | {r['edge_f1']:.3f} | {r['mask_iou']:.3f} | {_num(r['fid_ratio'])}{ci} | "
                   f"{_num(r['confident_ratio'])} | {_num(r['class_accuracy'], 3)} |")
    return "\n".join(out)


def costs(m: dict) -> str:
    """What training and sampling cost, and whether the base stayed frozen."""
    t, s = m["training"], m["sampler"]
    per_sample = {k: 1000 * r["seconds_per_sample"] / s["steps"] for k, r in m["settings"].items()}
    nets = ", ".join(f"{name} {c['train_seconds']:.0f} s ({c['seconds_per_step']:.2f} s per step)"
                     for name, c in t.items())
    trainable = next(iter(t.values()))["trainable_params"]
    return (f"Each ControlNet trains {trainable:,} parameters ({trainable / m['base_params']:.0%} of the base's "
            f"{m['base_params']:,}, which stayed frozen: weights unchanged after training = {m['base_unchanged']}). "
            f"Training: {nets}. Sampling ({s['name'].upper()}, {s['steps']} steps, {s['n']} held-out controls): "
            f"{per_sample[next(iter(per_sample))]:.2f} ms per step and sample for the base, "
            f"{max(per_sample.values()):.2f} ms with both ControlNets.")


ALL = (settings, costs)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day26" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
