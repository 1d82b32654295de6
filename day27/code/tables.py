"""Print day 27's result tables as Markdown from a metrics.json (default: day27/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day27/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"diffusion": "diffusion policy (DDIM)", "mse": "MSE regression", "mdn": "mixture density (MDN)"}


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def policies(m: dict) -> str:
    """One row per policy: success over every seed's episodes with its Wilson interval, per seed, the failures."""
    c = m["config"]
    out = [f"| policy ({c['seeds']} seeds × {c['episodes']} episodes) | success (95% interval) | per seed | "
           "collision | left / passed | steps to goal | training, s |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in m["policies"].items():
        lo, hi = r["success_ci95"]
        steps = "–" if r["steps_to_goal"] is None else f"{r['steps_to_goal']:.1f}"
        out.append(f"| {NAMES[name]} | {_pct(r['success'])} ({_pct(lo)}–{_pct(hi)}) | "
                   f"{', '.join(_pct(s) for s in r['success_per_seed'])} | {_pct(r['collision'])} | "
                   f"{_pct(r['left_share'])} of {_pct(r['passed_share'])} | {steps} | {r['train_seconds']:.0f} |")
    return "\n".join(out)


def latency(m: dict) -> str:
    """What acting costs: a policy call plans H actions; per executed action at batch 1 and batched."""
    c = m["config"]
    out = [f"| policy | ms per plan, batch 1 | ms per action, batch 1 (H_a = {c['H_a']}) | ms per action and "
           f"episode, batch {c['episodes']} |", "|---|---:|---:|---:|"]
    for name, r in m["policies"].items():
        out.append(f"| {NAMES[name]} | {r['ms_per_plan_batch1']:.2f} | {r['ms_per_action_batch1']:.2f} | "
                   f"{r['ms_per_action_batched']:.3f} |")
    return "\n".join(out)


def ablations(m: dict) -> str:
    """Diffusion policy, training seed 0: DDIM steps per chunk, and actions executed per plan."""
    out = ["| setting | success (95% interval) | collision | left / passed | ms per plan, batch 1 | plans per "
           "episode |", "|---|---:|---:|---:|---:|---:|"]
    for n, r in m["ablation_ddim_steps"].items():
        lo, hi = r["success_ci95"]
        out.append(f"| DDIM {n} step{'s' if n != '1' else ''} | {_pct(r['success'])} ({_pct(lo)}–{_pct(hi)}) | "
                   f"{_pct(r['collision'])} | {_pct(r['left_share'])} of {_pct(r['passed_share'])} | "
                   f"{r['ms_per_plan_batch1']:.2f} | |")
    for h, r in m["ablation_H_a"].items():
        lo, hi = r["success_ci95"]
        out.append(f"| H_a = {h} | {_pct(r['success'])} ({_pct(lo)}–{_pct(hi)}) | {_pct(r['collision'])} | "
                   f"{_pct(r['left_share'])} of {_pct(r['passed_share'])} | | {r['plans_per_episode']:.1f} |")
    return "\n".join(out)


def demos(m: dict) -> str:
    d = m["demos"]
    return (f"Demonstrations: {d['n']} scripted episodes ({d['windows']} training windows), {_pct(d['success'])} "
            f"succeed, {_pct(d['left_share'])} pass on the left.")


def pusht(m: dict) -> str:
    """Push-T: the expert on the evaluation resets, then each policy (pooled over its training seeds)."""
    p, c = m["pusht"], m["config"]
    d = p["demos"]
    out = [f"Push-T: {d['n']} expert episodes, {d['kept']} successful kept ({d['windows']} training windows); each "
           f"row runs the same {c['pusht_episodes']} other resets ({c['pusht_seeds']} training seed"
           f"{'s' if c['pusht_seeds'] > 1 else ''} per policy).", "",
           "| Push-T | success (95% interval) | mean final coverage | steps per episode | training, s |",
           "|---|---:|---:|---:|---:|"]
    for name, r in p["policies"].items():
        lo, hi = r["success_ci95"]
        train = f"{r['train_seconds']:.0f}" if "train_seconds" in r else "–"
        out.append(f"| {NAMES.get(name, 'scripted expert')} | {_pct(r['success'])} ({_pct(lo)}–{_pct(hi)}) | "
                   f"{r['coverage']:.3f} | {r['steps']:.0f} | {train} |")
    return "\n".join(out)


ALL = (demos, policies, latency, ablations, pusht)

if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day27" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(*(table(metrics) for table in ALL), sep="\n\n")
