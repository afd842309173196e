"""Kish's effective sample size from log-weights."""

from __future__ import annotations

import pytest
import torch

from pushforward.metrics import effective_sample_size, normalized_ess

F64 = torch.float64


def test_equal_weights_give_n_even_far_outside_the_float_range():
    for level in (0.0, 5000.0, -5000.0):
        log_weights = torch.full((37,), level, dtype=F64)
        assert effective_sample_size(log_weights) == pytest.approx(37.0, rel=1e-12)
        assert normalized_ess(log_weights) == pytest.approx(1.0, rel=1e-12)


def test_one_dominant_weight_gives_one():
    log_weights = torch.full((100,), -800.0, dtype=F64)
    log_weights[17] = 0.0
    assert effective_sample_size(log_weights) == pytest.approx(1.0, abs=1e-12)
    assert normalized_ess(log_weights) == pytest.approx(0.01, abs=1e-12)


def test_matches_the_formula_on_random_weights():
    generator = torch.Generator().manual_seed(0)
    log_weights = 2.0 * torch.randn(500, generator=generator, dtype=F64)
    weights = log_weights.exp()
    expected = float(weights.sum() ** 2 / weights.square().sum())
    assert effective_sample_size(log_weights) == pytest.approx(expected, rel=1e-12)
    # The ratio is invariant to a common factor, which plain float64 exp could not survive.
    assert effective_sample_size(log_weights + 3000.0) == pytest.approx(expected, rel=1e-10)
    assert effective_sample_size(log_weights.float()) == pytest.approx(expected, rel=1e-5)


def test_zero_weights_count_as_absent():
    log_weights = torch.tensor([0.0, 0.0, float("-inf"), 0.0], dtype=F64)
    assert effective_sample_size(log_weights) == pytest.approx(3.0, rel=1e-12)
    assert normalized_ess(log_weights) == pytest.approx(0.75, rel=1e-12)


def test_invalid_log_weights_are_rejected():
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        effective_sample_size(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="every weight is zero"):
        effective_sample_size(torch.full((3,), float("-inf")))
    with pytest.raises(ValueError, match="empty"):
        effective_sample_size(torch.zeros(0))
