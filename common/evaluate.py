"""Re-score any saved evaluation samples with the shared MNIST protocol.

    python -m common.evaluate dayNN/results/samples.npz [--data-dir D] [--out scores.json]

Reads an ADM-style .npz (arr_0: N x 28 x 28 x 1 uint8; arr_1: labels, if class-conditional) and
prints the score dict of common.evaluator.score_images as JSON: FID with its bootstrap interval
next to the real-vs-real floor at the same sample count, precision/recall, confidence and class
statistics, and class accuracy when labels are present.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.config import cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m common.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("samples", type=Path, help="samples.npz in the ADM layout (arr_0 NxHxWxC uint8)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $D30_DATA_DIR or ./data)")
    parser.add_argument("--out", type=Path, default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)

    from common.evaluator import score_images  # after parsing: --help stays instant
    from common.samples import load_samples_npz

    x, labels = load_samples_npz(args.samples)
    scores = {"samples": str(args.samples), **score_images(x, labels, args.data_dir)}
    text = json.dumps(scores, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    cli(main)
