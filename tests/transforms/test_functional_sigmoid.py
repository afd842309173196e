"""Sigmoid and logit: closed forms, autograd derivatives, stability and RealNVP squashing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.transforms.functional.sigmoid import logit, sigmoid_forward
from tests.contract import (
    LOG_2PI,
    assert_elementwise_round_trip,
    assert_log_derivative,
    grid_integral_1d,
)

ALPHAS = [0.0, 0.05]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_logabsdet_is_the_autograd_derivative(alpha):
    x = 4 * torch.randn(200, dtype=torch.float64)
    assert_log_derivative(lambda v: sigmoid_forward(v, alpha), x, atol=1e-10)
    u = torch.rand(200, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    assert_log_derivative(lambda v: logit(v, alpha), u, atol=1e-10)


def test_closed_form():
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)
    y, logabsdet = sigmoid_forward(x)
    s = 1 / (1 + torch.exp(-x))
    torch.testing.assert_close(y, s, atol=1e-15, rtol=0)
    torch.testing.assert_close(logabsdet, torch.log(s * (1 - s)), atol=1e-12, rtol=0)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_invertible(alpha, dtype, atol):
    # float32 stores sigmoid(x) near 1 with relative error ~1e-7 / (1 - s): keep |x| moderate.
    x = (3 if dtype == torch.float64 else 1.5) * torch.randn(300, dtype=dtype)
    assert_elementwise_round_trip(
        lambda v: sigmoid_forward(v, alpha),
        lambda v: logit(v, alpha),
        x,
        atol=atol * 10,
        rtol=atol,
        logdet_atol=atol * 10,
    )


def test_stable_in_the_tails():
    # log(s (1 - s)) would give -inf once s rounds to 0 or 1; the softplus form stays exact.
    x = torch.tensor([-200.0, -50.0, 50.0, 200.0])
    _, logabsdet = sigmoid_forward(x)
    torch.testing.assert_close(logabsdet, -x.abs(), atol=1e-4, rtol=1e-6)
    x.requires_grad_(True)
    y, logabsdet = sigmoid_forward(x)
    (grad,) = torch.autograd.grad(y.sum() + logabsdet.sum(), x)
    assert torch.isfinite(grad).all()


def test_alpha_keeps_the_logit_of_bounds_finite():
    y = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    x, logabsdet = logit(y, alpha=0.05)
    assert torch.isfinite(x).all() and torch.isfinite(logabsdet).all()
    torch.testing.assert_close(
        x[:2],
        torch.tensor([math.log(0.05 / 0.95), math.log(0.95 / 0.05)], dtype=torch.float64),
        atol=1e-12,
        rtol=0,
    )
    with pytest.raises(ValueError, match="alpha"):
        logit(y, alpha=0.5)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_density_on_the_unit_interval_integrates_to_one(alpha):
    # u = sigmoid-type map of x ~ N(0, 1): log p(u) = log N(logit(u)) + log|dlogit/du|.
    def log_density(u):
        x, logabsdet = logit(u.squeeze(1), alpha)
        return -0.5 * (x.square() + LOG_2PI) + logabsdet

    # With alpha > 0, [0, 1] maps onto [-c, c], c = logit(1 - alpha): the mass there.
    expected = math.erf(math.log((1 - alpha) / alpha) / math.sqrt(2)) if alpha else 1.0
    assert abs(grid_integral_1d(log_density, 0.0, 1.0, 20000) - expected) < 1e-3


@given(
    magnitude=st.floats(0.0, 1e4), alpha=st.sampled_from(ALPHAS), sign=st.sampled_from([-1.0, 1.0])
)
def test_property_finite_log_derivative(magnitude, alpha, sign):
    x = torch.tensor([sign * magnitude], dtype=torch.float32, requires_grad=True)
    y, logabsdet = sigmoid_forward(x, alpha)
    assert torch.isfinite(y).all() and torch.isfinite(logabsdet).all()
    (grad,) = torch.autograd.grad(logabsdet.sum(), x)
    assert torch.isfinite(grad).all()
