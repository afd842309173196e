"""Annealed importance sampling: unbiased normalising constants, exact weights when q is the end
density, a higher ESS with more intermediate densities, and the step sizes as exact state.

The normalising constants are computed independently of AIS, by quadrature on a fine grid.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import Tensor

from pushforward.sampling.ais import AnnealedImportanceSampler, annealing_schedule
from pushforward.sampling.importance import reverse_ess

DTYPE = torch.float64
LOG_C = 0.8  # the unnormalized target is exp(LOG_C) times a mixture


def log_q(x: Tensor) -> Tensor:
    """N(0, 2^2) in 1-D."""
    return (-0.5 * (x / 2.0).square() - math.log(2.0) - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_p(x: Tensor) -> Tensor:
    """exp(LOG_C) (0.3 N(-2, 0.5^2) + 0.7 N(2.5, 0.6^2)) in 1-D."""
    y = x[:, 0]
    first = math.log(0.3) - 0.5 * ((y + 2.0) / 0.5) ** 2 - math.log(0.5)
    second = math.log(0.7) - 0.5 * ((y - 2.5) / 0.6) ** 2 - math.log(0.6)
    return torch.logaddexp(first, second) - 0.5 * math.log(2 * math.pi) + LOG_C


def quadrature_log_z(alpha: float) -> float:
    """log of the integral of p^alpha q^(1 - alpha) on a fine grid."""
    grid = torch.linspace(-30.0, 30.0, 600_001, dtype=DTYPE)[:, None]
    log_g = alpha * log_p(grid) + (1.0 - alpha) * log_q(grid)
    return float(torch.logsumexp(log_g, 0) + math.log(float(grid[1, 0] - grid[0, 0])))


@pytest.mark.parametrize("transition", ["hmc", "metropolis"])
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_ais_estimates_the_normalising_constant_without_bias(transition: str, alpha: float):
    torch.manual_seed(0)
    sampler = AnnealedImportanceSampler(
        n_intermediate=3, transition=transition, alpha=alpha, leapfrog_steps=3, step_size=0.5
    )
    estimates = []
    for _ in range(40):
        x = 2.0 * torch.randn(250, 1, dtype=DTYPE)
        result = sampler.run(x, log_q, log_p)
        estimates.append(torch.exp(result.log_w).mean())
    z = torch.stack(estimates)
    standard_error = float(z.std() / math.sqrt(z.numel()))
    exact = math.exp(quadrature_log_z(alpha))
    assert abs(float(z.mean()) - exact) < 3 * standard_error
    assert standard_error < 0.1 * exact  # the test has power


def test_more_intermediate_densities_give_a_higher_ess():
    torch.manual_seed(1)
    ess = {}
    for k in (1, 16):
        sampler = AnnealedImportanceSampler(n_intermediate=k, alpha=1.0, leapfrog_steps=3)
        values = []
        for _ in range(8):  # the first runs tune the step sizes
            values.append(sampler.run(2.0 * torch.randn(500, 1, dtype=DTYPE), log_q, log_p).ess())
        ess[k] = sum(values[4:]) / 4
    result = sampler.run(2.0 * torch.randn(500, 1, dtype=DTYPE), log_q, log_p)
    plain = result.log_w_start  # importance sampling from q alone
    assert ess[16] > ess[1] + 0.2
    assert ess[16] > reverse_ess(plain) + 0.2


@pytest.mark.parametrize("transition", ["hmc", "metropolis"])
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_weights_are_all_equal_when_q_is_the_end_density(transition: str, alpha: float):
    """p = e^c q: the end density p^alpha q^(1-alpha) = e^(alpha c) q is q itself."""

    def log_normal(x: Tensor) -> Tensor:
        return -0.5 * x.square().sum(-1) - x.shape[1] * 0.5 * math.log(2 * math.pi)

    def shifted(x: Tensor) -> Tensor:
        return log_normal(x) + LOG_C

    torch.manual_seed(2)
    sampler = AnnealedImportanceSampler(n_intermediate=4, transition=transition, alpha=alpha)
    result = sampler.run(torch.randn(300, 2, dtype=DTYPE), log_normal, shifted)
    expected = torch.full((300,), alpha * LOG_C, dtype=DTYPE)
    torch.testing.assert_close(result.log_w, expected, rtol=0, atol=1e-12)
    assert result.ess() == pytest.approx(1.0)
    assert all(0 < a <= 1 for a in result.acceptance)


def test_non_finite_starts_are_dropped_and_nothing_is_nan():
    def boxed(x: Tensor) -> Tensor:  # zero density for x < 0
        values = log_q(x)
        return torch.where(x[:, 0] >= 0, values, torch.full_like(values, -math.inf))

    torch.manual_seed(3)
    x = 2.0 * torch.randn(200, 1, dtype=DTYPE)
    x[0] = math.nan
    result = AnnealedImportanceSampler(n_intermediate=2, alpha=2.0).run(x, log_q, boxed)
    assert not bool(torch.isnan(result.log_w).any())
    dropped = ~result.kept
    assert bool(dropped[0]) and bool(dropped[(x[:, 0] < 0)].all())
    assert bool((result.x[result.kept] >= 0).all())  # no chain is moved outside the support
    assert result.target_evaluations == 200 * (1 + 2 * 5)


def test_annealing_schedules_run_from_zero_to_one():
    for spacing in ("linear", "geometric"):
        betas = annealing_schedule(7, spacing)
        assert len(betas) == 9 and betas[0] == 0.0 and betas[-1] == pytest.approx(1.0)
        assert all(b > a for a, b in itertools.pairwise(betas))
    assert annealing_schedule(3) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="spacing"):
        annealing_schedule(3, "cosine")
    with pytest.raises(ValueError, match="transition"):
        AnnealedImportanceSampler(transition="nuts")


@pytest.mark.parametrize("adaptation", ["fab", "dual-averaging", "fixed"])
def test_step_sizes_adapt_and_round_trip_through_json(adaptation: str):
    torch.manual_seed(4)
    sampler = AnnealedImportanceSampler(n_intermediate=3, alpha=1.0, adaptation=adaptation)
    for _ in range(3):
        sampler.run(2.0 * torch.randn(100, 1, dtype=DTYPE), log_q, log_p)
    saved = json.loads(json.dumps(sampler.state()))
    copy = AnnealedImportanceSampler(n_intermediate=3, alpha=1.0, adaptation=adaptation)
    copy.restore(saved)
    assert copy.state() == sampler.state()
    changed = sampler.state()["values"] != [1.0] * 3
    assert changed == (adaptation != "fixed")
    torch.manual_seed(5)
    a = sampler.run(2.0 * torch.randn(50, 1, dtype=DTYPE), log_q, log_p)
    torch.manual_seed(5)
    b = copy.run(2.0 * torch.randn(50, 1, dtype=DTYPE), log_q, log_p)
    assert torch.equal(a.log_w, b.log_w) and torch.equal(a.x, b.x)
