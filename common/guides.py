"""Inputs of image-to-image edits (days 13 and 25), all made here from seeds: stroke drawings of digits, corrupted
test digits, and the masks of inpainting. Images are (N, 1, 28, 28) in [-1, 1] (−1 black background, +1 white ink),
like the data.

Strokes. Each digit is a few straight polylines on the unit square (TEMPLATES), drawn the way a person would sketch
it with a mouse in a paint program: every vertex jittered, the whole drawing scaled, slanted and shifted, a
hard-edged pen 2–3 px wide, corners sharp. Such a drawing is legible but looks nothing like pen on paper (no soft
edges, no varying pressure, no curves): what SDEdit has to turn into a handwritten digit.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

SIZE, SUPER = 28, 4    # image side, and the factor the drawings are made at before being sampled down

# Polylines per digit in unit coordinates (x right, y down), inside the central 20 × 20 box of the 28 × 28 image
# where MNIST digits sit.
TEMPLATES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(0.5, 0.1), (0.28, 0.25), (0.25, 0.6), (0.35, 0.88), (0.6, 0.9), (0.75, 0.65), (0.74, 0.3), (0.5, 0.1)]],
    1: [[(0.42, 0.22), (0.55, 0.1), (0.53, 0.9)]],
    2: [[(0.25, 0.3), (0.4, 0.12), (0.65, 0.13), (0.72, 0.35), (0.55, 0.58), (0.25, 0.88), (0.78, 0.88)]],
    3: [[(0.28, 0.15), (0.62, 0.12), (0.7, 0.3), (0.45, 0.48), (0.72, 0.62), (0.68, 0.85), (0.3, 0.88)]],
    4: [[(0.55, 0.1), (0.25, 0.6), (0.78, 0.6)], [(0.62, 0.3), (0.62, 0.92)]],
    5: [[(0.72, 0.12), (0.33, 0.12), (0.3, 0.45), (0.6, 0.45), (0.72, 0.65), (0.6, 0.88), (0.27, 0.85)]],
    6: [[(0.65, 0.1), (0.38, 0.35), (0.28, 0.7), (0.45, 0.9), (0.68, 0.78), (0.65, 0.55), (0.32, 0.6)]],
    7: [[(0.25, 0.13), (0.75, 0.13), (0.45, 0.9)]],
    8: [[(0.5, 0.48), (0.3, 0.3), (0.5, 0.1), (0.7, 0.3), (0.5, 0.48), (0.28, 0.7), (0.5, 0.9), (0.72, 0.7),
         (0.5, 0.48)]],
    9: [[(0.7, 0.35), (0.5, 0.12), (0.3, 0.3), (0.45, 0.5), (0.7, 0.35), (0.62, 0.9)]],
}


def _affine(rng: np.random.Generator) -> np.ndarray:
    """A random scale, slant and shift of the unit square into pixel coordinates of the supersampled canvas."""
    scale = 20 * rng.uniform(0.85, 1.1)
    slant = rng.uniform(-0.25, 0.25)
    shift = 4 + rng.uniform(-1.5, 1.5, size=2) + (20 - scale) / 2
    return np.array([[scale, slant * scale, shift[0]], [0.0, scale, shift[1]]]) * SUPER


def draw_digit(digit: int, rng: np.random.Generator) -> torch.Tensor:
    """One jittered stroke drawing of `digit` with a hard-edged pen.  (1, 28, 28) in {-1, 1}"""
    canvas = Image.new("L", (SIZE * SUPER, SIZE * SUPER), 0)
    pen, m = ImageDraw.Draw(canvas), _affine(rng)
    width = round(rng.uniform(2.0, 3.0) * SUPER)
    for line in TEMPLATES[digit]:
        pts = np.asarray(line) + rng.normal(0, 0.04, size=(len(line), 2))     # a hand's wobble, per vertex
        xy = pts @ m[:, :2].T + m[:, 2]                                          # (V, 2) canvas pixels
        pen.line([tuple(p) for p in xy], fill=255, width=width)
    big = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255)[None, None]
    return (F.avg_pool2d(big, SUPER)[0] >= 0.5).float() * 2 - 1               # drawn at 4×, no anti-aliasing


def strokes(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Stroke drawings of the digits `labels` (N,), one seeded generator for the whole set.  (N, 1, 28, 28)"""
    rng = np.random.default_rng(seed)
    return torch.stack([draw_digit(int(d), rng) for d in labels])


def corrupt(x: torch.Tensor, seed: int, block: int = 4, noise: float = 0.4) -> torch.Tensor:
    """Test digits made blocky (averaged over block × block cells, then nearest-upsampled) and noisy (Gaussian,
    std `noise` in [-1, 1] units), clipped back to [-1, 1]: coarse layout kept, every fine detail lost."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(F.avg_pool2d(x, block), scale_factor=block, mode="nearest")
    return (coarse + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)


# --- inpainting masks: True where pixels are known ---------------------------------------------------------

def half_mask(n: int) -> torch.Tensor:
    """The top half known, the bottom half to fill in.  (n, 1, 28, 28) bool"""
    m = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.bool)
    m[..., : SIZE // 2, :] = True
    return m


def centre_mask(n: int, side: int = 12) -> torch.Tensor:
    """Everything known but a centred side × side square."""
    m = torch.ones(n, 1, SIZE, SIZE, dtype=torch.bool)
    lo = (SIZE - side) // 2
    m[..., lo: lo + side, lo: lo + side] = False
    return m


def stroke_mask(n: int, seed: int, lines: int = 3) -> torch.Tensor:
    """Random thick scribbles erased: `lines` random segments 3–5 px wide through the digit's box, per image."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        canvas = Image.new("L", (SIZE, SIZE), 0)
        pen = ImageDraw.Draw(canvas)
        for _ in range(lines):
            a, b = rng.uniform(4, 24, size=2), rng.uniform(4, 24, size=2)
            pen.line([tuple(a), tuple(b)], fill=255, width=int(rng.integers(3, 6)))
        out.append(torch.from_numpy(np.asarray(canvas) == 0)[None])
    return torch.stack(out)


MASKS = {"half": lambda n, seed: half_mask(n), "centre": lambda n, seed: centre_mask(n),
         "strokes": lambda n, seed: stroke_mask(n, seed)}
