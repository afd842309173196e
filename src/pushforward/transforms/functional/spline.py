"""Monotonic rational-quadratic splines with linear tails (Durkan et al. 2019)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_knots(
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    tail_bound: float,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor, Tensor]:
    """Knot positions and derivatives from raw parameters.

    Args:
        unnormalized_widths: ``(..., K)``.
        unnormalized_heights: ``(..., K)``.
        unnormalized_derivatives: ``(..., K - 1)`` interior knot derivatives.

    Returns:
        ``(knots_x, knots_y, derivatives)``, each ``(..., K + 1)``; the knots span
        ``[-B, B]`` and the boundary derivatives are 1.
    """
    bins = unnormalized_widths.shape[-1]
    widths = min_bin_width + (1 - min_bin_width * bins) * torch.softmax(unnormalized_widths, -1)
    heights = min_bin_height + (1 - min_bin_height * bins) * torch.softmax(unnormalized_heights, -1)
    knots_x = F.pad(torch.cumsum(widths, -1), (1, 0)) * (2 * tail_bound) - tail_bound
    knots_y = F.pad(torch.cumsum(heights, -1), (1, 0)) * (2 * tail_bound) - tail_bound
    # Raw 0 gives derivative 1, so zero conditioner outputs give the identity spline.
    offset = math.log(math.expm1(1 - min_derivative))
    derivatives = min_derivative + F.softplus(unnormalized_derivatives + offset)
    derivatives = F.pad(derivatives, (1, 1), value=1.0)
    return knots_x, knots_y, derivatives


def rational_quadratic_spline(
    x: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 5.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    r"""A monotonic rational-quadratic spline on ``[-B, B]``, the identity outside.

    In bin :math:`k` with :math:`\xi = (x - x_k)/w_k`, slope :math:`s_k = h_k/w_k`:

    .. math:: y = y_k + h_k \frac{s_k \xi^2 + \delta_k \xi(1-\xi)}
              {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\xi(1-\xi)}

    References:
        Durkan et al. (2019), Neural Spline Flows; Gregory & Delbourgo (1982).

    Args:
        x: inputs, any shape ``S``.
        unnormalized_widths, unnormalized_heights: ``S + (K,)``.
        unnormalized_derivatives: ``S + (K - 1,)``.
        inverse: evaluate the inverse map instead.

    Returns:
        ``(y, log|dy/dx|)``, both of shape ``S``.
    """
    knots_x, knots_y, derivatives = spline_knots(
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        tail_bound,
        min_bin_width,
        min_bin_height,
        min_derivative,
    )
    inside = (x >= -tail_bound) & (x <= tail_bound)
    # Clamp before evaluating: the discarded branch of torch.where still back-propagates.
    x_in = x.clamp(-tail_bound, tail_bound)
    search = knots_y if inverse else knots_x
    index = torch.searchsorted(search.detach(), x_in.unsqueeze(-1).detach(), right=True) - 1
    index = index.clamp(0, search.shape[-1] - 2)
    x_k = knots_x.gather(-1, index).squeeze(-1)
    x_k1 = knots_x.gather(-1, index + 1).squeeze(-1)
    y_k = knots_y.gather(-1, index).squeeze(-1)
    y_k1 = knots_y.gather(-1, index + 1).squeeze(-1)
    d_k = derivatives.gather(-1, index).squeeze(-1)
    d_k1 = derivatives.gather(-1, index + 1).squeeze(-1)
    w = x_k1 - x_k
    h = y_k1 - y_k
    s = h / w
    if not inverse:
        xi = ((x_in - x_k) / w).clamp(0, 1)
        xi_1m = xi * (1 - xi)
        denominator = s + (d_k1 + d_k - 2 * s) * xi_1m
        y = y_k + h * (s * xi.square() + d_k * xi_1m) / denominator
        numerator = s.square() * (d_k1 * xi.square() + 2 * s * xi_1m + d_k * (1 - xi).square())
        logabsdet = torch.log(numerator) - 2 * torch.log(denominator)
    else:
        dy = x_in - y_k
        c = d_k1 + d_k - 2 * s
        a = h * (s - d_k) + dy * c
        b = h * d_k - dy * c
        cc = -s * dy
        discriminant = (b.square() - 4 * a * cc).clamp_min(0)
        xi = ((2 * cc) / (-b - torch.sqrt(discriminant))).clamp(0, 1)
        y = xi * w + x_k
        xi_1m = xi * (1 - xi)
        denominator = s + c * xi_1m
        numerator = s.square() * (d_k1 * xi.square() + 2 * s * xi_1m + d_k * (1 - xi).square())
        logabsdet = -(torch.log(numerator) - 2 * torch.log(denominator))
    y = torch.where(inside, y, x)
    logabsdet = torch.where(inside, logabsdet, torch.zeros_like(logabsdet))
    return y, logabsdet
