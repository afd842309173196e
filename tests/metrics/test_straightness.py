"""Straightness (Liu et al. 2023) of straight lines, a circular arc and a non-uniform-speed line."""

from __future__ import annotations

import math

import pytest
import torch

from pushforward.metrics import straightness, velocity_straightness

F64 = torch.float64


def arc(times: torch.Tensor, batch: int = 3) -> torch.Tensor:
    """Quarter circles x_t = r (cos(pi t / 2), sin(pi t / 2)) with radii 1, 2, ...: (K+1, B, 2)."""
    radius = torch.arange(1, batch + 1, dtype=F64)[None, :, None]
    angle = (torch.pi / 2 * times)[:, None, None]
    return radius * torch.cat([angle.cos(), angle.sin()], dim=-1)


def arc_velocity(times: torch.Tensor, batch: int = 3) -> torch.Tensor:
    radius = torch.arange(1, batch + 1, dtype=F64)[None, :, None]
    angle = (torch.pi / 2 * times)[:, None, None]
    return radius * torch.pi / 2 * torch.cat([-angle.sin(), angle.cos()], dim=-1)


def mean_square_radius(batch: int = 3) -> float:
    return sum(r * r for r in range(1, batch + 1)) / batch


def test_straight_lines_at_constant_speed_have_zero_straightness():
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, generator=generator, dtype=F64)
    x1 = torch.randn(5, 3, generator=generator, dtype=F64)
    times = torch.tensor([0.0, 0.1, 0.35, 0.6, 1.0], dtype=F64)
    path = [x0 + t * (x1 - x0) for t in times]
    assert straightness(path, times) == pytest.approx(0.0, abs=1e-24)
    velocities = [x1 - x0] * len(times)
    assert velocity_straightness(x0, x1, velocities, times) == pytest.approx(0.0, abs=1e-24)


@pytest.mark.parametrize("steps", [1, 4, 32])
def test_circular_arc_matches_the_discrete_closed_form(steps):
    """Each chord of the arc is 2 r sin(pi / (4K)) long, so the sum of |dx|^2 / dt is
    4 r^2 K^2 sin^2(pi / (4K)); subtracting |x_1 - x_0|^2 = 2 r^2 gives S."""
    times = torch.linspace(0, 1, steps + 1, dtype=F64)
    expected = (4 * steps**2 * math.sin(math.pi / (4 * steps)) ** 2 - 2) * mean_square_radius()
    assert straightness(arc(times), times) == pytest.approx(expected, rel=1e-12)


def test_circular_arc_converges_to_the_continuous_value():
    """S = |x1 - x0|^2 + int |v|^2 - 2 (x1 - x0) . (x1 - x0) = r^2 (pi^2 / 4 - 2)."""
    times = torch.linspace(0, 1, 401, dtype=F64)
    expected = (math.pi**2 / 4 - 2) * mean_square_radius()
    assert straightness(arc(times), times) == pytest.approx(expected, rel=1e-4)
    velocity = velocity_straightness(arc(times)[0], arc(times)[-1], arc_velocity(times), times)
    assert velocity == pytest.approx(expected, rel=1e-4)


def test_non_uniform_speed_on_a_straight_line_is_not_straight():
    """x_t = x0 + t^2 d: v = 2 t d, S = |d|^2 int_0^1 (1 - 2t)^2 dt = |d|^2 / 3."""
    direction = torch.tensor([[3.0, 4.0]], dtype=F64)
    times = torch.linspace(0, 1, 201, dtype=F64)
    path = times[:, None, None] ** 2 * direction
    velocities = 2 * times[:, None, None] * direction
    expected = 25.0 / 3
    assert straightness(path, times) == pytest.approx(expected, rel=1e-4)
    assert velocity_straightness(path[0], path[-1], velocities, times) == pytest.approx(
        expected, rel=1e-4
    )


def test_time_reversal_rescaling_and_input_forms_agree():
    times = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=F64)
    path = arc(times)
    value = straightness(path, times)
    assert straightness(list(path), times.tolist()) == pytest.approx(value, rel=1e-12)
    assert straightness(path.flip(0), times.flip(0)) == pytest.approx(value, rel=1e-12)
    # The same trajectories run on [3, 5] at half speed: time is mapped back to [0, 1].
    assert straightness(path, 3 + 2 * times) == pytest.approx(value, rel=1e-12)
    velocities = arc_velocity(times)
    on_unit = velocity_straightness(path[0], path[-1], velocities, times)
    rescaled = velocity_straightness(path[0], path[-1], velocities / 2, 3 + 2 * times)
    assert rescaled == pytest.approx(on_unit, rel=1e-12)
    reversed_ = velocity_straightness(path[-1], path[0], velocities.flip(0), times.flip(0))
    assert reversed_ == pytest.approx(on_unit, rel=1e-12)
    images = path.reshape(5, 3, 1, 2)
    assert straightness(images, times) == pytest.approx(value, rel=1e-12)


def test_straightness_rejects_bad_grids():
    path = arc(torch.linspace(0, 1, 4, dtype=F64))
    with pytest.raises(ValueError, match="got 3 times for 4 states"):
        straightness(path, [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        straightness(path, [0.0, 0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="must match the shape of one velocity"):
        velocity_straightness(path[0][:2], path[-1], path, [0.0, 0.3, 0.6, 1.0])
