"""Score distillation sampling (Poole et al. 2023, DreamFusion, §3): a frozen diffusion model as the loss of any
differentiable generator x = g(θ).

The diffusion loss of the generated image, L(θ) = E_{t,ε}[w(t) ‖ε̂(α_t g(θ) + σ_t ε; y, t) − ε‖²], has a gradient
that runs through the U-Net's Jacobian ∂ε̂/∂x_t. SDS drops that Jacobian (their Eq. 3):

    ∇_θ L_SDS = E_{t,ε}[ w(t) (ε̂(x_t; y, t) − ε) ∂x/∂θ ],      x_t = α_t g(θ) + σ_t ε.

In code the image-space direction w(t)(ε̂ − ε) is computed without a graph (`sds_direction`), and autograd carries
it through g alone by back-propagating the surrogate ½‖x − sg(x − direction)‖², whose gradient in x is exactly the
direction (`surrogate`). With classifier-free guidance ε̂ is the guided ε̃ = ε_∅ + w (ε_c − ε_∅) of
common.predictions.guided (this repository's convention: w = 1 the conditional model; DreamFusion's ω = 100 in
ε̃ = (1 + ω) ε_c − ω ε_∅ is w = 101 here).

Variable names ↔ paper: x = g(θ); xt = z_t; eps = ε; eps_hat = ε̂_φ; weight = w(t); cfg_w = 1 + ω.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from common.paths import F64, AffinePath

Tensor = torch.Tensor

# w(t) as a function of (alpha_t, sigma_t): DreamFusion leaves it free; σ_t² (= 1 − ᾱ_t on a VP path) quiets the
# nearly clean times, where ε̂ − ε is small-signal and mostly noise.
WEIGHTINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "uniform": lambda alpha, sigma: torch.ones_like(sigma),
    "sigma2": lambda alpha, sigma: sigma ** 2,
}


def sds_times(path: AffinePath, n: int, t_min: float, t_max: float, generator: torch.Generator) -> Tensor:
    """(n,) float64 times uniform on [t_min, t_max], moved onto the levels the model was trained on."""
    u = t_min + (t_max - t_min) * torch.rand(n, generator=generator, dtype=F64)
    return path.on_grid(u * path.scale)


@torch.no_grad()
def sds_direction(denoise: Callable, x: Tensor, t: Tensor, eps: Tensor, path: AffinePath, weighting: str,
                  **cond) -> Tensor:
    """w(t) (ε̂(x_t; y, t) − ε) at x_t = α_t x + σ_t ε (Eq. 3 of Poole et al.), the same shape as x: the SDS gradient
    with respect to the image. No graph is built, so no gradient ever reaches the U-Net."""
    xt = path.sample(x, t, eps)                                                  # (B, C, H, W)
    eps_hat = denoise(xt, t, **cond).eps.to(x.dtype)
    alpha, sigma = path.alpha_sigma(t, x)
    return WEIGHTINGS[weighting](alpha, sigma) * (eps_hat - eps)


def surrogate(x: Tensor, direction: Tensor) -> Tensor:
    """½ ‖x − sg(x − direction)‖², summed: its gradient in x is `direction`, so backward() yields direction · ∂x/∂θ."""
    return 0.5 * (x - (x - direction).detach()).pow(2).sum()


def optimise(image: Callable[[torch.Generator], Tensor], params: list[Tensor], denoise: Callable, y: Tensor, *,
             path: AffinePath, steps: int, lr: float, t_range: tuple[float, float], weighting: str,
             generator: torch.Generator, bf16: bool = True, desc: str = "sds") -> None:
    """`steps` Adam steps on `params` along the SDS gradient. `image(generator)` draws x = g(θ) (B, C, H, W), e.g.
    every pixel of a batch of images or a few random views of a scene; y (B,) are the labels it is pushed towards."""
    optimiser = torch.optim.Adam(params, lr=lr)
    for _ in tqdm(range(steps), desc=desc, leave=False):
        x = image(generator)                                                     # (B, C, H, W), a graph to θ
        t = sds_times(path, len(x), *t_range, generator).to(x.device)
        eps = torch.randn(x.shape, generator=generator).to(x.device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            direction = sds_direction(denoise, x.detach(), t, eps, path, weighting, y=y)
        optimiser.zero_grad(set_to_none=True)
        surrogate(x, direction.float()).backward()
        optimiser.step()
