"""Training objectives on an affine path: the denoising loss, Min-SNR weights, the prior KL term.

    loss, t = diffusion_loss(model, x0, path, "v", generator)      # per-sample MSE and the t it used

The forward process and its schedules live in common.paths, the prediction adapters in
common.predictions and the samplers in common.samplers; this module is what a day trains with.

References
    Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (Alg. 1, Eq. 5), arXiv:2006.11239.
    Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", arXiv:2303.09556.
    Lipman et al. 2023, "Flow Matching for Generative Modeling" (the velocity target), arXiv:2210.02747.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from common.config import UserError
from common.paths import AffinePath, as_t
from common.predictions import TARGET, Coefficients, check_prediction

Tensor = torch.Tensor


def gaussian_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) ‖ N(mean2, var2)) elementwise, in nats."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


def kl_prior(path: AffinePath, x0: Tensor) -> Tensor:
    """KL(q(x_1 | x0) ‖ N(0, I)) per sample in nats: the L_T term of the ELBO (Eq. 5 of Ho et al.)."""
    alpha, sigma = (f(as_t(1.0)).to(x0) for f in (path.alpha, path.sigma))
    kl = gaussian_kl(alpha * x0, sigma ** 2, torch.zeros_like(x0), torch.ones_like(x0))
    return kl.flatten(1).sum(1)


def min_snr_weight(prediction: str, gamma: float = 5.0) -> Callable[[Tensor], Tensor]:
    """Min-SNR-γ loss weights (Hang et al. 2023, Eq. 7) on a VP path: SNR -> weight of the target's MSE.

    Written as an x0 error every target's MSE is a weighted ‖x̂0 − x0‖²: the eps MSE is SNR times it and the
    v MSE (1 + SNR) times it (x̂0 − x0 = −(sigma/alpha)(ε̂ − ε) = −sigma (v̂ − v)). Min-SNR weights the x0
    error by min(SNR, γ), so easy low-noise levels stop dominating the gradient.
    """
    per_x0_error = {"eps": lambda snr: snr, "x0": lambda snr: torch.ones_like(snr), "v": lambda snr: snr + 1}
    if check_prediction(prediction) not in per_x0_error:
        raise UserError(f"Min-SNR weights are defined for eps, x0 and v predictions, not '{prediction}'")
    return lambda snr: snr.clamp(max=gamma) / per_x0_error[prediction](snr)


def diffusion_loss(model: Callable, x0: Tensor, path: AffinePath, prediction: str,
                   generator: torch.Generator | None = None, weight: Callable[[Tensor], Tensor] | None = None,
                   noise: Tensor | None = None, **cond) -> tuple[Tensor, Tensor]:
    """Per-sample MSE between the network and its target at random t (Alg. 1 of Ho et al.).

    t comes from the path (DDPM's levels, or uniform on (0, 1]); the target is TARGET[prediction]: eps, x0,
    v, the flow-matching velocity or the score. `weight` maps SNR(t) to a per-sample loss weight (e.g.
    `min_snr_weight`); None is the plain MSE. `noise`: the eps paired with each x0 (say, re-paired by optimal
    transport); None draws it independently. Returns (loss (B,), t (B,)) so callers can bin the loss by t.
    """
    check_prediction(prediction)
    t = path.sample_t(len(x0), generator)
    eps = torch.randn(x0.shape, generator=generator).to(x0) if noise is None else noise
    c = Coefficients.at(path, t, x0)
    xt = c.alpha * x0 + c.sigma * eps
    target = TARGET[prediction](x0, eps, c)
    out = model(xt, t.to(x0), **cond)
    loss = (out.float() - target).pow(2).flatten(1).mean(1)
    if weight is not None:
        loss = loss * weight(path.log_snr(t).exp()).to(loss)
    return loss, t
