"""Re-score any saved evaluation samples with the shared protocol of their dataset.

    python -m common.evaluate dayNN/results/samples.npz [--dataset D] [--data-dir D] [--out scores.json]

Reads an ADM-style .npz (arr_0: N x 28 x 28 x 1 uint8; arr_1: labels, if class-conditional), or a
.npy of images without labels ((N, H, W, C) uint8 pixels or (N, C, H, W) floats in [-1, 1]), and
prints the score dict of common.evaluator.score_images as JSON: FID with its bootstrap interval
next to the real-vs-real floor at the same sample count, precision/recall, confidence and class
statistics, the ratios of FID and of the confident share to what real data gets, and class
accuracy when labels are present. --dataset picks the evaluator and the real reference data
(mnist by default); a dataset without an evaluator prints why it was not scored.

Everything that can be checked without scoring is checked first, each a one-line error (exit 2): the
--dataset name, the --out file's folder, then a readable file with at least MIN_SCORED finite samples.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.config import ArgumentParser, UserError, check_out_folder, cli


def load_npy(path: Path):
    """Images from a .npy as a tensor (N, C, H, W): (N, H, W, C) uint8 pixels, or (N, C, H, W)
    floats already in [-1, 1]."""
    import torch  # here, not at the top: --help stays instant

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # not numpy's format, unreadable, empty or truncated
        raise UserError(f"{path}: not a .npy array ({err or type(err).__name__})") from None
    if not isinstance(images, np.ndarray):  # an .npz archive under a .npy name
        raise UserError(f"{path}: holds an .npz archive, not one .npy array; name it .npz to score it")
    if images.ndim == 4 and images.dtype == np.uint8:
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, C, H, W)
    if images.ndim == 4 and np.issubdtype(images.dtype, np.floating):
        return torch.from_numpy(images.astype(np.float32))  # score_images checks the range
    raise UserError(f"{path}: expected (N, H, W, C) uint8 or (N, C, H, W) float images, "
                    f"got {images.dtype} {images.shape}")


def check_out_file(out: Path) -> None:
    """Refuse an --out that is a folder, or whose folder cannot be created or written in, before any scoring."""
    if out.is_dir():
        raise UserError(f"--out {out}: it is a folder; name the JSON file to write, e.g. {out / 'scores.json'}")
    check_out_folder(out.parent, "--out", given=out)


def check_samples(x, path: Path) -> None:
    """Enough samples to score, and all of them numbers (a NaN breaks FID's matrix square root)."""
    from common.samples import MIN_SCORED

    if len(x) < MIN_SCORED:
        raise UserError(f"{path}: {len(x)} samples; the evaluator needs at least {MIN_SCORED} "
                        "(1,000 or more for the protocol)")
    if not x.isfinite().all():
        raise UserError(f"{path}: NaN or infinite values ({int((~x.isfinite()).sum())} of {x.numel()}); "
                        "score samples of a run that did not diverge")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m common.evaluate", description=__doc__.split("\n")[0],
                            allow_abbrev=False)
    parser.add_argument("samples", type=Path, help="samples.npz in the ADM layout (arr_0 NxHxWxC uint8), or a .npy")
    parser.add_argument("--dataset", default="mnist", help="the data the samples imitate (default mnist)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $D30_DATA_DIR or ./data)")
    parser.add_argument("--out", type=Path, default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)

    from common.data import DATASETS  # after parsing: --help stays instant
    from common.evaluator import score_images
    from common.samples import load_samples_npz

    if args.dataset not in DATASETS:
        raise UserError(f"--dataset {args.dataset}: choose one of {', '.join(DATASETS)}")
    if args.out is not None:
        check_out_file(args.out)
    if args.samples.suffix == ".npy":
        x, labels = load_npy(args.samples), None
    else:
        x, labels = load_samples_npz(args.samples)
    check_samples(x, args.samples)
    scores = score_images(x, labels, dataset=args.dataset, data_dir=args.data_dir)  # or scores_skipped
    text = json.dumps({"samples": str(args.samples), **scores}, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    cli(main)
