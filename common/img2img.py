"""Image-to-image with a trained diffusion model, written as samplers: SDEdit, and inpainting by replacement with
or without RePaint's resampling. Nothing here is trained; the network is any denoiser (common.predictions).

SDEdit (Meng et al. 2022, §3.2 and Alg. 1). To edit a guide image x_g, noise it to a time t0 and run the reverse
process from there:

    x_t0 = alpha_t0 x_g + sigma_t0 ε,   then any sampler along a grid from t0 down to 0.

t0 trades faithfulness for realism: at t0 = 0 the output is x_g itself, at t0 = 1 the guide is forgotten (alpha_1
≈ 0) and the output is an unconditional sample. In between, the noise hides the guide's unrealistic details while
its coarse layout survives, because a diffusion model denoises coarse structure first.

Inpainting by replacement (Song et al. 2021, App. I.2; Lugmayr et al. 2022, Eq. 8). With a mask m (True where
pixels are known) and the known image x_k, every reverse step t → s is followed by a paste:

    x_s = m ⊙ (alpha_s x_k + sigma_s ε')  +  (1 − m) ⊙ x_s^model,      x_s^model from one DDPM step.

The known pixels are always a correct draw of q(x_s | x_k), but the unknown ones were predicted from an x_t whose
known part was noised independently of them: the two halves are not a joint draw, and the seam shows.

RePaint's resampling (Lugmayr et al. 2022, Alg. 1 and §4.2) lets them agree: after stepping down to s, go back up
to a noisier time by the forward process, q(x_u | x_s) = N(alpha_{u|s} x_s, sigma²_{u|s} I) for u > s, and step down
again. Each round trip lets the model's prediction of the unknown pixels see the pasted known ones. Their schedule
goes back `jump` steps at a time, `repeats` − 1 times at every `jump`-th level; here that is a time *walk* that
goes up as well as down, and `inpaint` follows any walk. The plain grid (repeats = 1) is replacement alone.

References
    Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations",
        arXiv:2108.01073.
    Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models", arXiv:2201.09865.
    Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
        arXiv:2011.13456.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from common.paths import F64, AffinePath, as_t
from common.samplers import ddpm_step, noise_like, transition

Tensor = torch.Tensor


def noised(path: AffinePath, x0: Tensor, t: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """A draw of q(x_t | x0) = N(alpha_t x0, sigma_t² I); exactly x0 at t = 0."""
    return path.sample(x0, as_t(t), noise_like(x0, generator))


@torch.no_grad()
def sdedit(sampler: Callable, denoise, x: Tensor, ts: Tensor, *, path: AffinePath,
           generator: torch.Generator | None = None, **kw) -> Iterator[Tensor]:
    """SDEdit (Meng et al. 2022, Alg. 1): the guide x noised to t0 = ts[0], then `sampler` along ts.
    Yields the noised guide first, then every state; ts = [0] yields the guide itself."""
    x = noised(path, x, ts[0], generator)
    yield x
    yield from sampler(denoise, x, ts, path=path, generator=generator, **kw)


def resampling_walk(path: AffinePath, n: int, jump: int, repeats: int) -> Tensor:
    """RePaint's time walk on n uniform steps (Lugmayr et al. 2022, §4.2): down one step at a time; on reaching
    each level k = jump, 2 jump, … (with k + jump ≤ n), climb back up `jump` steps and come down again,
    repeats − 1 times. repeats = 1 is the plain uniform grid. Times in grid units / n, on the path's levels."""
    left = {k: repeats - 1 for k in range(jump, n - jump + 1, jump)}
    k, walk = n, [n]
    while k > 0:
        k -= 1
        walk.append(k)
        if left.get(k, 0) > 0:
            left[k] -= 1
            walk += range(k + 1, k + jump + 1)
            k += jump
    return path.on_grid(torch.tensor(walk, dtype=F64) * path.scale / n)


def network_calls(walk: Tensor) -> int:
    """Down-steps of a walk: one network call each (going up is the forward process, free)."""
    return int((walk[1:] < walk[:-1]).sum())


@torch.no_grad()
def inpaint(denoise, x: Tensor, ts: Tensor, *, path: AffinePath, known: Tensor, mask: Tensor,
            generator: torch.Generator | None = None, **cond) -> Iterator[Tensor]:
    """Inpainting along the walk ts (Lugmayr et al. 2022, Alg. 1), from x at ts[0]; yields every state.

    known: the image whose pixels are kept (B, C, H, W); mask: True where they are kept (broadcast to it).
    Down t → s: one DDPM step, then the known pixels replaced by a fresh draw of q(x_s | known) (Eq. 8);
    at s = 0 they are the known pixels exactly. Up t → u: x_u ~ q(x_u | x_t), the forward process (Eq. 9).
    """
    for t, s in zip(ts[:-1], ts[1:]):
        if s < t:
            x = ddpm_step(denoise, x, t, s, path=path, generator=generator, **cond)
            x = torch.where(mask, noised(path, known, s, generator), x)
        else:
            _, _, a_st, var_st = transition(path, s, t)  # alpha_{s|t}, sigma²_{s|t} of q(x_s | x_t), s > t
            x = a_st.to(x) * x + var_st.sqrt().to(x) * noise_like(x, generator)
        yield x
