"""Day 15's figures: FID over training per average, distance and held-out loss per average, the decay's warm-up
ramp and the initial weights' share, and post-hoc EMA (FID against σ_rel, and rebuilt against exact profiles).

They are drawn from metrics.json alone, so a run's figures can be redrawn without rerunning it:

    python day15/code/figures.py [RESULTS_FOLDER]        # default: day15/results
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from common.ema import gamma_for, parse_average
import common.plotting  # noqa: F401  (selects matplotlib's file-only backend, before pyplot is imported)
import matplotlib.pyplot as plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def same_as_earlier(fid: dict, names: list[str]) -> dict[str, str]:
    """Averages whose scores equal an earlier one's at every step (e.g. two decays both capped by the ramp)."""
    out = {}
    for i, name in enumerate(names):
        for other in names[:i]:
            if other not in out and fid[name] == fid[other]:
                out[name] = other
                break
    return out


def plot_fid_over_training(fid: dict, names: list[str], path: Path) -> None:
    """FID / floor against the training step for the raw weights and each fixed-decay average (95% bands);
    an average identical to an earlier one is named in that one's label instead of drawn on top of it."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    twins = same_as_earlier(fid, names)
    for name in names:
        if name in twins:
            continue
        steps = sorted(fid[name])
        ratio = [fid[name][k]["fid_ratio"] for k in steps]
        scale = [fid[name][k]["fid_ratio"] / fid[name][k]["fid"] for k in steps]
        lo = [fid[name][k]["fid_ci95"][0] * s for k, s in zip(steps, scale)]
        hi = [fid[name][k]["fid_ci95"][1] * s for k, s in zip(steps, scale)]
        label = " = ".join([name, *(t for t, o in twins.items() if o == name)])
        ax.plot(steps, ratio, "o-", ms=4, label=label, lw=2.5 if name == "raw" else 1.5)
        ax.fill_between(steps, lo, hi, alpha=0.12)
    ax.set(yscale="log", xlabel="training step", ylabel="FID / real floor (bands: 95% bootstrap)",
           title="one run, several averages of its weights")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)


def plot_tracks(tracks: dict, steps: list[int], path: Path) -> None:
    """Left: ‖θ_avg − θ‖ / ‖θ‖ at each kept step. Right: loss on a fixed held-out batch."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, t) in enumerate(tracks.items()):    # one colour per average in both panels
        if name != "raw":
            a.plot(steps, t["distance"], "o-", ms=3, color=f"C{i}", label=name)
        b.plot(steps, t["val_loss"], "o-", ms=3, color=f"C{i}", label=name, lw=2.5 if name == "raw" else 1.2)
    a.set(yscale="log", xlabel="training step", ylabel="‖θ_avg − θ‖ / ‖θ‖", title="how far each average lags")
    b.set(yscale="log", xlabel="training step", ylabel="loss on a fixed held-out batch",
          title="held-out loss (same t and noise)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_ramp(decays: list[float], steps: int, path: Path) -> None:
    """Left: the decay actually used at update n, with the ramp min(β, (1 + n)/(10 + n)) and without. Right: the
    share of the average still held by the initial weights, Π d_n (ramp: it vanishes within ~100 updates; fixed
    β: β^n, e^{-1} only at n = 1/(1 − β)); dotted, each decay's half-life ln 2 / (1 − β)."""
    n = np.arange(steps)
    ramp = (1 + n) / (10 + n)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, beta in enumerate(decays):
        d = np.minimum(beta, ramp)
        a.plot(n + 1, d, color=f"C{i}", label=f"β = {beta:g} with ramp")
        a.axhline(beta, color=f"C{i}", ls="--", lw=0.8)
        b.plot(n + 1, np.exp(np.cumsum(np.log(d))), color=f"C{i}", label=f"β = {beta:g} with ramp")
        b.plot(n + 1, beta ** (n + 1), color=f"C{i}", ls="--", label=f"β = {beta:g} fixed: β^n")
        half = math.log(2) / (1 - beta)
        if half < steps:
            b.axvline(half, color=f"C{i}", ls=":", lw=0.8)
    a.set(xscale="log", xlabel="update n", ylabel="decay used", title="the warm-up ramp caps the decay early",
          ylim=(0, 1.01))
    b.set(xscale="log", yscale="log", xlabel="update n", ylabel="share of the initial weights", ylim=(1e-6, 1.5),
          title="what is left of the random initialisation")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def profile(tau: np.ndarray, k: float, gamma: float) -> np.ndarray:
    """The power-EMA profile (γ + 1) τ^γ / k^{γ+1} on [0, k], 0 after."""
    return np.where(tau <= k, (gamma + 1) * (tau / k) ** gamma / k, 0.0)


def plot_posthoc(rebuilt: dict, final: dict, raw: dict, steps: list[int], powers: list[str], path: Path) -> None:
    """Left: FID / floor of each rebuilt σ_rel (95% intervals) against the fixed averages and raw weights at the
    last step. Right: for the best and the narrowest σ_rel, the exact target profile against the combination of
    stored snapshot profiles that rebuilt it."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    sig = [r["sigma_rel"] for r in rebuilt.values()]
    ratio = [r["fid_ratio"] for r in rebuilt.values()]
    scale = [r["fid_ratio"] / r["fid"] for r in rebuilt.values()]
    err = [[r["fid_ratio"] - r["fid_ci95"][0] * s for r, s in zip(rebuilt.values(), scale)],
           [r["fid_ci95"][1] * s - r["fid_ratio"] for r, s in zip(rebuilt.values(), scale)]]
    a.errorbar(sig, ratio, yerr=err, fmt="ko-", capsize=3, label="post-hoc EMA (rebuilt at the last step)")
    top = 2 * max(max(ratio), raw["fid_ratio"])
    off = [f"{name} ({s['fid_ratio']:.0f}×)" for name, s in final.items() if s["fid_ratio"] > top]
    for i, (name, s) in enumerate({**final, "raw": raw}.items()):
        if s["fid_ratio"] <= top:
            a.axhline(s["fid_ratio"], color=f"C{i}", ls="--", lw=1, label=name)
    a.set(xscale="log", yscale="log", xlabel="σ_rel of the rebuilt profile", ylabel="FID / real floor",
          title="choosing the average after training" + (f"\noff the scale: {', '.join(off)}" if off else ""),
          ylim=(None, top))
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
    k, tau = steps[-1], np.linspace(0, steps[-1], 800)
    gammas = [gamma_for(parse_average(p)[1]) for p in powers]
    best = min(rebuilt.values(), key=lambda r: r["fid"])
    for i, r in enumerate({id(x): x for x in (best, min(rebuilt.values(), key=lambda x: x["sigma_rel"]))}.values()):
        c = np.array(r["coefficients"])
        parts = [profile(tau, s, g) for s in steps for g in gammas]                   # the order posthoc() used
        b.plot(tau, profile(tau, k, gamma_for(r["sigma_rel"])), color=f"C{i}", lw=2,
               label=f"σ_rel = {r['sigma_rel']:g}, exact")
        b.plot(tau, sum(ci * p for ci, p in zip(c, parts)), color=f"C{i}", ls="--",
               label=f"rebuilt (L² error {r['profile_error']:.3f})")
    b.set(xlabel="training step τ", ylabel="weight on θ(τ)", title="target profile vs stored snapshots combined")
    b.grid(alpha=0.3)
    b.legend(fontsize=7)
    _save(fig, path)


# --- all of them, from a run's metrics.json ---------------------------------------------------------------------

def draw_all(m: dict, out: Path) -> None:
    """Every figure of the day from a metrics.json record (its config included) into `out`."""
    from common.ema import parse_average

    cfg, steps, fid = m["config"], m["kept_steps"], m["fid"]
    last = str(steps[-1])
    fixed = [n for n in fid if n == "raw" or parse_average(n)[0] == "ema"]
    emas = [parse_average(n)[1] for n in cfg["averages"] if parse_average(n)[0] == "ema"]
    powers = [n for n in cfg["averages"] if parse_average(n)[0] == "power" and n != f"power-{cfg['check_sigma']:g}"]
    plot_fid_over_training({n: {int(k): v for k, v in fid[n].items()} for n in fixed}, fixed,
                           out / "fid_over_training.png")
    plot_tracks(m["tracks"], steps, out / "tracks.png")
    plot_ramp(sorted({cfg["ema_decay"], *emas}), cfg["steps"], out / "ramp.png")
    plot_posthoc(m["posthoc"], {n: fid[n][last] for n in fid if n != "raw"}, fid["raw"][last], steps, powers,
                 out / "posthoc.png")


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "results"
    draw_all(json.loads((folder / "metrics.json").read_text()), folder)
