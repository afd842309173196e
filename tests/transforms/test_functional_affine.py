"""The affine map's closed forms: derivatives, invertibility and the soft clamp."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.transforms.functional.affine import (
    LOG_SCALE_BOUND,
    affine_forward,
    affine_inverse,
    affine_log_scale,
    soft_clamp,
)
from tests.contract import assert_elementwise_round_trip, assert_log_derivative


def random(shape, seed, scale=1.0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=generator, dtype=dtype)


def test_logabsdet_is_the_autograd_derivative():
    x = random(200, 0)
    shift, scale = random(200, 1), random(200, 2, scale=3.0)
    assert_log_derivative(lambda v: affine_forward(v, shift, scale), x, atol=1e-12)
    y, logabsdet = affine_forward(x, shift, scale)
    assert_log_derivative(lambda v: affine_inverse(v, shift, scale), y, atol=1e-12)
    _, inverse_logabsdet = affine_inverse(y, shift, scale)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, atol=1e-12, rtol=0)


def test_closed_form():
    x, shift, scale = random(50, 3), random(50, 4), random(50, 5)
    log_scale = LOG_SCALE_BOUND * torch.tanh(scale / LOG_SCALE_BOUND)
    y, logabsdet = affine_forward(x, shift, scale)
    torch.testing.assert_close(y, x * log_scale.exp() + shift, atol=1e-12, rtol=0)
    torch.testing.assert_close(logabsdet, log_scale, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_invertible(dtype, atol):
    x = random(300, 6, scale=10.0, dtype=dtype)
    shift, scale = random(300, 7, dtype=dtype), random(300, 8, scale=2.0, dtype=dtype)
    assert_elementwise_round_trip(
        lambda v: affine_forward(v, shift, scale),
        lambda v: affine_inverse(v, shift, scale),
        x,
        atol=atol * (1 + x.abs().max().item()),
        logdet_atol=atol,
    )


def test_soft_clamp_is_the_identity_at_zero():
    values = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    clamped = soft_clamp(values, 2.0)
    (slope,) = torch.autograd.grad(clamped.sum(), values)
    assert torch.equal(clamped.detach(), values.detach())
    torch.testing.assert_close(slope, torch.ones_like(slope), atol=1e-15, rtol=0)
    # Zero raw parameters give the identity map.
    x = random(20, 9)
    y, logabsdet = affine_forward(x, torch.zeros_like(x), torch.zeros_like(x))
    assert torch.equal(y, x) and torch.equal(logabsdet, torch.zeros_like(x))


@given(raw=st.floats(-1e6, 1e6), bound=st.floats(0.1, 20.0))
def test_soft_clamp_bounds_the_log_scale(raw, bound):
    log_scale = affine_log_scale(torch.tensor(raw, dtype=torch.float64), bound)
    assert -bound <= log_scale.item() <= bound
    # Monotone and odd.
    assert log_scale.item() * raw >= 0
