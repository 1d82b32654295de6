"""Edit your own drawing with day 9's class-conditional model: a PNG in, the edit beside it out.

    python day25/code/edit.py --input my_drawing.png --t0 0.6 [--target 7] [--method sdedit|invert|inpaint] [--seed 0]

The PNG may be any size, RGB or grey, dark ink on light paper or light on dark: it becomes a 28 × 28 white-on-black
digit in [-1, 1] the way MNIST was made (ink fitted into a 20 × 20 box, centred by its centre of mass). Without
--target the edit goes towards the class the evaluator reads in the drawing (a clean-up). Writes
my_drawing_edit.png beside the input: the 28 × 28 input | the edit, each enlarged 8×. The methods are edits.py's
(SDEdit, DDIM inversion then regeneration, inpainting of the inked region); t0 trades faithfulness for realism.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from edits import METHODS, region
from PIL import Image, ImageOps

from common.checkpoint import load_ddpm
from common.config import ArgumentParser, UserError, cli
from common.evaluator import load_evaluator
from common.paths import F64, uniform_grid
from common.predictions import guided
from common.run import ROOT, pick_device
from common.samples import quantize, to_uint8

CLASSES, SIZE, BOX, ENLARGE = 10, 28, 20, 8


def load_drawing(path: Path) -> tuple[torch.Tensor, str]:
    """The PNG as a (1, 1, 28, 28) white-on-black image in [-1, 1], and what was done to it."""
    try:
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255
    except OSError as err:
        raise UserError(f"cannot read {path} as an image ({err}); give a PNG file") from None
    done = [f"read {grey.shape[1]}×{grey.shape[0]} as grey"]
    if np.median(grey) > 0.5:                        # light paper: the ink is the dark part
        grey, _ = 1 - grey, done.append("inverted (dark ink on light paper)")
    ink = grey > 0.2
    if not ink.any():
        raise UserError(f"{path} has no ink (all one shade); draw a digit in a contrasting colour")
    rows, cols = np.nonzero(ink)
    crop = Image.fromarray((grey[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1] * 255).astype(np.uint8))
    crop = ImageOps.contain(crop, (BOX, BOX), Image.LANCZOS)    # the longer side becomes 20 px, aspect kept
    small = np.asarray(crop, dtype=np.float32) / 255
    h, w = small.shape
    cy, cx = (np.array(np.nonzero(small > 0)) * small[small > 0]).sum(1) / small[small > 0].sum()  # centre of mass
    top, left = int(round(SIZE / 2 - cy)), int(round(SIZE / 2 - cx))
    top, left = min(max(top, 0), SIZE - h), min(max(left, 0), SIZE - w)
    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    canvas[top: top + h, left: left + w] = small
    done.append(f"fitted into {BOX}×{BOX}, centred by its centre of mass on 28×28")
    return torch.from_numpy(canvas * 2 - 1)[None, None], ", ".join(done)


def edit(x: torch.Tensor, ckpt: Path, method: str, t0: float, target: int | None, w: float, steps: int,
         seed: int, device: str) -> tuple[torch.Tensor, int]:
    """The edit of x (1, 1, 28, 28) towards `target` (None: the class the evaluator reads), and that class."""
    if not ckpt.is_file():
        raise UserError(f"no day 9 checkpoint at {ckpt}: train it with `python day09/code/train.py` "
                        "(or point --checkpoint at one)")
    dev = pick_device(device)
    _, cond, path, _ = load_ddpm(ckpt, dev)
    read = int(load_evaluator("mnist").probs(quantize(x)).argmax(1))
    target = read if target is None else target
    y = torch.tensor([target], device=dev)
    ts = uniform_grid(path, max(1, round(t0 * steps)), t0) if t0 > 0 else torch.zeros(1, dtype=F64)
    extra = {"invert": {"encoder": cond, "source": torch.tensor([read], device=dev)},
             "inpaint": {"edit": region(x, 2).to(dev)}}.get(method, {})
    *_, out = METHODS[method](guided(cond, w, CLASSES), x.to(dev), ts, path=path,
                              generator=torch.Generator().manual_seed(seed), y=y, **extra)
    return out.float().cpu().clamp(-1, 1), target


def side_by_side(x: torch.Tensor, out: torch.Tensor, path: Path) -> None:
    """input | edit, enlarged ENLARGE× with square pixels, a grey bar between them."""
    pair = torch.cat([x[0, 0], torch.zeros(SIZE, 1), out[0, 0]], 1)               # (28, 57)
    pixels = to_uint8(pair[None])[0].numpy()
    pixels[:, SIZE] = 128
    Image.fromarray(pixels).resize((pair.shape[1] * ENLARGE, SIZE * ENLARGE), Image.NEAREST).save(path)


def main(argv=None) -> Path:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="a PNG of a hand-drawn digit")
    parser.add_argument("--t0", type=float, default=0.6, help="where the edit starts: 0 = the input, 1 = free")
    parser.add_argument("--target", type=int, default=None, choices=range(CLASSES), help="the class to edit towards")
    parser.add_argument("--method", default="sdedit", choices=list(METHODS))
    parser.add_argument("--w", type=float, default=3.0, help="guidance weight (1: the conditional model)")
    parser.add_argument("--steps", type=int, default=50, help="steps from t = 1; from t0: round(t0 · steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "day09/results/unet/checkpoint.pt")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    if not 0 <= args.t0 <= 1 or args.steps < 1:
        raise UserError("choose --t0 in [0, 1] and --steps ≥ 1")
    if not args.input.is_file():
        raise UserError(f"no file {args.input}; give the PNG of your drawing")
    x, done = load_drawing(args.input)
    print(f"{args.input}: {done}")
    out, target = edit(x, args.checkpoint, args.method, args.t0, args.target, args.w, args.steps, args.seed,
                       args.device)
    result = args.input.with_name(args.input.stem + "_edit.png")
    side_by_side(x, out, result)
    print(f"{args.method} from t0 = {args.t0:g} towards {target} (w = {args.w:g}): {result}")
    return result


if __name__ == "__main__":
    cli(main)
