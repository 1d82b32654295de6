"""Print day 13's result tables as Markdown from a metrics.json (default: day13/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day13/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sdedit(m: dict) -> str:
    out = []
    for kind, e in m["sdedit"].items():
        extra = "rmse_to_clean" if kind == "corrupted" else "source_class" if kind == "class_change" else None
        head = "| t0 | RMSE to input | SSIM to input | FID / floor | confident / real | intended class |"
        head += {"rmse_to_clean": " RMSE to clean |", "source_class": " source class |", None: ""}[extra]
        out += [f"**{kind.replace('_', ' ')}** (chosen t0 = {e['chosen_t0']:g})", "", head,
                "|" + "---:|" * (head.count("|") - 1)]
        for r in e["rows"]:
            star = "**" if r["t0"] == e["chosen_t0"] else ""
            cells = [f"{star}{r['t0']:g}{star}", f"{r['rmse']:.3f}", f"{r['ssim']:.3f}", f"{r['fid_ratio']:.1f}",
                     f"{r['confident_ratio']:.2f}", f"{r['intended_class']:.1%}"]
            if extra == "rmse_to_clean":
                cells.append(f"{r[extra]:.3f}")
            elif extra:
                cells.append(f"{r[extra]:.1%}")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def inpainting(m: dict) -> str:
    out = ["| mask (hidden) | method | network calls | label kept | seam / real | FID / floor | confident / real "
           "| RMSE in hole | spread of completions | labels among completions |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mask, rows in m["inpainting"].items():
        for method, r in rows.items():
            if method == "hidden_share":
                continue
            out.append(f"| {mask} ({rows['hidden_share']:.0%}) | {method.replace('_', ' ')} | {r['network_calls']} | "
                       f"{r['label_kept']:.1%} | {r['seam_ratio']:.2f} | {r['fid_ratio']:.1f} | "
                       f"{r['confident_ratio']:.2f} | {r['rmse_in_hole']:.3f} | {r['pairwise_rmse_in_hole']:.3f} | "
                       f"{r['distinct_labels']:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day13" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(sdedit(metrics))
    print(inpainting(metrics))
