"""The seven few-step families on one U-Net, each trained to the same FLOP budget B (budget.py), and the samplers that
turn each into images at 1, 2 or 4 network calls.

    DDPM        v-prediction on day 6's cosine DiscreteVP (Ho et al. 2020; Salimans & Ho 2022), B
    flow        conditional flow matching on the linear path, velocity target (Lipman et al. 2023), B
    reflow      the flow's B/2 checkpoint → its ODE's (noise, sample) pairs → reflow training (Liu et al. 2023), B/2
    CD          the flow's B/2 checkpoint as teacher → consistency distillation (Song et al. 2023), B/2
    PD          the DDPM's B/2 checkpoint → progressive distillation 16 → 8 → 4 → 2 → 1 (Salimans & Ho 2022), B/2
    DDGAN       generator + discriminator on the T = 4 grid of day 6's path (Xiao et al. 2022), B

A student's budget is what is left of B after its teacher's half: the teacher's compute is counted once, in the run
it came from (its checkpoint at B/2 is kept, not retrained). The math of each family is in common (reflow,
consistency, progressive, ddgan); this file only strings it to the budget.

References: see README.md's Key references.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial

import torch
from budget import spent, step_flops, steps_to_reach

from common.checkpoint import load_model
from common.consistency import cd_loss
from common.ddgan import PATH as GAN_PATH
from common.ddgan import Discriminator, gan_denoiser
from common.diffusion import diffusion_loss
from common.flops import flops_with_grad
from common.gan_loop import gan_step, train_gan
from common.loop import fit
from common.nets import UNet
from common.paths import DiscreteVP, Linear, uniform_grid
from common.predictions import clipped, denoiser
from common.progressive import distill_loss
from common.reflow import independent_loss, paired_loss, reflow_pairs, trainable_copy
from common.training import TrainConfig

VP = DiscreteVP.named("cosine", 1000)      # day 6's path (DDPM, PD, DDGAN)
FLOW = Linear()                            # day 16's path (flow, reflow, CD)


@dataclass
class Recipe:
    """How one family's network is optimised; its number of steps is the budget's, not a setting."""
    lr: float
    warmup: int
    ema_decay: float = 0.99
    batch_size: int = 128


@dataclass
class GANRecipe:                          # day 21's recipe; `steps` is set by the budget (common.gan_loop reads it)
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.9)
    r1_gamma: float = 0.05
    r1_every: int = 4
    ema_decay: float = 0.99
    steps: int = 0
    seed: int = 0
    bf16: bool = True
    log_every: int = 50
    ckpt_every: int = 500


def ddpm_loss(net, x0, y, generator):
    """‖v_θ(x_t, t) − v‖², t on day 6's 1000 levels (Salimans & Ho's v = α ε − σ x0)."""
    return diffusion_loss(net, x0, VP, "v", generator)[0].mean()


def backbone(cfg, family: str):
    """Every family's network is cfg.unet; DDGAN's generator also takes z as one extra input channel (day 21)."""
    return replace(cfg.unet, cond_channels=1) if family == "ddgan" else cfg.unet


def train(net, loss, x, y, recipe: Recipe, steps: int, seed: int, cfg, part, keep: int = 0):
    """fit() for `steps` steps of the recipe; the EMA network (eval mode). `keep`: also keep that step's checkpoint."""
    tc = TrainConfig(steps=steps, batch_size=recipe.batch_size, lr=recipe.lr, warmup=min(recipe.warmup, steps),
                     ema_decay=recipe.ema_decay, bf16=cfg.bf16, log_every=cfg.log_every, sample_every=0,
                     ckpt_every=cfg.ckpt_every, keep_every=keep, seed=seed)
    return fit(net, loss, x, y, tc, part)[1].eval()


def kept(part, step: int):
    """The EMA network a run kept at `step` (its B/2 or B/4 state): a teacher, loaded, not retrained."""
    path = part.out / f"checkpoint_step{step:06d}.pt"
    return load_model(path, part.device)[0], path


# --- the families -------------------------------------------------------------------------------------------------

def from_scratch(family: str, data, budget: int, unit: int, cfg, seed: int, part, keep: int) -> tuple:
    """DDPM or flow from a seeded init for the whole budget, keeping the checkpoint at step `keep` for students."""
    loss, recipe = (ddpm_loss, cfg.ddpm) if family == "ddpm" else (independent_loss, cfg.fm)
    torch.manual_seed(seed)
    net = UNet(backbone(cfg, family))
    steps = steps_to_reach(budget, lambda k: unit * recipe.batch_size)
    model = train(net, loss, data.x, None, recipe, steps, seed, cfg, part, keep)
    return model, {"steps": steps, "train_flops": spent(steps, lambda k: unit * recipe.batch_size)}


def reflow(teacher, data, budget: int, unit: int, fwd: int, cfg, seed: int, part) -> tuple:
    """Pairs (x1, Φ(x1)) from the teacher's ODE (Heun, pair_steps), then reflow training on them for what is left."""
    x1 = torch.randn(cfg.n_pairs, *data.x.shape[1:], generator=torch.Generator().manual_seed(seed + 10))
    start = time.time()
    x0 = reflow_pairs(denoiser(teacher, "velocity", FLOW), x1, cfg.pair_steps, device=part.device, batch=cfg.batch,
                      bf16=cfg.bf16)
    pair_seconds = time.time() - start
    pair_flops = cfg.n_pairs * (2 * cfg.pair_steps - 1) * fwd
    cost = lambda k: unit * cfg.reflow.batch_size
    steps = steps_to_reach(budget - pair_flops, cost)
    model = train(trainable_copy(teacher), paired_loss, x0, x1, cfg.reflow, steps, seed, cfg, part)
    return model, {"steps": steps, "train_flops": pair_flops + spent(steps, cost), "pair_flops": pair_flops,
                   "pair_seconds": round(pair_seconds, 1)}


def consistency_distillation(teacher, data, budget: int, cfg, seed: int, part) -> tuple:
    """CD from the flow teacher (one teacher Euler step per pair of levels, cd_levels levels)."""
    loss = cd_loss(denoiser(teacher, "velocity", FLOW), cfg.cd_levels)
    per_image = step_flops(teacher, loss, data.x[: cfg.cd.batch_size])
    cost = lambda k: per_image * cfg.cd.batch_size
    steps = steps_to_reach(budget, cost)
    model = train(trainable_copy(teacher), loss, data.x, None, cfg.cd, steps, seed, cfg, part)
    return model, {"steps": steps, "train_flops": spent(steps, cost), "step_flops_per_image": per_image}


def progressive(teacher, data, budget: int, cfg, seed: int, run) -> tuple[dict, dict]:
    """Stages pd_start/2, pd_start/4, ..., 1 steps, the budget split evenly; each stage's student (by its steps)."""
    stages = [cfg.pd_start >> k for k in range(1, cfg.pd_start.bit_length())]
    students, steps, total, seconds = {}, {}, 0, 0.0
    net, teach = teacher, clipped(denoiser(teacher, "v", VP), VP)
    for n in stages:
        loss = distill_loss(teach, lambda m, x, t: denoiser(m, "v", VP)(x, t).x0, VP, uniform_grid(VP, 2 * n))
        per_image = step_flops(net, loss, data.x[: cfg.pd.batch_size])
        cost = lambda k, f=per_image: f * cfg.pd.batch_size
        steps[n] = steps_to_reach(budget // len(stages), cost)
        part = run.part(f"pd-s{seed}-{n:02d}")
        net = train(trainable_copy(net), loss, data.x, None, cfg.pd, steps[n], seed, cfg, part)
        teach = clipped(denoiser(net, "v", VP), VP)
        students[n], total, seconds = net, total + spent(steps[n], cost), seconds + part.train_seconds
    return students, {"steps": sum(steps.values()), "stage_steps": steps, "train_flops": total,
                      "train_seconds": round(seconds, 1)}


def gan_step_flops(G, D, x0: torch.Tensor, grid: torch.Tensor, recipe: GANRecipe, lazy: bool) -> int:
    """FLOPs of one whole DDGAN update (D, then G) on copies of the networks; with R1 when `lazy`."""
    G, D = trainable_copy(G), trainable_copy(D)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    amp = partial(torch.autocast, "cpu", enabled=False)
    return flops_with_grad(lambda: gan_step(G, D, opt_g, opt_d, x0, grid, 0 if lazy else 1, recipe, amp))


def ddgan(data, budget: int, cfg, seed: int, part) -> tuple:
    """DDGAN on the T = gan_steps grid: D's and G's counted work per update, R1 every r1_every-th step."""
    torch.manual_seed(seed)
    G, D = UNet(backbone(cfg, "ddgan")), Discriminator(cfg.disc)
    grid = uniform_grid(GAN_PATH, cfg.gan_steps)
    recipe = replace(cfg.gan, seed=seed, bf16=cfg.bf16, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every)
    x0 = data.x[: recipe.batch_size]
    lazy, plain = (gan_step_flops(G, D, x0, grid, recipe, r1) for r1 in (True, False))
    cost = lambda k: lazy if k % recipe.r1_every == 0 else plain
    steps = steps_to_reach(budget, cost)
    G_ema, _ = train_gan(G, D, data.x, grid, replace(recipe, steps=steps), part)
    return G_ema.eval(), {"steps": steps, "train_flops": spent(steps, cost)}


# --- sampling settings ------------------------------------------------------------------------------------------

def settings(models: dict, cfg, seed: int) -> dict[str, tuple]:
    """{name: (family, sampler name, sampler, denoiser, time grid, path)} of one seed's models, NFE ≤ max(nfes)."""
    from common.consistency import consistency
    from common.samplers import ddim, ddpm, dpmpp_2m, euler, heun, nfe

    ddpm_d = clipped(denoiser(models["ddpm"], "v", VP), VP)
    out = {}
    for n in cfg.nfes:
        out[f"ddpm-ddim-{n}"] = ("DDPM", "ddim", ddim, ddpm_d, uniform_grid(VP, n), VP)
        out[f"ddpm-dpmpp2m-{n}"] = ("DDPM", "dpmpp_2m", dpmpp_2m, ddpm_d, uniform_grid(VP, n), VP)
        out[f"flow-euler-{n}"] = ("flow", "euler", euler, denoiser(models["flow"], "velocity", FLOW),
                                  uniform_grid(FLOW, n), FLOW)
        out[f"reflow-euler-{n}"] = ("reflow", "euler", euler, denoiser(models["reflow"], "velocity", FLOW),
                                    uniform_grid(FLOW, n), FLOW)
    for k in range(2, max(cfg.nfes)):                       # Heun: 2k − 1 calls (the last step is Euler's)
        if nfe(heun, uniform_grid(FLOW, k)) <= max(cfg.nfes):
            out[f"flow-heun-{nfe(heun, uniform_grid(FLOW, k))}"] = (
                "flow", "heun", heun, denoiser(models["flow"], "velocity", FLOW), uniform_grid(FLOW, k), FLOW)
    for n, ts in ((1, torch.tensor([1.0, 0.0], dtype=torch.float64)),
                  (2, torch.tensor([1.0, cfg.mid_t, 0.0], dtype=torch.float64))):
        out[f"cd-consistency-{n}"] = ("CD", "consistency", consistency, denoiser(models["cd"], "velocity", FLOW),
                                      ts, FLOW)
    for n, student in models["pd"].items():
        if n in cfg.nfes:
            out[f"pd-ddim-{n}"] = ("PD", "ddim", ddim, clipped(denoiser(student, "v", VP), VP), uniform_grid(VP, n),
                                   VP)
    out[f"ddgan-ddpm-{cfg.gan_steps}"] = ("DDGAN", "ddpm", ddpm,
                                          gan_denoiser(models["ddgan"], torch.Generator().manual_seed(seed + 3)),
                                          uniform_grid(GAN_PATH, cfg.gan_steps), GAN_PATH)
    return out
