"""Conditional flow matching on the linear path, and what makes one flow straighter than another.

Here t = 0 is data and t = 1 noise, as on every day; Lipman et al. and Tong et al. write the opposite (their
t = 1 is data), so their velocities are ours with the sign flipped.

    x_t = (1 − t) x0 + t x1,    u_t = d x_t / dt = x1 − x0           (x0 data, x1 ~ N(0, I); common.paths.Linear)

Conditional flow matching regresses a network on u_t (Lipman et al. 2023, Eq. 9; TARGET["velocity"]):

    L_CFM = E_{t, x0, x1} ‖v_θ(x_t, t) − (x1 − x0)‖²

and its minimiser is the *marginal* velocity v(x, t) = E[x1 − x0 | x_t = x], whose ODE dx/dt = v carries
N(0, I) at t = 1 to the data at t = 0. How (x0, x1) are paired is free: I-CFM draws them independently;
OT-CFM (Tong et al. 2024, §3.2) re-pairs each mini-batch by the optimal-transport assignment that minimises
Σ ‖x0_i − x1_σ(i)‖², so that conditional paths cross less and the marginal flow is straighter.

Straightness (Liu et al. 2023, Eq. 7, in our time) of a flow z_t from noise z_1 to data z_0:

    S = ∫_0^1 E ‖(z_1 − z_0) − dz_t/dt‖² dt

the mean squared deviation of the velocity from the chord's; S = 0 exactly when every path is a straight line
travelled at constant speed, and then one Euler step is exact (common.metrics.straightness).

References
    Lipman, Chen, Ben-Hamu, Nickel & Le 2023, "Flow Matching for Generative Modeling", arXiv:2210.02747.
    Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf & Bengio 2024, "Improving and generalizing
        flow-based generative models with minibatch optimal transport", TMLR, arXiv:2302.00482.
    Liu, Gong & Liu 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified
        Flow", arXiv:2209.03003.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from common.diffusion import diffusion_loss
from common.paths import Linear

Tensor = torch.Tensor
PATH = Linear()


def independent(x0: Tensor, x1: Tensor) -> Tensor:
    """I-CFM: keep the batch's pairing, x1 drawn independently of x0."""
    return x1


def ot_pairing(x0: Tensor, x1: Tensor) -> Tensor:
    """OT-CFM: x1 reordered so that Σ_i ‖x0_i − x1_i‖² is the least of all the batch's pairings (the Hungarian
    algorithm on the squared-distance matrix, scipy's linear_sum_assignment)."""
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()).pow(2)          # (B, B)
    _, cols = linear_sum_assignment(cost.cpu().numpy())                             # rows come back as 0..B−1
    return x1[torch.as_tensor(cols, device=x1.device)]


PAIRINGS = {"icfm": independent, "otcfm": ot_pairing}


def cfm_loss(pairing: str):
    """The training loss (net, x0, y, generator) -> mean CFM loss: noise drawn, re-paired, then day 6's loss
    function with the velocity target on the linear path."""
    pair = PAIRINGS[pairing]

    def loss_fn(net, x0, y, generator):
        x1 = pair(x0, torch.randn(x0.shape, generator=generator).to(x0))
        return diffusion_loss(net, x0, PATH, "velocity", generator, noise=x1)[0].mean()
    return loss_fn
