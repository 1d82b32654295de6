"""Print day 17's result tables as Markdown from a metrics.json (default: day17/results/metrics.json), for the
lesson's Results section: every number in them is read from the file.

    python day17/code/tables.py [PATH]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def orders(m: dict) -> str:
    rows = m["toy"]["orders"]
    steps = next(iter(rows.values()))["steps"]
    out = ["| solver | " + " | ".join(f"{n} steps" for n in steps) + " | observed order |",
           "|---|" + "---:|" * (len(steps) + 1)]
    for name, r in rows.items():
        out.append(f"| {name} | " + " | ".join(f"{e:.1e}" for e in r["max_error"]) + f" | {r['order']:.2f} |")
    return "\n".join(out)


def identity(m: dict) -> str:
    out = ["| RK4 steps | network calls | mean abs. error (nats) | max abs. error (nats) |", "|---:|---:|---:|---:|"]
    out += [f"| {r['steps']} | {r['nfe']} | {r['mean_abs_err']:.1e} | {r['max_abs_err']:.1e} |"
            for r in m["toy"]["identity"]]
    return "\n".join(out)


def learned(m: dict) -> str:
    r = m["toy"]["learned"]
    return ("| NLL of held-out points (nats) | value |\n|---|---:|\n"
            f"| true density (the entropy) | {r['nll_true']:.3f} |\n"
            f"| learned model, exact trace | {r['nll_model']:.3f} |\n"
            f"| learned model, Hutchinson ({r['probes']} probes; per-point std {r['hutchinson_std_per_point']:.3f}) "
            f"| {r['hutchinson_nll']:.3f} |\n"
            f"| difference: KL(data ‖ model) + solver error | {r['kl_estimate']:.3f} |")


def mnist(m: dict) -> str:
    agree = m["same_noise"] or {}
    out = [f"| sampler | kind | network calls | FID / floor (95% interval of the FID) | confident / real | "
           f"ms per sample | same digit as {agree.get('reference', '–')} |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in m["settings"].items():
        star = "**" if name == m["recommended"] else ""
        lo, hi = r["fid_ci95"]
        same = agree.get(name, "(reference)" if name == agree.get("reference") else "–")
        same = f"{same:.0%}" if isinstance(same, float) else same
        out.append(f"| {star}{name}{star} | {'ODE' if r['kind'] == 'ode' else 'SDE (ancestral)'} | {r['nfe']:g} | "
                   f"{r['fid_ratio']:.2f} ({lo:.3f}–{hi:.3f}) | {r['confident_ratio']:.2f} | "
                   f"{1000 * r['seconds_per_sample']:.1f} | {same} |")
    return "\n".join(out)


def bits(m: dict) -> str:
    b = m["bits_per_dim"]
    lo, hi = b["bpd_ci95"]
    return ("| model (8-bit MNIST test digits unless said) | bits/dim |\n|---|---:|\n"
            f"| day 6's DDPM through its PF-ODE ({b['n']} digits, {b['solver']}, {b['nfe']} calls, "
            f"{b['probes']} Hutchinson probe{'s' * (b['probes'] > 1)}) | {b['bpd']:.3f} ({lo:.3f}–{hi:.3f}) |\n"
            f"| every pixel independent: a 256-level histogram per pixel | {b['histogram_bpd']:.3f} |\n"
            f"| day 3's VAE (β = 1), IWAE bound on *binarised* digits (1 bit per pixel at most) | "
            f"{b['day3_vae_binarised_nll_bpd']:.3f} |")


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "day17" / "results" / "metrics.json"
    metrics = json.loads(path.read_text())
    print(orders(metrics), identity(metrics), learned(metrics), mnist(metrics), bits(metrics), sep="\n\n")
