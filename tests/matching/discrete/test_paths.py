"""Mixture-path schedulers and sources: boundary values, derivatives, inverses, draws."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.matching.discrete import (
    KAPPA_SCHEDULERS,
    MaskedSource,
    UniformSource,
    make_kappa_scheduler,
    make_mixture_source,
    sample_mixture_path,
)
from pushforward.matching.discrete.schedulers import KappaScheduler

CASES: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in KAPPA_SCHEDULERS] + [
    ("polynomial", {"exponent": 0.5}),
    ("polynomial", {"exponent": 3.0}),
]
IDS = [f"{name}{options or ''}" for name, options in CASES]


def _scheduler(case: tuple[str, dict[str, Any]]) -> KappaScheduler:
    name, options = case
    return make_kappa_scheduler(name, **options)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kappa_runs_from_zero_to_one_and_rises(case):
    scheduler = _scheduler(case)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    kappa = scheduler.kappa(t)
    assert float(kappa[0]) == pytest.approx(0.0, abs=1e-15)
    assert float(kappa[-1]) == pytest.approx(1.0, abs=1e-15)
    assert bool((kappa.diff() >= 0).all())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_derivative_matches_autograd(case):
    scheduler = _scheduler(case)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(scheduler.kappa(t).sum(), t)
    torch.testing.assert_close(scheduler.d_kappa(t.detach()), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@given(t=st.floats(0.0, 1.0))
def test_time_inverts_kappa(case, t):
    scheduler = _scheduler(case)
    value = torch.tensor([t], dtype=torch.float64)
    assert float(scheduler.time(scheduler.kappa(value))) == pytest.approx(t, abs=1e-7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jump_coefficient_is_the_rate_factor(case):
    scheduler = _scheduler(case)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    expected = scheduler.d_kappa(t) / (1 - scheduler.kappa(t))
    torch.testing.assert_close(scheduler.jump_coefficient(t), expected)


def test_linear_is_polynomial_of_degree_one():
    t = torch.rand(10, dtype=torch.float64)
    linear, cubic = make_kappa_scheduler("linear"), make_kappa_scheduler("polynomial", exponent=3)
    torch.testing.assert_close(linear.kappa(t), t)
    torch.testing.assert_close(cubic.kappa(t), t**3)


def test_unknown_names_and_options_are_refused_with_a_suggestion():
    with pytest.raises(ValueError, match="cosine"):
        make_kappa_scheduler("cosin")
    with pytest.raises(ValueError, match="exponent"):
        make_kappa_scheduler("polynomial", exponnt=2)
    with pytest.raises(ValueError, match="masked"):
        make_mixture_source("maskd")
    with pytest.raises(ValueError):
        make_kappa_scheduler("polynomial", exponent=-1.0)


def test_sources_have_their_states_and_densities():
    masked, uniform = MaskedSource(), UniformSource()
    assert masked.states(5) == 6 and uniform.states(5) == 5
    x0 = masked.sample((3, 4), 5)
    assert bool((x0 == 5).all()) and x0.dtype == torch.int64
    assert bool((masked.log_prob(x0, 5) == 0).all())
    assert float(masked.log_prob(torch.tensor([[1]]), 5)) == -math.inf
    draws = uniform.sample((20_000, 2), 5, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws.reshape(-1), minlength=5).double() / draws.numel()
    torch.testing.assert_close(
        counts, torch.full((5,), 0.2, dtype=torch.float64), atol=0.01, rtol=0
    )
    assert float(uniform.log_prob(torch.tensor([[2]]), 5)) == pytest.approx(-math.log(5))


def test_mixture_path_takes_the_data_token_with_probability_kappa():
    n, length = 50_000, 3
    x1 = torch.zeros(n, length, dtype=torch.int64)
    x0 = torch.ones(n, length, dtype=torch.int64)
    kappa = torch.linspace(0, 1, n, dtype=torch.float64)
    x_t = sample_mixture_path(x0, x1, kappa, generator=torch.Generator().manual_seed(1))
    taken = (x_t == x1).double().mean(1)
    # The fraction at the data token, averaged in bins of kappa, follows kappa.
    bins = taken.reshape(10, -1).mean(1)
    centres = kappa.reshape(10, -1).mean(1)
    torch.testing.assert_close(bins, centres, atol=0.02, rtol=0)
    assert bool((x_t[0] == 1).all()) and bool((x_t[-1] == 0).all())
    with pytest.raises(ValueError, match="must match"):
        sample_mixture_path(x0[:, :2], x1, kappa)
