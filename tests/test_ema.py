"""Weight averages (common.ema, common.training.EMA) against closed forms on scalar sequences, the σ_rel ↔ γ map
against EDM2's values, and post-hoc EMA: an exact recovery of a stored profile and a close reconstruction of
another from snapshots of a synthetic run."""
import pytest
import torch
from torch import nn

from common.config import UserError
from common.ema import PowerEMA, combine, gamma_for, posthoc_weights, profile_error, sigma_rel
from common.training import EMA

F64 = torch.float64


def scalar_run(average, thetas: torch.Tensor) -> list[float]:
    """Feed θ_1 … θ_K into an average of a one-weight model; its value after every update."""
    model = nn.Linear(1, 1, bias=False).double()
    avg, out = None, []
    for theta in thetas:
        model.weight.data.fill_(theta)
        avg = avg or average(model)
        avg.update(model)
        out.append(avg.model.weight.item())
    return out


def test_classic_ema_is_its_unrolled_sum():
    """θ̄_K = Σ_j (1 − d_j) Π_{i>j} d_i θ_j + (Π_i d_i) θ̄_0 with the warmed-up decays d_j = min(β, (1 + j)/(10 + j))
    (j counted from 0), θ̄_0 the weights it was made from (θ_1 here)."""
    thetas = torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=F64)
    got = scalar_run(lambda m: EMA(m, 0.95), thetas)[-1]
    d = torch.tensor([min(0.95, (1 + j) / (10 + j)) for j in range(200)], dtype=F64)
    after = torch.cat([torch.flip(torch.cumprod(torch.flip(d[1:], [0]), 0), [0]), torch.ones(1, dtype=F64)])
    expected = ((1 - d) * after * thetas).sum() + d.prod() * thetas[0]
    assert got == pytest.approx(expected.item(), abs=1e-12)


def test_power_ema_with_gamma_zero_is_the_running_mean():
    thetas = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=F64)
    got = scalar_run(lambda m: PowerEMA(m, 0.0), thetas)
    torch.testing.assert_close(torch.tensor(got, dtype=F64), thetas.cumsum(0) / torch.arange(1, 51), rtol=0,
                               atol=1e-12)


def test_power_ema_weights_follow_the_power_profile():
    """Fed the indicator of step j, a power EMA's value at K is the weight it gives θ_j: ≈ (γ+1) j^γ / K^{γ+1}."""
    K, gamma = 400, 6.94
    weights = torch.tensor([scalar_run(lambda m: PowerEMA(m, gamma), torch.eye(K, dtype=F64)[j])[-1]
                            for j in range(0, K, 40)], dtype=F64)
    j = torch.arange(1, K + 1, 40, dtype=F64)
    torch.testing.assert_close(weights, (gamma + 1) * j ** gamma / K ** (gamma + 1), rtol=0.05, atol=1e-5)


@pytest.mark.parametrize("sigma,gamma", [(0.05, 16.97), (0.10, 6.94)])  # EDM2, §3 and its released code
def test_sigma_rel_and_gamma(sigma, gamma):
    assert gamma_for(sigma) == pytest.approx(gamma, abs=0.01)
    assert sigma_rel(gamma_for(sigma)) == pytest.approx(sigma, abs=1e-12)
    with pytest.raises(UserError, match="sigma_rel=0.4"):
        gamma_for(0.4)


def synthetic_snapshots(thetas: torch.Tensor, sigmas: tuple[float, ...], every: int):
    """Power-EMA values of the sequence at every `every` steps, for each σ_rel: (steps, gammas, values)."""
    steps, gammas, values = [], [], []
    for gamma in map(gamma_for, sigmas):
        run = scalar_run(lambda m, g=gamma: PowerEMA(m, g), thetas)
        for k in range(every, len(thetas) + 1, every):
            steps.append(k), gammas.append(gamma), values.append(run[k - 1])
    return torch.tensor(steps, dtype=F64), torch.tensor(gammas, dtype=F64), torch.tensor(values, dtype=F64)


def test_posthoc_recovers_a_stored_profile_exactly():
    steps, gammas, _ = synthetic_snapshots(torch.zeros(100, dtype=F64), (0.05, 0.10), every=20)
    c = posthoc_weights(steps, gammas, 60, gamma_for(0.10))
    expected = ((steps == 60) & (gammas == gamma_for(0.10))).double()
    torch.testing.assert_close(c, expected, rtol=0, atol=1e-8)
    assert profile_error(steps, gammas, c, 60, gamma_for(0.10)) < 1e-6


def test_posthoc_reconstructs_another_width_from_a_synthetic_run():
    """Snapshots of σ_rel 0.05 and 0.10 every 100 of 1000 steps of a random walk; the σ_rel = 0.07 average at step
    1000, reconstructed after the run, against the same average kept during it. The profiles match to < 1% in L²,
    the weights to within 1% of the walk's own spread over the averaged stretch."""
    thetas = torch.randn(1000, generator=torch.Generator().manual_seed(2), dtype=F64).cumsum(0)
    steps, gammas, values = synthetic_snapshots(thetas, (0.05, 0.10), every=100)
    target = gamma_for(0.07)
    c = posthoc_weights(steps, gammas, 1000, target)
    assert profile_error(steps, gammas, c, 1000, target) < 0.01
    kept = scalar_run(lambda m: PowerEMA(m, target), thetas)[-1]
    assert abs(c @ values - kept) < 0.01 * thetas[-300:].std()


def test_combine_weighs_state_dicts():
    a = {"w": torch.ones(3), "steps": torch.tensor(5)}
    b = {"w": torch.full((3,), 3.0), "steps": torch.tensor(7)}
    out = combine([a, b], torch.tensor([0.25, 0.75], dtype=F64))
    torch.testing.assert_close(out["w"], torch.full((3,), 2.5))
    assert out["steps"] == 5 and out["w"].dtype == torch.float32
