"""Importance weights: log Z and its standard error, the bounds, both ESS, masking, modes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pushforward
from pushforward.sampling import (
    builtin_target,
    evaluate_sampler,
    forward_ess,
    log_z_estimate,
    mode_coverage,
    reverse_ess,
)
from pushforward.sampling.importance import LogWeights
from tests.contract import randomize_


def test_log_z_and_its_standard_error_match_lognormal_weights():
    # log w ~ N(mu, s^2): E[w] = exp(mu + s^2 / 2); the delta-method error must match
    # the spread of the estimate over repeats.
    generator = torch.Generator().manual_seed(0)
    mu, s, n = 1.3, 0.6, 4000
    estimates, errors = [], []
    for _ in range(200):
        log_w = mu + s * torch.randn(n, generator=generator, dtype=torch.float64)
        log_z, se = log_z_estimate(log_w)
        estimates.append(log_z)
        errors.append(se)
    estimates_t = torch.tensor(estimates)
    assert float(estimates_t.mean()) == pytest.approx(mu + s**2 / 2, abs=3e-3)
    assert float(estimates_t.std()) == pytest.approx(sum(errors) / len(errors), rel=0.15)


@given(st.lists(st.floats(-50, 50), min_size=2, max_size=40))
def test_ess_lies_between_one_over_n_and_one_and_is_scale_free(values):
    log_w = torch.tensor(values, dtype=torch.float64)
    ess = reverse_ess(log_w)
    assert 1 / len(values) - 1e-12 <= ess <= 1 + 1e-12
    assert reverse_ess(log_w + 123.0) == pytest.approx(ess, rel=1e-9)
    assert 0 < forward_ess(log_w) <= 1 + 1e-12


def test_equal_weights_give_full_ess_and_one_dominant_weight_one_over_n():
    assert reverse_ess(torch.full((50,), 3.0)) == pytest.approx(1.0)
    dominant = torch.full((50,), -1e4)
    dominant[7] = 0.0
    assert reverse_ess(dominant) == pytest.approx(1 / 50)
    assert forward_ess(torch.full((50,), -2.0)) == pytest.approx(1.0)


def test_nan_and_plus_inf_are_masked_and_counted_minus_inf_is_a_zero_weight():
    log_w = torch.tensor([0.0, 0.0, float("nan"), float("inf"), float("-inf")])
    weights = LogWeights.of(log_w)
    assert weights.masked == 2 and weights.zero == 1 and weights.n == 3
    log_z, _ = log_z_estimate(log_w)
    assert log_z == pytest.approx(math.log(2 / 3))
    # The ESS counts the masked draws in n: they were drawn and wasted.
    assert reverse_ess(log_w) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="every log-weight is NaN"):
        log_z_estimate(torch.tensor([float("nan")]))


@pytest.mark.parametrize("name", ["grid-9", "two-moons", "funnel-10", "gmm-40"])
@pytest.mark.parametrize("seed", [0, 1])
def test_elbo_below_log_z_below_eubo_and_forward_kl_positive_on_normalised_targets(name, seed):
    target = builtin_target(name)
    torch.manual_seed(seed)
    model = pushforward.build("realnvp", features=target.features, transforms=2, hidden=[16])
    model = model.double()
    randomize_(model, 0.2, torch.Generator().manual_seed(seed))
    samples = target.sample(3000, torch.Generator().manual_seed(seed))
    result = evaluate_sampler(model, target, n=3000, samples=samples)
    assert target.log_z == 0.0
    assert result.elbo <= 0.0 <= result.eubo
    assert result.eubo - target.log_z >= 0.0  # the forward KL
    assert 0.0 <= result.ess <= 1.0 and 0.0 <= result.forward_ess <= 1.0


def test_mode_coverage_counts_modes_and_measures_balance():
    target = builtin_target("grid-9")
    modes = target.modes
    assert modes is not None
    balanced = modes.repeat(20, 1) + 0.01
    covered, entropy = mode_coverage(target, balanced)
    assert covered == 9 and entropy == pytest.approx(1.0)
    one = modes[:1].repeat(180, 1)
    covered, entropy = mode_coverage(target, one)
    assert covered == 1 and entropy == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="not a mixture"):
        mode_coverage(builtin_target("funnel-10"), torch.zeros(3, 10))
