"""The circular and interval rational-quadratic splines: the shared kernel with other ends."""

from __future__ import annotations

import math

import pytest
import torch

from pushforward.transforms.functional.circular_spline import circular_rational_quadratic_spline
from pushforward.transforms.functional.interval_spline import interval_rational_quadratic_spline
from pushforward.transforms.functional.spline import spline_kernel
from pushforward.transforms.functional.spline_parameterization import (
    SPLINE_PARAMETERIZATIONS,
    spline_knots,
)
from pushforward.transforms.functional.spline_table import knot_table
from tests.contract import assert_elementwise_round_trip, assert_log_derivative

BINS = 5
PARAMETERIZATIONS = list(SPLINE_PARAMETERIZATIONS)


def raw(shape: tuple[int, ...], width: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, width, generator=generator, dtype=torch.float64)


def angles(n: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * math.pi


def circular(x, params, shift=None, inverse=False, parameterization="minimum"):
    return circular_rational_quadratic_spline(
        x, params, shift, inverse=inverse, parameterization=parameterization
    )


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_circular_round_trip_and_log_derivative(parameterization):
    x = angles(200)
    params, shift = raw((200,), 3 * BINS), raw((200,), 1, seed=2)[:, 0] * 3

    def forward(v):
        return circular(v, params, shift, parameterization=parameterization)

    def inverse(v):
        return circular(v, params, shift, True, parameterization)

    assert_elementwise_round_trip(forward, inverse, x, atol=1e-10)
    assert_log_derivative(forward, x, atol=1e-10)
    y, _ = forward(x)
    assert_log_derivative(inverse, y, atol=1e-10)
    assert bool((y >= -math.pi).all() and (y < math.pi).all())


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_circular_closed_form_backward_passes_gradcheck(inverse, parameterization):
    x = angles(6).requires_grad_(True)
    params = raw((6,), 3 * BINS).requires_grad_(True)
    shift = raw((6,), 1, seed=3)[:, 0].requires_grad_(True)

    def function(x, params, shift):
        return circular(x, params, shift, inverse, parameterization)

    assert torch.autograd.gradcheck(function, (x, params, shift))
    assert torch.autograd.gradgradcheck(function, (x, params, shift))


def test_circular_is_a_circle_map_monotonic_with_equal_end_slopes():
    params = raw((1,), 3 * BINS, scale=1.5).expand(2001, -1)
    grid = torch.linspace(-math.pi, math.pi, 2001, dtype=torch.float64)
    y, logabsdet = circular(grid, params)  # no rotation: -pi stays at -pi
    assert bool((torch.diff(y[:-1]) > 0).all())  # y[-1] is pi again, wrapped to -pi
    torch.testing.assert_close(y[0], torch.tensor(-math.pi, dtype=torch.float64))
    # The derivative at -pi equals the one just below pi: the map is C^1 across the seam.
    ends = torch.tensor([-math.pi, math.pi - 1e-12], dtype=torch.float64)
    _, end_slopes = circular(ends, params[:2])
    torch.testing.assert_close(end_slopes[0], end_slopes[1], atol=1e-9, rtol=0)
    assert abs(float(end_slopes[0])) > 0.1  # learned, not the tails' 1
    # Inputs a turn away are the same points.
    shifted, shifted_logabsdet = circular(grid[1:-1] + 2 * math.pi, params[1:-1])
    torch.testing.assert_close(shifted, y[1:-1], atol=1e-12, rtol=0)
    torch.testing.assert_close(shifted_logabsdet, logabsdet[1:-1], atol=1e-12, rtol=0)


def test_circular_rotation_moves_the_fixed_point_and_zero_is_the_identity():
    x = angles(50)
    y, logabsdet = circular(x, torch.zeros(50, 3 * BINS, dtype=torch.float64))
    torch.testing.assert_close(y, x, atol=1e-14, rtol=0)
    torch.testing.assert_close(logabsdet, torch.zeros_like(x), atol=1e-14, rtol=0)
    shift = torch.full((50,), 0.5, dtype=torch.float64)
    rotated, _ = circular(x, torch.zeros(50, 3 * BINS, dtype=torch.float64), shift)
    expected = torch.remainder(x + 0.5 + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(rotated, expected, atol=1e-14, rtol=0)


@pytest.mark.parametrize("ends", ["circular", "interval"])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_the_kernels_knots_match_the_readable_reference(ends, parameterization):
    extra = 1 if ends == "circular" else 2
    params = raw((7,), 3 * BINS - 1 + extra)
    minimum = 0.0 if parameterization == "soft-clip" else 1e-3
    table, _ = knot_table(params, BINS, 2.0, parameterization, minimum, minimum, 1e-3, ends)
    knots_x, knots_y, derivatives = spline_knots(
        params[:, :BINS],
        params[:, BINS : 2 * BINS],
        params[:, 2 * BINS :],
        2.0,
        minimum,
        minimum,
        1e-3,
        parameterization=parameterization,
        ends=ends,
    )
    torch.testing.assert_close(table[0].t(), knots_x)
    torch.testing.assert_close(table[1].t(), knots_y)
    torch.testing.assert_close(table[2].t(), derivatives)
    if ends == "circular":
        torch.testing.assert_close(derivatives[:, 0], derivatives[:, -1], atol=0, rtol=0)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_interval_spline_maps_the_interval_onto_itself(parameterization):
    generator = torch.Generator().manual_seed(4)
    x = 2 * torch.rand(300, generator=generator, dtype=torch.float64) - 1
    params = raw((300,), 3 * BINS + 1, scale=1.5)

    def forward(v):
        return interval_rational_quadratic_spline(v, params, parameterization=parameterization)

    def inverse(v):
        return interval_rational_quadratic_spline(
            v, params, inverse=True, parameterization=parameterization
        )

    assert_elementwise_round_trip(forward, inverse, x, atol=1e-10)
    assert_log_derivative(forward, x, atol=1e-10)
    ends = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    y, slopes = interval_rational_quadratic_spline(ends, params[:2])
    torch.testing.assert_close(y, ends, atol=1e-12, rtol=0)
    assert float(slopes.abs().min()) > 1e-3  # the end slopes are learned, not 1


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_interval_closed_form_backward_passes_gradcheck(inverse, parameterization):
    generator = torch.Generator().manual_seed(5)
    x = (1.8 * torch.rand(6, generator=generator, dtype=torch.float64) - 0.9).requires_grad_(True)
    params = raw((6,), 3 * BINS + 1).requires_grad_(True)

    def function(x, params):
        return interval_rational_quadratic_spline(
            x, params, bound=0.9, inverse=inverse, parameterization=parameterization
        )

    assert torch.autograd.gradcheck(function, (x, params))
    assert torch.autograd.gradgradcheck(function, (x, params))


def test_float32_follows_the_input():
    x = angles(10).float()
    y, logabsdet = circular(x, raw((10,), 3 * BINS).float(), raw((10,), 1)[:, 0].float())
    assert y.dtype == logabsdet.dtype == torch.float32
    assert bool((y >= -math.pi).all() and (y < math.pi).all())


def test_bad_parameter_counts_are_errors():
    with pytest.raises(ValueError, match="3K raw parameters"):
        circular(angles(3), torch.zeros(3, 3 * BINS - 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="3K \\+ 1 raw parameters"):
        interval_rational_quadratic_spline(torch.zeros(3), torch.zeros(3, 3 * BINS))
    with pytest.raises(ValueError, match="unknown spline ends"):
        spline_kernel(
            torch.zeros(2),
            torch.zeros(2, 14),
            BINS,
            inverse=False,
            tail_bound=1.0,
            min_bin_width=1e-3,
            min_bin_height=1e-3,
            min_derivative=1e-3,
            parameterization="minimum",
            ends="tail",
        )
