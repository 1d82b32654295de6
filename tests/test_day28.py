"""Day 28: DPM-Solver++(2M) (common.samplers.dpmpp_2m) and UniPC (common.samplers.unipc) against the exact ODE
solution on a Gaussian target (second and third order, where DDIM is first) and against diffusers'
DPMSolverMultistepScheduler and UniPCMultistepScheduler step by step; EDM's grid from σ̄ = 80 and the calls a
setting spends; each speed technique leaves a fixed batch's loss (and AdamW's first step) unchanged within its
tolerance; the smoke run through the command line; and the README tables of the committed metrics."""

import json
import math

import pytest
import torch
from conftest import ROOT, load_day, smoke_run

from common.paths import DiscreteVP, VPCosine, edm_grid
from common.predictions import denoiser
from common.samplers import ddim, dpmpp_2m, dpmpp_2m_step, edm_heun, last, unipc

F64 = torch.float64
speed, solvers, tables, train = load_day(28, "speed", "solvers", "tables", "train")
MU, VAR = 0.7, 0.3                                       # the Gaussian target N(μ, v)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_denoiser(path):
    """The exact x̂0 = E[x0 | x_t] = μ + alpha v (x_t − alpha μ) / (alpha² v + sigma²) of N(μ, v) data."""
    def predict(x, t):
        a, s = path.alpha_sigma(t, x)
        return MU + a * VAR * (x - a * MU) / (a ** 2 * VAR + s ** 2)
    return denoiser(predict, "x0", path)


def exact_flow(path, x, t, s):
    """The probability-flow ODE from t to s for N(μ, v) data: z = (x − alpha μ) / sqrt(alpha² v + sigma²) stays."""
    def std(r):
        r = torch.tensor(r, dtype=F64)
        return path.alpha(r), (path.alpha(r) ** 2 * VAR + path.sigma(r) ** 2).sqrt()
    (a_t, n_t), (a_s, n_s) = std(t), std(s)
    return a_s * MU + n_s * (x - a_t * MU) / n_t


def final_error(sampler, ts) -> float:
    path = VPCosine()
    x = torch.randn(256, 1, generator=gen(0), dtype=F64) * 1.3
    out = last(sampler(gaussian_denoiser(path), x, ts, path=path))
    return float((out - exact_flow(path, x, float(ts[0]), float(ts[-1]))).abs().max())


def lambda_uniform(n: int) -> torch.Tensor:
    """n times from t = 0.98 to 0.05, evenly spaced in λ (the grid DPM-Solver's analysis assumes)."""
    lam = VPCosine().log_snr(torch.tensor([0.98, 0.05], dtype=F64))
    return VPCosine().t_from_log_snr(torch.linspace(lam[0], lam[1], n, dtype=F64))


def edm(n: int) -> torch.Tensor:
    """n times from t = 0.98 to 0.05 on EDM's ρ = 7 grid."""
    return edm_grid(VPCosine(), n, t0=0.98, t_min=0.05)[:-1]


@pytest.mark.parametrize("ts", [lambda_uniform, edm])
def test_dpmpp_2m_converges_at_second_order_to_the_exact_gaussian_flow(ts):
    """Halving the steps divides DPM-Solver++(2M)'s error by ≈ 4 (second order), DDIM's by ≈ 2 (first). The grid
    stops at t_min > 0: the last step to sigma = 0 is first order by design."""
    errors = {name: [final_error(s, ts(n)) for n in (17, 33, 65, 129)]
              for name, s in (("dpm", dpmpp_2m), ("ddim", ddim))}
    dpm_order = [math.log2(a / b) for a, b in zip(errors["dpm"], errors["dpm"][1:])]
    ddim_order = [math.log2(a / b) for a, b in zip(errors["ddim"], errors["ddim"][1:])]
    assert all(1.85 < p < 2.2 for p in dpm_order[1:]), (errors, dpm_order)
    assert all(0.8 < p < 1.2 for p in ddim_order[1:]), (errors, ddim_order)
    assert errors["dpm"][-1] < errors["ddim"][-1] / 20


def test_edm_heun_converges_at_second_order_to_the_exact_gaussian_flow():
    """EDM's Heun on its ρ = 7 grid: halving the steps divides the error by ≈ 4, and at 64 steps it is over ten
    times closer than DDIM (its Euler half). The grid stops at t_min > 0, as above (the last step, to sigma = 0,
    is Euler)."""
    errors = {name: [final_error(s, edm(n)) for n in (9, 17, 33, 65)]
              for name, s in (("heun", edm_heun), ("ddim", ddim))}
    order = [math.log2(a / b) for a, b in zip(errors["heun"], errors["heun"][1:])]
    assert all(1.85 < p < 2.3 for p in order[1:]), (errors, order)
    assert errors["heun"][-1] < errors["ddim"][-1] / 10


def test_dpmpp_2m_first_step_is_ddim_and_the_last_lands_on_alpha_x0():
    path = VPCosine()
    den = gaussian_denoiser(path)
    x = torch.randn(8, 1, generator=gen(1), dtype=F64)
    t, s = torch.tensor(0.9, dtype=F64), torch.tensor(0.6, dtype=F64)
    from common.samplers import ddim_step
    x_s, (x0, h) = dpmpp_2m_step(den, x, t, s, path=path)
    torch.testing.assert_close(x_s, ddim_step(den, x, t, s, path=path), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, (path.log_snr(s) - path.log_snr(t)) / 2)
    x_0, _ = dpmpp_2m_step(den, x_s, s, torch.tensor(0.0, dtype=F64), path=path, earlier=(x0, h))
    torch.testing.assert_close(x_0, den(x_s, s.expand(8)).x0)


COSINE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
              final_sigmas_type="zero")


def linear_eps_model(x, t):
    """ε̂ = (0.5 + t) W x: linear in x, depends on t."""
    return (0.5 + t[:, None]) * x @ torch.tensor([[0.6, -0.2], [0.1, 0.8]], dtype=F64).T


def same_steps_as_diffusers(sampler, ref, steps=12):
    """Run our sampler and diffusers' scheduler `ref` on the same cosine schedule and timesteps, with the fixed
    linear ε-'model', and compare the states step by step. Their timestep k is our t = (k + 1) / T."""
    path = DiscreteVP.named("cosine", 1000)
    ref.alphas_cumprod = path.alpha_bar[1:].clone()       # our float64 ᾱ (the schedules agree to float32)
    ref.set_timesteps(steps)
    ts = torch.tensor([(k + 1) / 1000 for k in ref.timesteps.tolist()] + [0.0], dtype=F64)
    x = torch.randn(16, 2, generator=gen(2), dtype=F64)
    ours = list(sampler(denoiser(linear_eps_model, "eps", path), x, ts, path=path))
    theirs, y = [], x
    for k, t in zip(ref.timesteps, ts):
        y = ref.step(linear_eps_model(y, t.expand(len(y))), k, y).prev_sample
        theirs.append(y)
    assert len(ours) == len(theirs) == steps
    for i, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a, b.to(F64), rtol=1e-5, atol=1e-5, msg=f"step {i}")


def test_dpmpp_2m_matches_diffusers_dpm_solver_multistep():
    """diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, to sigma = 0): the same states step by step."""
    from diffusers import DPMSolverMultistepScheduler
    same_steps_as_diffusers(dpmpp_2m, DPMSolverMultistepScheduler(**COSINE, algorithm_type="dpmsolver++",
                                                                  solver_order=2, lower_order_final=False))


def test_unipc_matches_diffusers_unipc_multistep():
    """diffusers' UniPCMultistepScheduler (order 2, bh2, its last step first order): the same states step by step.
    Its corrector moves the states far from DPM-Solver++(2M)'s on this model, so the match is not DPM-Solver's."""
    from diffusers import UniPCMultistepScheduler
    same_steps_as_diffusers(unipc, UniPCMultistepScheduler(**COSINE, solver_order=2, solver_type="bh2"))
    path = DiscreteVP.named("cosine", 1000)
    ts = torch.linspace(1, 0, 5, dtype=F64)
    x = torch.randn(16, 2, generator=gen(2), dtype=F64)
    den = denoiser(linear_eps_model, "eps", path)
    assert (last(unipc(den, x, ts, path=path)) - last(dpmpp_2m(den, x, ts, path=path))).abs().max() > 0.1


def test_unipc_converges_at_third_order_to_the_exact_gaussian_flow():
    """UniC raises DPM-Solver++(2M)'s order by one at no extra call: halving the steps divides UniPC's error by ≈ 8
    on the λ and EDM grids (to t_min > 0, as above), and at 128 steps it is over ten times closer."""
    for grid in (lambda_uniform, edm):
        errors = {name: [final_error(s, grid(n)) for n in (17, 33, 65, 129)]
                  for name, s in (("unipc", unipc), ("dpm", dpmpp_2m))}
        order = [math.log2(a / b) for a, b in zip(errors["unipc"], errors["unipc"][1:])]
        assert all(2.8 < p < 3.3 for p in order), (errors, order)
        assert errors["unipc"][-1] < errors["dpm"][-1] / 10


def test_steps_for_spends_at_most_the_calls():
    heun, ddim_ = solvers.SETTINGS["Heun (EDM), ρ = 7 from σ̄ = 80"][0], solvers.SETTINGS["DDIM, uniform t"][0]
    assert [solvers.steps_for(heun, n) for n in (5, 10, 20, 50)] == [3, 5, 10, 25]    # 2n − 1 ≤ calls
    assert [solvers.steps_for(ddim_, n) for n in (5, 10)] == [5, 10]


def test_sigma_max_grid_starts_on_the_level_where_sigma_over_alpha_is_80():
    path = DiscreteVP.named("cosine", 1000)
    ts = solvers.sigma_max_grid(path, 5)
    level = round(float(ts[0]) * 1000)
    s = (path.sigma(ts[:1]) / path.alpha(ts[:1])).item()
    below, above = ((path.sigma(torch.tensor([k / 1000], dtype=F64)) / path.alpha(torch.tensor([k / 1000],
                                                                                              dtype=F64))).item()
                    for k in (level - 1, level + 1))
    assert ts[0] * 1000 == level and below < 80 < above and 70 < s < 90
    assert len(ts) == 6 and ts[-1] == 0 and bool((ts.diff() < 0).all())


# --- the speed techniques leave the numbers alone ------------------------------------------------------

SMALL = speed.UNetConfig(channels=16, mults=(1, 2), n_res=1, attn_res=(7,), image_size=14)


def batch_loss(recipe, fp64: bool = False):
    """The loss of one fixed batch, its gradients and the weights after one AdamW step, under a recipe."""
    model, net, opt = speed.build(recipe, torch.device("cpu"), seed=0, unet=SMALL)
    if fp64:
        model.double()
    x0 = torch.rand(8, 1, 14, 14, generator=gen(3), dtype=F64 if fp64 else torch.float32) * 2 - 1
    step = speed.make_step(recipe, model, net, opt, DiscreteVP.named("cosine", 1000), grad_clip=1e9)
    with torch.no_grad():  # the zero-initialised output layers would hide the attention: give them weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(4), dtype=p.dtype))
    loss = float(step(x0, gen(5)))
    flat = [torch.cat([getattr(p, k).detach().flatten().float() for p in model.parameters()]) for k in ("grad", "data")]
    return loss, *flat


def test_naive_attention_is_sdpa_to_float_precision(one_thread):
    q, k, v = torch.randn(3, 2, 4, 49, 8, generator=gen(6))
    torch.testing.assert_close(speed.explicit_attention(q, k, v), torch.nn.functional.scaled_dot_product_attention(
        q, k, v), rtol=1e-5, atol=1e-6)
    with speed.naive_attention():
        assert torch.nn.functional.scaled_dot_product_attention is speed.explicit_attention
    assert torch.nn.functional.scaled_dot_product_attention is not speed.explicit_attention


@pytest.mark.parametrize("switch", ["naive_attention", "channels_last", "checkpointing", "fused_adamw"])
def test_exact_techniques_leave_the_loss_and_the_first_step_equal(switch, one_thread):
    """fp32: the same loss and gradients to float32 rounding (the same ops in another order); fused AdamW: also the
    same weights after its first step. (Adam's first step is ≈ lr · sign(g), so rounding-level differences in g
    near 0 move a weight by up to lr: the step is compared only where g is the same computation.)"""
    base_loss, base_g, base_w = batch_loss(speed.Recipe())
    loss, g, w = batch_loss(speed.Recipe(**{switch: True}))
    assert math.isclose(loss, base_loss, rel_tol=1e-5), (loss, base_loss)
    torch.testing.assert_close(g, base_g, rtol=1e-4, atol=1e-5 * base_g.abs().max().item())
    if switch == "fused_adamw":
        torch.testing.assert_close(w, base_w, rtol=1e-6, atol=1e-7)


def test_bf16_loss_within_bf16_tolerance(one_thread):
    """bf16 keeps 8 bits of mantissa (relative rounding 2⁻⁸ ≈ 0.4 % per operation): the loss within 3 %."""
    base_loss, *_ = batch_loss(speed.Recipe())
    loss, *_ = batch_loss(speed.Recipe(bf16=True))
    assert loss != base_loss and math.isclose(loss, base_loss, rel_tol=0.03), (loss, base_loss)


def test_checkpointing_keeps_the_state_dict():
    model = speed.checkpoint_resblocks(speed.UNet(SMALL))
    assert set(model.state_dict()) == set(speed.UNet(SMALL).state_dict())


# --- the run -------------------------------------------------------------------------------------------

def test_smoke_run(tmp_path, day6_smoke):
    result = smoke_run(28, tmp_path, f"--day6_results={day6_smoke}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {r["recipe"] for r in m["training"]["recipes"]} == {"baseline", "bf16"}
    assert set(m["quality"]) == {"baseline", "combined"}
    assert {r["setting"] for r in m["sampling"]} == set(solvers.SETTINGS)
    assert m["headline"]
    for name in ("fid_vs_nfe.png", "fid_vs_seconds.png", "samples.png", "samples.npz"):
        assert (tmp_path / name).is_file(), name
    for table in tables.ALL:
        assert table(m).strip(), table.__name__


def test_readme_tables_are_the_committed_metrics():
    m = json.loads((ROOT / "day28/results/metrics.json").read_text())
    readme = (ROOT / "day28/README.md").read_text()
    for table in tables.ALL:
        assert table(m) in readme, table.__name__
