"""Re-score any saved evaluation samples with the shared protocol of their dataset.

    python -m common.evaluate dayNN/results/samples.npz [--dataset D] [--data-dir D] [--out scores.json]

Reads an ADM-style .npz (arr_0: N x 28 x 28 x 1 uint8; arr_1: labels, if class-conditional), or a
.npy of images without labels ((N, H, W, C) uint8 pixels or (N, C, H, W) floats in [-1, 1]), and
prints the score dict of common.evaluator.score_images as JSON: FID with its bootstrap interval
next to the real-vs-real floor at the same sample count, precision/recall, confidence and class
statistics, the ratios of FID and of the confident share to what real data gets, and class
accuracy when labels are present. --dataset picks the evaluator and the real reference data
(mnist by default); a dataset without an evaluator prints why it was not scored.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common.config import UserError, cli


def load_npy(path: Path):
    """Images from a .npy as a tensor (N, C, H, W): (N, H, W, C) uint8 pixels, or (N, C, H, W)
    floats already in [-1, 1]."""
    import torch  # here, not at the top: --help stays instant

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UserError(f"{path}: not a .npy array ({err})") from None
    if images.ndim == 4 and images.dtype == np.uint8:
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, C, H, W)
    if images.ndim == 4 and np.issubdtype(images.dtype, np.floating):
        return torch.from_numpy(images.astype(np.float32))  # score_images checks the range
    raise UserError(f"{path}: expected (N, H, W, C) uint8 or (N, C, H, W) float images, "
                    f"got {images.dtype} {images.shape}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m common.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("samples", type=Path, help="samples.npz in the ADM layout (arr_0 NxHxWxC uint8), or a .npy")
    parser.add_argument("--dataset", default="mnist", help="the data the samples imitate (default mnist)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $D30_DATA_DIR or ./data)")
    parser.add_argument("--out", type=Path, default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)

    from common.evaluator import score_images  # after parsing: --help stays instant
    from common.samples import load_samples_npz

    if args.samples.suffix == ".npy":
        x, labels = load_npy(args.samples), None
    else:
        x, labels = load_samples_npz(args.samples)
    scores = score_images(x, labels, dataset=args.dataset, data_dir=args.data_dir)  # or scores_skipped
    text = json.dumps({"samples": str(args.samples), **scores}, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    cli(main)
