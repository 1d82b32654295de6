"""Day 25's edits: the inputs (rough edits and pure strokes) and the three ways to edit them, each written as a sampler
`(denoise, x, ts, *, path, generator, **cond)` that yields every state, so common.samplers.sample_batched runs it.

Inputs. A *rough edit* is a held-out test digit with a crude stroke pasted in where the target digit differs from it
(a bar on top turns a 1 into a 7, a closed top turns a 4 into a 9): the stroke is placed in the digit's own bounding
box, its vertices jittered and its width drawn from a seeded generator. *Pure strokes* are day 13's stroke drawings
(common.guides). The *edited region* is the pasted ink dilated by a few pixels (for pure strokes: all the ink).

Methods, all from a time t0 down to 0 on the same grid, towards the target class y with guidance weight w:

    SDEdit      x_t0 = alpha_t0 x + sigma_t0 ε, then ancestral steps (Meng et al. 2022, Alg. 1).
    inversion   x_t0 = DDIM run *upwards* from x under the source label (η = 0, Song et al. 2021, Eq. 12 with s > t),
                then DDIM down under y: no fresh noise, so what the code x_t0 holds of x survives.
    inpainting  SDEdit inside the edited region, and outside it the input noised to each level and pasted back
                (replacement, Lugmayr et al. 2022, Eq. 8): the pixels outside the region end exactly as they began.

References: Meng et al. 2022 (arXiv:2108.01073); Song, Meng & Ermon 2021 (arXiv:2010.02502);
Lugmayr et al. 2022 (arXiv:2201.09865); Ho & Salimans 2022 (arXiv:2207.12598).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from common.img2img import inpaint, noised, sdedit
from common.paths import AffinePath
from common.samplers import ddim, ddpm, last

Tensor = torch.Tensor
SIZE = 28

# The crude stroke of each class edit (source, target): polylines in a square of the digit's height centred on its
# bounding box, unit coordinates (x right, y down). Each adds what the target has and the source lacks.
PAIRS: dict[tuple[int, int], list[list[tuple[float, float]]]] = {
    (1, 7): [[(0.15, 0.08), (0.62, 0.06)]],                                      # the 7's bar
    (3, 8): [[(0.3, 0.12), (0.22, 0.3), (0.5, 0.5), (0.22, 0.72), (0.32, 0.92)]],  # the 8's left half
    (4, 9): [[(0.28, 0.2), (0.5, 0.05), (0.72, 0.12)]],                            # a closed top
    (5, 6): [[(0.32, 0.45), (0.22, 0.75), (0.45, 0.95)]],                          # the 6's closed belly
    (7, 9): [[(0.7, 0.15), (0.25, 0.2), (0.3, 0.5), (0.62, 0.45)]],                # a loop under the bar
}


# --- inputs ---------------------------------------------------------------------------------------------------

def draw_segments(points: Tensor, width: Tensor) -> Tensor:
    """Anti-aliased thick polylines: points (N, V, 2) in pixels (x, y), width (N,) in pixels; ink +1 on −1.
    A pixel's ink is 1 within width / 2 of a segment's axis, falling to 0 over one pixel beyond.  (N, 1, 28, 28)"""
    grid = torch.stack(torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="xy"), -1)
    p = grid.reshape(1, 1, -1, 2)                                                # (1, 1, P, 2) pixel centres
    a, b = points[:, :-1, None], points[:, 1:, None]                             # (N, V−1, 1, 2) segment ends
    ab = b - a
    u = (((p - a) * ab).sum(-1) / ab.pow(2).sum(-1).clamp(min=1e-9)).clamp(0, 1)  # (N, V−1, P) nearest point
    dist = (p - a - u[..., None] * ab).norm(dim=-1).amin(1)                      # (N, P) to the nearest segment
    ink = (width[:, None] / 2 + 0.5 - dist).clamp(0, 1)
    return (ink * 2 - 1).view(-1, 1, SIZE, SIZE)


def bounding_boxes(x: Tensor) -> Tensor:
    """Each digit's ink box (x_min, y_min, x_max, y_max) in pixels, ink = pixels above 0.  (N, 4)"""
    ink = x[:, 0] > 0                                                            # (N, H, W)
    coords = torch.arange(SIZE, dtype=torch.float)
    cols, rows = ink.any(1), ink.any(2)                                          # (N, W), (N, H)

    def span(on):
        lo = torch.where(on, coords, torch.inf).amin(1)
        hi = torch.where(on, coords, -torch.inf).amax(1) + 1
        return torch.where(on.any(1), lo, 4.0), torch.where(on.any(1), hi, 24.0)
    (x0, x1), (y0, y1) = span(cols), span(rows)
    return torch.stack([x0, y0, x1, y1], 1)


def rough_edit(x: Tensor, pair: tuple[int, int], generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The source digits x (N, 1, 28, 28) with the pair's crude stroke pasted in (brightest pixel wins), and the
    stroke alone; vertices jittered by 4% of the box, pen 2–3 px wide."""
    box = bounding_boxes(x)
    side = (box[:, 3] - box[:, 1])[:, None, None]                                # (N, 1, 1) the digit's height
    corner = torch.stack([(box[:, 0] + box[:, 2] - side[:, 0, 0]) / 2, box[:, 1]], 1)[:, None]  # (N, 1, 2)
    strokes = []
    for line in PAIRS[pair]:
        unit = torch.tensor(line).expand(len(x), -1, -1)                         # (N, V, 2)
        unit = unit + 0.04 * torch.randn(unit.shape, generator=generator)
        width = 2 + torch.rand(len(x), generator=generator)
        strokes.append(draw_segments(corner + side * unit, width))
    stroke = torch.stack(strokes).amax(0)
    return torch.maximum(x, stroke), stroke


def region(ink: Tensor, dilate: int) -> Tensor:
    """The edited region: pixels within `dilate` pixels (a square neighbourhood) of the ink above 0.  (N, 1, H, W)"""
    return F.max_pool2d((ink > 0).float(), 2 * dilate + 1, stride=1, padding=dilate) > 0


# --- the three methods -----------------------------------------------------------------------------------------

def sdedit_edit(denoise, x: Tensor, ts: Tensor, *, path: AffinePath, generator=None, **cond) -> Iterator[Tensor]:
    """SDEdit towards the condition in `cond` (Meng et al. 2022): the input noised to ts[0], then DDPM steps."""
    yield from sdedit(ddpm, denoise, x, ts, path=path, generator=generator, **cond)


def encoding_grid(ts: Tensor, path: AffinePath) -> Tensor:
    """A decoding grid run backwards, from the first level (ε̂ is undefined at sigma = 0) up to ts[0]."""
    up = ts.flip(0).clone()
    if len(up) > 1:
        up[0] = path.first_time
    return up


def invert(denoise, x: Tensor, ts: Tensor, *, path: AffinePath, **cond) -> Tensor:
    """DDIM inversion: the η = 0 step x_s = alpha_s x̂0 + sigma_s ε̂ taken from t to s > t along encoding_grid(ts),
    each step using the prediction at its start in place of the one at its unknown end (the source of its error)."""
    return last(ddim(denoise, x, encoding_grid(ts, path), path=path, **cond)) if len(ts) > 1 else x


@torch.no_grad()
def invert_edit(denoise, x: Tensor, ts: Tensor, *, path: AffinePath, encoder, source: Tensor, generator=None,
                **cond) -> Iterator[Tensor]:
    """Invert x to ts[0] with `encoder` under the source labels, then DDIM down `ts` with `denoise` under `cond`."""
    x = invert(encoder, x, ts, path=path, y=source)
    yield x
    yield from ddim(denoise, x, ts, path=path, **cond)


@torch.no_grad()
def round_trip(denoise, x: Tensor, ts: Tensor, *, path: AffinePath, generator=None, **cond) -> Iterator[Tensor]:
    """Invert x to ts[0] and decode it back on the same grid, under the same condition: x again, up to the
    inversion's error (Song et al. 2021, §5.4: DDIM's encoding is an ODE's, exact as the steps shrink)."""
    x = invert(denoise, x, ts, path=path, **cond)
    yield x
    yield from ddim(denoise, x, ts, path=path, **cond)


@torch.no_grad()
def inpaint_edit(denoise, x: Tensor, ts: Tensor, *, path: AffinePath, edit: Tensor, generator=None,
                 **cond) -> Iterator[Tensor]:
    """Regenerate only where `edit` is True (B, 1, H, W): SDEdit's start, then replacement of the rest at each step."""
    start = noised(path, x, ts[0], generator)
    yield start
    yield from inpaint(denoise, start, ts, path=path, known=x, mask=~edit, generator=generator, **cond)


METHODS = {"sdedit": sdedit_edit, "invert": invert_edit, "inpaint": inpaint_edit}
