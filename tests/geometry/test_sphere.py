"""The sphere's maths: exp and log are inverse, geodesics hit their ends at constant
speed, and nothing is NaN (value or gradient) at coincident points or zero vectors."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.geometry import (
    geodesic,
    sphere_distance,
    sphere_exp,
    sphere_log,
    sphere_project,
    sphere_tangent,
)


def points(seed: int, n: int = 16, dim: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return sphere_project(torch.randn(n, dim, generator=generator, dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6))
def test_log_inverts_exp_and_gives_the_distance(seed, dim):
    x, y = points(seed, dim=dim), points(seed + 1, dim=dim)
    v = sphere_log(x, y)
    assert torch.allclose((v * x).sum(-1), torch.zeros(16, dtype=torch.float64), atol=1e-10)
    torch.testing.assert_close(sphere_exp(x, v), y, atol=1e-9, rtol=0)
    torch.testing.assert_close(v.norm(dim=-1), sphere_distance(x, y))
    angle = torch.acos((x * y).sum(-1).clamp(-1, 1))
    torch.testing.assert_close(sphere_distance(x, y), angle, atol=1e-7, rtol=0)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_geodesic_has_its_ends_and_constant_speed_matching_finite_differences(seed, t):
    x0, x1 = points(seed), points(seed + 7)
    time = torch.full((16, 1), t, dtype=torch.float64)
    point, velocity = geodesic(x0, x1, time)
    torch.testing.assert_close(point.norm(dim=-1), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(velocity.norm(dim=-1), sphere_distance(x0, x1))
    h = 1e-6
    ahead, _ = geodesic(x0, x1, time + h)
    behind, _ = geodesic(x0, x1, time - h)
    torch.testing.assert_close((ahead - behind) / (2 * h), velocity, atol=1e-6, rtol=0)
    start, _ = geodesic(x0, x1, torch.zeros(16, 1, dtype=torch.float64))
    end, _ = geodesic(x0, x1, torch.ones(16, 1, dtype=torch.float64))
    torch.testing.assert_close(start, x0)
    torch.testing.assert_close(end, x1, atol=1e-9, rtol=0)


def test_no_nan_at_coincident_points_zero_vectors_or_antipodes():
    x = points(3).requires_grad_()
    for y in (x, -x.detach()):
        values = [sphere_log(x, y), sphere_distance(x, y), sphere_exp(x, 0 * x)]
        values.append(geodesic(x, x, torch.full((16, 1), 0.5, dtype=torch.float64))[0])
        total = sum(value.sum() for value in values)
        (gradient,) = torch.autograd.grad(total, x)
        assert all(torch.isfinite(value).all() for value in values)
        assert torch.isfinite(gradient).all()
    torch.testing.assert_close(sphere_distance(x, -x).detach(), torch.full((16,), math.pi,
                               dtype=torch.float64))  # fmt: skip
    tiny = sphere_tangent(x.detach(), 1e-9 * points(4))
    torch.testing.assert_close(sphere_log(x.detach(), sphere_exp(x.detach(), tiny)), tiny,
                               atol=1e-15, rtol=1e-6)  # fmt: skip
