"""The box's reflection: idempotent on the box, a local isometry, the limit of single
reflections at any overshoot, per-feature bounds, float32 and float64, finite gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.geometry.box import (
    box_contains,
    box_log_volume,
    box_reflect,
    box_reflection_sign,
)

DTYPES = [torch.float32, torch.float64]
bounds = st.tuples(st.floats(-50.0, 50.0), st.floats(0.01, 20.0)).map(
    lambda pair: (pair[0], pair[0] + pair[1])
)


def reflected_step_by_step(x: float, low: float, high: float) -> float:
    """Mirrors at the face the point is beyond, again and again, until it is inside."""
    while x < low or x > high:
        x = 2 * high - x if x > high else 2 * low - x
    return x


def per_feature_bounds(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor([-1.0, 0.0, 2.5], dtype=dtype),
        torch.tensor([1.0, 0.25, 10.0], dtype=dtype),
    )


@settings(max_examples=40, deadline=None)
@given(bounds, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_points_of_the_box_come_back_unchanged(box, fractions):
    low, high = box
    for dtype in DTYPES:
        x = low + (high - low) * torch.tensor(fractions, dtype=torch.float64)
        x = x.to(dtype).clamp(torch.tensor(low, dtype=dtype), torch.tensor(high, dtype=dtype))
        assert torch.equal(box_reflect(x, low, high), x)


@settings(max_examples=40, deadline=None)
@given(bounds, st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8))
def test_reflection_lands_in_the_box_and_is_idempotent(box, values):
    low, high = box
    for dtype in DTYPES:
        x = torch.tensor(values, dtype=dtype)
        y = box_reflect(x, low, high)
        low_t, high_t = torch.tensor(low, dtype=dtype), torch.tensor(high, dtype=dtype)
        assert bool(((y >= low_t) & (y <= high_t)).all())
        assert torch.equal(box_reflect(y, low, high), y)


@settings(max_examples=60, deadline=None)
@given(bounds, st.floats(-40.0, 40.0))
def test_agrees_with_repeated_single_reflections(box, widths_away):
    low, high = box
    x = low + widths_away * (high - low)
    expected = reflected_step_by_step(x, low, high)
    got = float(box_reflect(torch.tensor([x], dtype=torch.float64), low, high))
    # Each single reflection rounds once; the fold rounds x - low once.
    assert got == pytest.approx(expected, abs=1e-12 * (abs(x) + abs(low) + high - low) * 50)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_for_overshoots_of_any_size(dtype):
    # Integers (float32-representable) in [0, 2], period 4: the fold is exact in either dtype;
    # integer arithmetic gives the answer (x mod 4, mirrored in its second half).
    values = [-3, 5, 7, 2**23 + 1, -(2**23) - 3, 2**24 + 2, -(2**24) - 6, 2**40]
    y = box_reflect(torch.tensor(values, dtype=dtype), 0.0, 2.0)
    expected = [float(v % 4 if v % 4 <= 2 else 4 - v % 4) for v in values]
    assert y.tolist() == expected
    huge = torch.tensor([1e30, -1e30, torch.finfo(dtype).max / 4], dtype=dtype)
    folded = box_reflect(huge, -1.0, 3.0)
    assert bool(((folded >= -1.0) & (folded <= 3.0)).all())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(DTYPES))
def test_jacobian_is_diagonal_plus_or_minus_one(seed, dtype):
    low, high = per_feature_bounds(dtype)
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(4, 3, generator=generator, dtype=torch.float64) * 30).to(dtype)
    jacobian = torch.autograd.functional.jacobian(lambda v: box_reflect(v, low, high), x)
    jacobian = jacobian.reshape(12, 12)
    diagonal = torch.diagonal(jacobian)
    assert torch.equal(jacobian, torch.diag(diagonal))
    assert torch.equal(diagonal.abs(), torch.ones_like(diagonal))
    assert torch.equal(diagonal.reshape(4, 3), box_reflection_sign(x, low, high))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_are_finite_at_faces_fold_points_and_far_away(dtype):
    low, high = per_feature_bounds(dtype)
    rows = [low, high, 2 * high - low, 3 * low - 2 * high, low - 1e-30, high * 1e6]
    x = torch.stack(rows).requires_grad_(True)
    box_reflect(x, low, high).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad.abs(), torch.ones_like(x))


def test_per_feature_bounds_broadcast_and_keep_the_dtype():
    low, high = per_feature_bounds(torch.float64)
    x = torch.tensor([[1.5, -0.1, 11.0], [-3.5, 0.6, 2.0]], dtype=torch.float64)
    expected = torch.tensor([[0.5, 0.1, 9.0], [0.5, 0.1, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(box_reflect(x, low, high), expected, atol=1e-15, rtol=0)
    assert box_reflect(x.float(), low, high).dtype == torch.float32
    assert box_contains(x, low, high).tolist() == [False, False]
    assert box_contains(box_reflect(x, low, high), low, high).tolist() == [True, True]


def test_log_volume_and_non_finite_inputs():
    low, high = per_feature_bounds(torch.float64)
    assert float(box_log_volume(low, high)) == pytest.approx(math.log(2.0 * 0.25 * 7.5))
    x = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)
    assert bool(torch.isnan(box_reflect(x, 0.0, 1.0)).all())
    assert box_contains(x[:1, None], 0.0, 1.0).tolist() == [False]
