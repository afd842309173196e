r"""How a conditioner's raw values become the knots of a rational-quadratic spline.

Two parameterisations turn the ``3K - 1`` raw values into knots; both give the
identity map for all-zero raw values:

* ``"minimum"`` (Durkan et al. 2019, as in nflows): bin sizes
  :math:`m + (1 - Km)\,\mathrm{softmax}(\tilde w)` and derivatives
  :math:`m_\delta + \mathrm{softplus}(\tilde\delta + c)`, shifted so a raw 0 gives 1;
* ``"soft-clip"`` (as in zuko): bin sizes :math:`\mathrm{softmax}(\mathrm{clip}(\tilde w, L/2))`
  and derivatives :math:`\exp(\mathrm{clip}(\tilde\delta, L))`, with the soft clip
  :math:`\mathrm{clip}(v, a) = v / (1 + |v|/a)` and :math:`L = -\log s` for the slope
  bound :math:`s` (``min_derivative``): derivatives and ratios of bin sizes stay within
  :math:`(s, 1/s)`, and the bounded logits need no max subtracted before the exponential.

:func:`spline_knots` is the readable, differentiable reference of both; the kernel
in :mod:`pushforward.transforms.functional.spline` computes the same knots in fewer ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3
SPLINE_PARAMETERIZATIONS = ("minimum", "soft-clip")
SPLINE_ENDS = ("tails", "circular", "interval")
"""What a spline does at the ends of ``[-B, B]``: ``"tails"``, boundary derivatives 1 and
the identity outside (Durkan et al. 2019); ``"circular"``, one learned derivative shared
by both ends, so the map is a diffeomorphism of the circle ``[-B, B)`` with its ends glued
(Rezende et al. 2020); ``"interval"``, both boundary derivatives learned, a
diffeomorphism of the closed interval ``[-B, B]`` onto itself."""


def derivative_offset(min_derivative: float) -> float:
    """The shift that makes a raw derivative of 0 map to a knot derivative of exactly 1."""
    return math.log(math.expm1(1 - min_derivative))


def boundary_derivatives(ends: str) -> int:
    """How many raw boundary derivatives a spline with these ``ends`` takes beyond the
    ``K - 1`` interior ones: 0 (``"tails"``), 1 (``"circular"``) or 2 (``"interval"``)."""
    if ends not in SPLINE_ENDS:
        valid = ", ".join(map(repr, SPLINE_ENDS))
        raise ValueError(f"unknown spline ends {ends!r}; valid: {valid}")
    return SPLINE_ENDS.index(ends)


def check_parameterization(parameterization: str) -> str:
    """``parameterization`` if it is a spline parameterisation, else a ValueError listing them."""
    if parameterization not in SPLINE_PARAMETERIZATIONS:
        valid = ", ".join(map(repr, SPLINE_PARAMETERIZATIONS))
        raise ValueError(f"unknown spline parameterization {parameterization!r}; valid: {valid}")
    return parameterization


def soft_clip(v: Tensor, bound: float) -> Tensor:
    r"""The soft clip :math:`v / (1 + |v| / a)`: odd, increasing, slope 1 at 0, within ``(-a, a)``.

    Args:
        v: any shape.
        bound: :math:`a > 0`.

    Returns:
        The clipped values, shape of ``v``.
    """
    return v / (1 + v.abs() / bound)


def spline_knots(
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    tail_bound: float,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    *,
    parameterization: str = "minimum",
    ends: str = "tails",
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Knot positions and derivatives from raw parameters.

    With ``parameterization="minimum"``:

    .. math:: w_k = m_w + (1 - K m_w)\,\mathrm{softmax}(\tilde w)_k, \quad
              x_k = -B + 2B \sum_{j<k} w_j, \quad
              \delta_k = m_\delta + \mathrm{softplus}(\tilde\delta_k + c)

    with :math:`c = \log(e^{1 - m_\delta} - 1)` so that a raw 0 gives
    :math:`\delta = 1`, and likewise for heights. With ``"soft-clip"``:

    .. math:: w_k = \mathrm{softmax}(\mathrm{clip}(\tilde w, L/2))_k, \quad
              \delta_k = \exp(\mathrm{clip}(\tilde\delta_k, L)), \quad
              L = -\log m_\delta

    (:func:`soft_clip`; ``min_bin_width`` and ``min_bin_height`` are not used). This
    is the readable reference; the spline kernel computes the same knots in fewer ops.

    The boundary derivatives depend on ``ends`` (:data:`SPLINE_ENDS`): both 1
    (``"tails"``), :math:`\delta_K = \delta_0` from one raw value (``"circular"``), or
    both from raw values (``"interval"``), each through the same map as the interior
    ones.

    References:
        Durkan et al. (2019), Neural Spline Flows; Rozet et al. (2022), Zuko:
        Normalizing flows in PyTorch (the soft-clipped parameterisation);
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres (circular ends).

    Args:
        unnormalized_widths: ``(..., K)``.
        unnormalized_heights: ``(..., K)``.
        unnormalized_derivatives: ``(..., K - 1 + e)``, ``e = boundary_derivatives(ends)``:
            the raw knot derivatives in knot order, :math:`\delta_1 .. \delta_{K-1}`
            (``"tails"``), :math:`\delta_0 .. \delta_{K-1}` (``"circular"``) or
            :math:`\delta_0 .. \delta_K` (``"interval"``).
        tail_bound: :math:`B`.
        parameterization: ``"minimum"`` or ``"soft-clip"``.
        ends: ``"tails"``, ``"circular"`` or ``"interval"``.

    Returns:
        ``(knots_x, knots_y, derivatives)``, each ``(..., K + 1)``; the knots span
        ``[-B, B]``.
    """
    bins = unnormalized_widths.shape[-1]
    if check_parameterization(parameterization) == "soft-clip":
        bound = -math.log(min_derivative)
        widths = torch.softmax(soft_clip(unnormalized_widths, bound / 2), -1)
        heights = torch.softmax(soft_clip(unnormalized_heights, bound / 2), -1)
        derivatives = torch.exp(soft_clip(unnormalized_derivatives, bound))
    else:
        widths = torch.softmax(unnormalized_widths, -1)
        widths = min_bin_width + (1 - min_bin_width * bins) * widths
        heights = torch.softmax(unnormalized_heights, -1)
        heights = min_bin_height + (1 - min_bin_height * bins) * heights
        # Raw 0 gives derivative 1, so zero conditioner outputs give the identity spline.
        derivatives = min_derivative + F.softplus(
            unnormalized_derivatives + derivative_offset(min_derivative)
        )
    knots_x = F.pad(torch.cumsum(widths, -1), (1, 0)) * (2 * tail_bound) - tail_bound
    knots_y = F.pad(torch.cumsum(heights, -1), (1, 0)) * (2 * tail_bound) - tail_bound
    extra = boundary_derivatives(ends)
    if unnormalized_derivatives.shape[-1] != bins - 1 + extra:
        raise ValueError(
            f"a {bins}-bin spline with {ends!r} ends takes {bins - 1 + extra} raw derivatives, "
            f"got {unnormalized_derivatives.shape[-1]}"
        )
    if ends == "tails":
        derivatives = F.pad(derivatives, (1, 1), value=1.0)
    elif ends == "circular":
        derivatives = torch.cat([derivatives, derivatives[..., :1]], dim=-1)
    return knots_x, knots_y, derivatives
