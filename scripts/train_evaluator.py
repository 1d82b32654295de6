"""Train the evaluator that image-generating days are scored with, one per dataset.

    python scripts/train_evaluator.py                 # MNIST: 800 steps, ~12 CPU-minutes
    python scripts/train_evaluator.py --dataset=fashion-mnist --steps=2000   # ~5 min on 2 idle cores
    python scripts/train_evaluator.py --preset smoke --out /tmp/ev

Writes OUT/<weights> (state_dict + meta, loadable with weights_only=True) and the same name with
.json (the same meta, for people); <weights> is the dataset's row of common.evaluator.EVALUATORS
(mnist_evaluator.pt, fashion_mnist_evaluator.pt). OUT defaults to common/assets/.

Why not a plain classifier: softmax classifiers are confidently wrong far from the data. This
script with --outlier_weight=0 calls all of 1,000 uniform-noise images an '8' (max probability
0.996; Gaussian noise, constant images: 1.0), so "confident" would not mean "looks like a digit".
Outlier Exposure (Hendrycks et al. 2019, Eq. 1) fixes this: every step also shows a batch of
obvious non-images (non-digits, non-clothes) whose target is the *uniform* distribution,

    loss = CE(f(x), y) + lambda * E_outliers[ CE(f(x_out), U{0..9}) ],   lambda = 0.5 as in the paper,

and CE to uniform = -(1/10) sum_k log p_k = KL(U || p) + log 10. The outliers: uniform and
Gaussian noise, blank/white/constant images, salt-and-pepper, blurred (blobby) noise and
real digits with their pixels shuffled (right ink histogram, no shape).

Reference: Hendrycks, Mazeika & Dietterich (2019), "Deep anomaly detection with outlier exposure",
ICLR.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from common.config import UserError, cli, parse_args, to_dict  # noqa: E402
from common.data import load_images  # noqa: E402
from common.evaluator import Evaluator, evaluator_for  # noqa: E402
from common.run import pick_device  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "common" / "assets"


@dataclass
class EvaluatorConfig:
    steps: int = 800
    batch_size: int = 128
    outlier_batch: int = 48  # outliers per step, on top of batch_size digits
    outlier_weight: float = 0.5  # lambda in the OE loss
    lr: float = 3e-3
    max_rotate: float = 12.0  # degrees; augmentation of the digits
    max_shift: float = 2.5  # pixels
    seed: int = 0
    dataset: str = "mnist"  # a key of common.evaluator.EVALUATORS: says what to train on and where to save


PRESETS = {
    "smoke": EvaluatorConfig(steps=5, batch_size=32, outlier_batch=8),
    "cpu": EvaluatorConfig(),
    "gpu": EvaluatorConfig(steps=4000, batch_size=256, outlier_batch=96),  # full MNIST
}


# --- data: augmented digits and outliers ---------------------------------------------------------

def augment(x: torch.Tensor, cfg: EvaluatorConfig, gen: torch.Generator) -> torch.Tensor:
    """Random rotation, scale (0.9-1.1) and shift of digits (N, 1, 28, 28), background stays -1."""
    n = len(x)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(cfg.max_rotate)
    scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * cfg.max_shift / 14  # grid units: 14 px = 1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with 0, so sample x + 1 (background 0) and shift back.
    return F.grid_sample(x + 1, grid, align_corners=False) - 1


def _blobs(n: int, gen: torch.Generator) -> torch.Tensor:
    """Smooth random blobs: noise on a coarse r x r grid (r in 2..7) upsampled to 28 x 28."""
    r = int(torch.randint(2, 8, (1,), generator=gen))
    coarse = torch.rand(n, 1, r, r, generator=gen) * 2 - 1
    return F.interpolate(coarse, size=28, mode="bicubic", align_corners=False).clamp(-1, 1)


def outliers(n: int, digits: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Obvious non-digits (n of each kind), (n, 1, 28, 28) in [-1, 1], keyed by kind."""
    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    level = rand(n, 1, 1, 1) * 2 - 1
    level = torch.where(rand(n, 1, 1, 1) < 0.3, level.sign(), level)  # plenty of exact blank/white
    sigma = 0.05 + 1.2 * rand(n, 1, 1, 1)
    salt = rand(n, 1, 28, 28) < 0.02 + 0.4 * rand(n, 1, 1, 1)
    picked = digits[torch.randint(0, len(digits), (n,), generator=gen)].flatten(1)
    shuffled = torch.stack([d[torch.randperm(784, generator=gen)] for d in picked])
    return {
        "uniform": rand(n, 1, 28, 28) * 2 - 1,
        "gaussian": (level + sigma * torch.randn(n, 1, 28, 28, generator=gen)).clamp(-1, 1),
        "constant": level.expand(n, 1, 28, 28).clone(),
        "salt_pepper": torch.where(salt, 1.0, -1.0),
        "blobs": _blobs(n, gen),
        "shuffled": shuffled.reshape(n, 1, 28, 28),
    }


def outlier_batch(n: int, digits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """n outliers with the kinds mixed evenly (rounded up, then trimmed)."""
    kinds = outliers(math.ceil(n / 6), digits, gen)
    return torch.cat(list(kinds.values()))[:n]


# --- training -------------------------------------------------------------------------------------

def train(model: Evaluator, x: torch.Tensor, y: torch.Tensor, cfg: EvaluatorConfig,
          device: torch.device) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
        digits = augment(x[idx], cfg, gen)
        out = outlier_batch(cfg.outlier_batch, x, gen)
        logits = model(torch.cat([digits, out]).to(device))  # (B + B_out, 10)
        loss_in = F.cross_entropy(logits[: len(idx)], y[idx].to(device))
        loss_out = -logits[len(idx):].log_softmax(dim=1).mean()  # CE to the uniform distribution
        loss = loss_in + cfg.outlier_weight * loss_out
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            print(f"step {step:4d}  loss_digits {loss_in.item():.4f}  loss_outliers {loss_out.item():.4f}")
    model.eval()


def measure(model: Evaluator, test_x: torch.Tensor, test_y: torch.Tensor,
            train_x: torch.Tensor) -> dict:
    """Test accuracy and, for fresh outliers of each kind, the largest max-probability."""
    acc = (model.probs(test_x).argmax(dim=1) == test_y).float().mean().item()
    fresh = outliers(200, train_x, torch.Generator().manual_seed(12345))
    worst = {kind: round(model.probs(v).max(dim=1).values.max().item(), 4) for kind, v in fresh.items()}
    return {"test_accuracy": round(acc, 4), "outlier_max_prob": worst}


def main(argv: list[str] | None = None) -> None:
    cfg, run = parse_args(PRESETS, ASSETS, "Train an outlier-aware evaluator for one dataset.", argv)
    if run.resume:
        raise UserError("--resume: this script trains in minutes; run it again without --resume")
    spec = evaluator_for(cfg.dataset)
    if spec is None:
        raise UserError(f"--dataset={cfg.dataset}: no row for it in common.evaluator.EVALUATORS; add one first")
    device = pick_device(run.device)
    torch.manual_seed(cfg.seed)
    train_set = load_images(spec.reference, "train", run.data_dir)
    test_set = load_images(spec.reference, "test", run.data_dir)
    print(f"{train_set.name}: {len(train_set.x)} train, {len(test_set.x)} test; "
          f"{torch.get_num_threads()} threads on {device}")
    model = Evaluator().to(device)
    start, cpu_start = time.time(), time.process_time()
    train(model, train_set.x, train_set.y, cfg, device)
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
    model = model.cpu()
    meta = {"dataset": train_set.name, "train_size": len(train_set.x), "test_size": len(test_set.x),
            **measure(model, test_set.x, test_set.y, train_set.x), "seed": cfg.seed,
            "steps": cfg.steps, "preset": run.preset, "config": to_dict(cfg),
            "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu_seconds, 1),
            "threads": torch.get_num_threads(), "device": str(device)}
    run.out.mkdir(parents=True, exist_ok=True)
    weights = run.out / spec.weights
    torch.save({"state_dict": model.state_dict(), "meta": meta}, weights)
    weights.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    cli(main)
