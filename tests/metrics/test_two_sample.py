"""The classifier two-sample test: chance level, separation, reproducibility, no global RNG use."""

from __future__ import annotations

import pytest
import torch

from pushforward.metrics import C2STResult, c2st
from pushforward.metrics.two_sample import stratified_folds

F64 = torch.float64


def normal(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=F64) + shift


def test_same_distribution_is_at_chance_level():
    result = c2st(normal(300, 2, 0), normal(300, 2, 1), steps=100)
    assert isinstance(result, C2STResult)
    assert abs(result.accuracy - 0.5) < 0.1
    assert result.p_value > 0.01
    assert len(result.fold_accuracies) == 5


def test_well_separated_distributions_are_told_apart():
    result = c2st(normal(300, 2, 2), normal(300, 2, 3, shift=3.0), steps=100)
    assert result.accuracy > 0.9
    assert result.p_value < 1e-10
    assert result.stderr == pytest.approx((result.accuracy * (1 - result.accuracy) / 600) ** 0.5)
    assert sum(result.fold_accuracies) / 5 == pytest.approx(result.accuracy)


def test_a_nonlinear_difference_is_detected():
    """Same mean and marginal variance, different shape: a ring against a Gaussian."""
    generator = torch.Generator().manual_seed(4)
    angle = 2 * torch.pi * torch.rand(300, generator=generator, dtype=F64)
    ring = torch.stack([angle.cos(), angle.sin()], dim=-1) * 2**0.5
    ring = ring + 0.05 * torch.randn(300, 2, generator=generator, dtype=F64)
    assert c2st(ring, normal(300, 2, 5), steps=100).accuracy > 0.75


def test_c2st_is_reproducible_and_leaves_the_global_rng_alone():
    x, y = normal(100, 3, 6), normal(100, 3, 7, shift=0.5)
    state = torch.get_rng_state()
    first = c2st(x, y, steps=50, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert c2st(x, y, steps=50, seed=3) == first
    with torch.no_grad():
        assert c2st(x.float(), y.float(), steps=50, seed=3).accuracy == pytest.approx(
            first.accuracy, abs=0.05
        )


def test_stratified_folds_partition_each_class_evenly():
    labels = torch.cat([torch.zeros(23, dtype=torch.long), torch.ones(17, dtype=torch.long)])
    parts = stratified_folds(labels, 5, torch.Generator().manual_seed(0))
    everything = torch.cat(parts).sort().values
    assert torch.equal(everything, torch.arange(40))
    for part in parts:
        assert int((labels[part] == 0).sum()) in (4, 5)
        assert int((labels[part] == 1).sum()) in (3, 4)


def test_c2st_rejects_bad_arguments():
    with pytest.raises(ValueError, match="folds must be at least 2"):
        c2st(normal(10, 2, 0), normal(10, 2, 1), folds=1)
    with pytest.raises(ValueError, match="at least folds=5 points"):
        c2st(normal(3, 2, 0), normal(10, 2, 1))
