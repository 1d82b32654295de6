"""Three policies over action chunks: diffusion policy, and two baselines (MSE regression, mixture density).

Every network sees the observation history O (B, T_o·2) and deals with a chunk A (B, H, 2), both normalised
to [-1, 1] per dimension (`Normalizer`, Chi et al. 2023 §3.3). A policy is a callable (n, T_o, 2) histories in
workspace units -> (n, H, 2) chunks in workspace units, which is what rollout.rollout executes.

    diffusion   ε_θ(A_t, t, O) on the cosine DiscreteVP path; loss ‖ε − ε_θ‖² (Eq. 5 of Chi et al.; Ho et al.
                2020 Eq. 14); a chunk is drawn with the shared DDIM sampler from A_1 ~ N(0, I), x̂0 clipped to
                [-1, 1]. The network: a 1-D convolution over the H steps of the chunk whose every block is
                FiLM-modulated by [emb(t), enc(O)] (Chi et al. §3.2; Perez et al. 2018), or an MLP.
    mse         A = f_θ(O) by least squares: the conditional mean E[A | O], which averages the modes.
    mdn         p(A | O) = Σ_k π_k N(A; μ_k, diag σ_k²), K components, trained by the NLL (Bishop 1994, Eq. 22);
                acting draws k ~ π and executes μ_k.

References: Chi et al. (2023) arXiv:2303.04137; Bishop (1994) NCRG/94/004; Perez et al. (2018) arXiv:1709.07871.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.nets import TimeEmbedding, register
from common.paths import AffinePath, uniform_grid
from common.predictions import TARGET, Coefficients, clipped, denoiser
from common.samplers import ddim

Tensor = torch.Tensor


class Normalizer:
    """Per-dimension affine map of the data's [min, max] onto [-1, 1] (and back)."""

    def __init__(self, x: Tensor):
        flat = x.reshape(-1, x.shape[-1])
        self.lo, self.hi = flat.min(0).values, flat.max(0).values

    def __call__(self, x: Tensor) -> Tensor:
        return (2 * (x - self.lo) / (self.hi - self.lo) - 1).float()

    def inverse(self, y: Tensor) -> Tensor:
        return (y.double() + 1) / 2 * (self.hi - self.lo) + self.lo


@dataclass
class PolicyNetConfig:
    kind: str = "mlp"            # diffusion's network: mlp, or conv (temporal convolution with FiLM)
    horizon: int = 16            # H: actions per chunk
    obs_features: int = 4        # T_o · 2
    width: int = 64              # channels (conv) or hidden units (mlp, baselines)
    blocks: int = 3
    components: int = 5          # K of the mixture density head


class FiLMBlock(nn.Module):
    """Two k=5 convolutions over the chunk's steps; the condition sets a per-channel scale and shift."""

    def __init__(self, width: int, cond_dim: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(width, width, 5, padding=2), nn.Conv1d(width, width, 5, padding=2)
        self.norm1, self.norm2 = nn.GroupNorm(8, width), nn.GroupNorm(8, width)
        self.film = nn.Linear(cond_dim, 2 * width)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:        # h (B, C, H), cond (B, cond_dim)
        scale, shift = self.film(cond)[..., None].chunk(2, dim=1)  # (B, C, 1) each
        y = F.mish(self.norm1(self.conv1(h))) * (1 + scale) + shift
        return h + F.mish(self.norm2(self.conv2(y)))


@register
class ChunkDenoiser(nn.Module):
    """ε_θ(A_t, t, O): (B, H, 2) noisy chunk, (B,) times, (B, T_o·2) observations -> (B, H, 2)."""

    def __init__(self, cfg: PolicyNetConfig):
        super().__init__()
        self.cfg, w = cfg, cfg.width
        self.time = TimeEmbedding(w // 4)                                          # -> (B, w)
        self.obs = nn.Sequential(nn.Linear(cfg.obs_features, w), nn.Mish(), nn.Linear(w, w))
        if cfg.kind == "conv":
            self.inp, self.out = nn.Conv1d(2, w, 5, padding=2), nn.Conv1d(w, 2, 1)
            self.blocks = nn.ModuleList(FiLMBlock(w, 2 * w) for _ in range(cfg.blocks))
        else:
            self.inp, self.out = nn.Linear(2 * cfg.horizon + 2 * w, 4 * w), nn.Linear(4 * w, 2 * cfg.horizon)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Mish(), nn.Linear(4 * w, 4 * w)) for _ in range(cfg.blocks))

    def forward(self, x: Tensor, t: Tensor, obs: Tensor) -> Tensor:
        cond = torch.cat([self.time(t.float()), self.obs(obs)], 1)              # (B, 2w)
        if self.cfg.kind == "conv":
            h = self.inp(x.transpose(1, 2))                                      # (B, w, H)
            for block in self.blocks:
                h = block(h, cond)
            return self.out(h).transpose(1, 2)                                   # (B, H, 2)
        h = self.inp(torch.cat([x.flatten(1), cond], 1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(F.mish(h)).view_as(x)


def mlp(n_in: int, n_out: int, width: int, blocks: int) -> nn.Sequential:
    layers = [nn.Linear(n_in, width), nn.Mish()]
    for _ in range(blocks - 1):
        layers += [nn.Linear(width, width), nn.Mish()]
    return nn.Sequential(*layers, nn.Linear(width, n_out))


@register
class ChunkRegressor(nn.Module):
    """A = f_θ(O): (B, T_o·2) -> (B, H, 2), trained by least squares."""

    def __init__(self, cfg: PolicyNetConfig):
        super().__init__()
        self.cfg, self.net = cfg, mlp(cfg.obs_features, 2 * cfg.horizon, 4 * cfg.width, cfg.blocks)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs).view(len(obs), self.cfg.horizon, 2)


@register
class ChunkMixture(nn.Module):
    """p(A | O) = Σ_k π_k N(A; μ_k, diag σ_k²) over the flattened chunk (D = 2H): logits, means, log σ."""

    def __init__(self, cfg: PolicyNetConfig):
        super().__init__()
        self.cfg, k, d = cfg, cfg.components, 2 * cfg.horizon
        self.net = mlp(cfg.obs_features, k * (1 + 2 * d), 4 * cfg.width, cfg.blocks)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k, d = self.cfg.components, 2 * self.cfg.horizon
        out = self.net(obs)
        logits, mu, log_sigma = out[:, :k], out[:, k:k + k * d], out[:, k + k * d:]
        return logits, mu.view(-1, k, d), log_sigma.view(-1, k, d).clamp(-7, 2)


def mixture_nll(logits: Tensor, mu: Tensor, log_sigma: Tensor, a: Tensor) -> Tensor:
    """(B,) −log Σ_k π_k N(a; μ_k, diag σ_k²) for a (B, D), by log-sum-exp (Bishop 1994, Eq. 22)."""
    z = (a[:, None] - mu) / log_sigma.exp()                                        # (B, K, D)
    log_normal = -0.5 * (z ** 2).sum(-1) - log_sigma.sum(-1) - 0.5 * a.shape[1] * math.log(2 * math.pi)
    return -torch.logsumexp(F.log_softmax(logits, -1) + log_normal, -1)


# --- losses for common.loop.fit: (model, chunks (B, H, 2), observations (B, T_o·2), generator) -> scalar ----

def diffusion_loss(path: AffinePath, prediction: str = "eps"):
    def loss(net, a0: Tensor, obs: Tensor, generator: torch.Generator) -> Tensor:
        t = path.sample_t(len(a0), generator)
        eps = torch.randn(a0.shape, generator=generator).to(a0)
        target = TARGET[prediction](a0, eps, Coefficients.at(path, t, a0))
        return F.mse_loss(net(path.sample(a0, t, eps), t.to(a0.device), obs), target)
    return loss


def mse_loss(net, a0: Tensor, obs: Tensor, generator: torch.Generator) -> Tensor:
    return F.mse_loss(net(obs), a0)


def mdn_loss(net, a0: Tensor, obs: Tensor, generator: torch.Generator) -> Tensor:
    return mixture_nll(*net(obs), a0.flatten(1)).mean()


# --- acting: histories (n, T_o, 2) in workspace units -> chunks (n, H, 2) in workspace units --------------

class Policy:
    """A trained network with its normalisers; subclasses say how a normalised chunk is drawn."""

    def __init__(self, net: nn.Module, obs_norm: Normalizer, act_norm: Normalizer, generator: torch.Generator):
        self.net, self.obs_norm, self.act_norm, self.generator = net.eval(), obs_norm, act_norm, generator

    @torch.no_grad()
    def __call__(self, history: Tensor) -> Tensor:
        return self.act_norm.inverse(self.draw(self.obs_norm(history).flatten(1)))

    def draw(self, obs: Tensor) -> Tensor:
        raise NotImplementedError


class DiffusionPolicy(Policy):
    """A chunk from `steps` DDIM steps (η = 0, common.samplers.ddim) of the cosine path, x̂0 clipped to [-1, 1]."""

    def __init__(self, net, obs_norm, act_norm, generator, path: AffinePath, steps: int, prediction: str = "eps"):
        super().__init__(net, obs_norm, act_norm, generator)
        self.path, self.ts = path, uniform_grid(path, steps)
        self.denoise = clipped(denoiser(net, prediction, path), path)

    def draw(self, obs: Tensor) -> Tensor:
        noise = torch.randn(len(obs), self.net.cfg.horizon, 2, generator=self.generator)   # A_1 (n, H, 2)
        *_, a0 = ddim(self.denoise, noise, self.ts, path=self.path, obs=obs)
        return a0


class RegressionPolicy(Policy):
    def draw(self, obs: Tensor) -> Tensor:
        return self.net(obs)


class MixturePolicy(Policy):
    def draw(self, obs: Tensor) -> Tensor:
        logits, mu, _ = self.net(obs)
        k = torch.multinomial(F.softmax(logits, -1), 1, generator=self.generator)[:, 0]  # (n,) component drawn
        return mu[torch.arange(len(obs)), k].view(len(obs), -1, 2)
