"""Print day 22's result tables as Markdown from a metrics.json (default: day22/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day22/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUDIES = {"scaling": "DiT sizes", "patch": "patch sizes", "conditioning": "conditionings"}


def fid(r: dict) -> str:
    return "—" if r["fid_ratio"] is None else f"{r['fid_ratio']:.2f}"


def models(m: dict) -> str:
    """One row per trained model: size, cost, quality."""
    out = ["| model | params | GFLOPs per training image | s per step | FID / floor (95% interval of the FID) | "
           "confident / real | class accuracy |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in m["settings"].items():
        quality = "— | — | —" if r["fid"] is None else (
            f"{r['fid_ratio']:.2f} ({r['fid_ci95'][0]:.3f}–{r['fid_ci95'][1]:.3f}) | {r['confident_ratio']:.2f} | "
            f"{r['class_accuracy']:.1%}")
        out.append(f"| {name} | {r['params']:,} | {r['gflops_per_image']:.3g} | {r['seconds_per_step']:.3f} | "
                   f"{quality} |")
    return "\n".join(out)


def studies(m: dict) -> str:
    """Each study's models in the order of their training GFLOPs, and their FID / floor in the same order."""
    s = m["settings"]
    out = ["| study | models, fewest GFLOPs first | FID / floor |", "|---|---|---|"]
    for study, names in m["studies"].items():
        names = sorted(names, key=lambda n: s[n]["gflops_per_image"])
        out.append(f"| {STUDIES[study]} | {' → '.join(names)} | {' → '.join(fid(s[n]) for n in names)} |")
    return "\n".join(out)


def aims(m: dict) -> str:
    a = m["aim"]
    matched = (f"- matched FLOPs: {a['matched_dit']} costs {a['gflops_dit_over_unet']:.2f}× the U-Net's GFLOPs per "
               f"training image")
    if a["fid_dit_over_unet"] is None:
        return matched + "\n- (no FID: the dataset has no evaluator)"
    def yes(ok: bool) -> str:
        return "yes" if ok else "no"
    return (f"{matched}; its FID is {a['fid_dit_over_unet']:.2f}× the U-Net's\n"
            f"- DiT sizes: FID falls at every step up in GFLOPs: {yes(a['scaling_fid_falls_with_gflops'])} "
            "(Peebles & Xie: it does)\n"
            f"- patch sizes: FID falls at every step up in GFLOPs: {yes(a['patch_fid_falls_with_gflops'])} "
            "(Peebles & Xie: it does)\n"
            f"- best conditioning: {a['best_conditioning']} (Peebles & Xie: adaLN-Zero)")


ALL = (models, studies, aims)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day22" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
