r"""Rational-quadratic splines of a closed interval onto itself, with learned end slopes.

The spline of Durkan et al. (2019) on :math:`[-B, B]` with knots
:math:`x_0 = y_0 = -B`, :math:`x_K = y_K = B` and every knot derivative learned,
the two boundary ones included: a diffeomorphism of the interval, with no tails. Where a
flow's variable lives on a bounded interval (the height :math:`z \in [-1, 1]` of the
sphere's cylindrical coordinates, Rezende et al. 2020), fixing the end slopes to 1 as the
tails do would fix the density at the ends; here they are free.

The bin maths is the package's one spline kernel
(:func:`~pushforward.transforms.functional.spline.spline_kernel`) with
``ends="interval"``: ``K + 1`` raw derivatives :math:`\delta_0 .. \delta_K`.

References:
    Durkan et al. (2019), Neural Spline Flows;
    Rezende et al. (2020), Normalizing Flows on Tori and Spheres.
"""

from __future__ import annotations

from torch import Tensor

from pushforward.transforms.functional.spline import spline_kernel
from pushforward.transforms.functional.spline_parameterization import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
)


def interval_spline_bins(params: Tensor) -> int:
    """The number of bins ``K`` of packed interval-spline parameters ``(..., 3K + 1)``.

    Raises:
        ValueError: a last dimension that is not ``3K + 1`` for some ``K >= 1``.
    """
    width = params.shape[-1]
    if width < 4 or (width - 1) % 3:
        raise ValueError(
            f"an interval spline takes 3K + 1 raw parameters per element (K widths, K "
            f"heights, K + 1 derivatives), got {width}"
        )
    return (width - 1) // 3


def interval_rational_quadratic_spline(
    x: Tensor,
    params: Tensor,
    *,
    bound: float = 1.0,
    inverse: bool = False,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    parameterization: str = "minimum",
) -> tuple[Tensor, Tensor]:
    r"""A monotonic rational-quadratic spline of :math:`[-B, B]` onto itself.

    In bin :math:`k` the map is the rational quadratic of
    :func:`~pushforward.transforms.functional.spline.rational_quadratic_spline`; the
    derivatives :math:`\delta_0` at :math:`-B` and :math:`\delta_K` at :math:`B` are
    learned like the interior ones. All-zero raw parameters give the identity.

    References:
        Durkan et al. (2019), Neural Spline Flows;
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres.

    Args:
        x: inputs in :math:`[-B, B]`, any shape ``S`` (the map is defined there only:
            points outside are passed through unchanged, with log-derivative 0; clamp
            first where rounding may push a value out).
        params: ``S + (3K + 1,)`` (or broadcastable): ``K`` width and ``K`` height
            logits, then the raw derivatives :math:`\delta_0 .. \delta_K`.
        bound: :math:`B`.
        inverse: evaluate the inverse map instead.
        min_bin_width, min_bin_height, min_derivative, parameterization: as in
            :func:`~pushforward.transforms.functional.spline.rational_quadratic_spline`.

    Returns:
        ``(y, log|dy/dx|)``, both of shape ``S``.

    Example:
        >>> import torch
        >>> x = torch.tensor([-1.0, 0.25, 1.0])
        >>> y, _ = interval_rational_quadratic_spline(x, torch.randn(3, 13))
        >>> torch.allclose(y[[0, 2]], x[[0, 2]])  # the ends stay where they are
        True
    """
    if bound <= 0:
        raise ValueError(f"bound must be positive, got {bound}")
    return spline_kernel(
        x,
        params,
        interval_spline_bins(params),
        inverse=inverse,
        tail_bound=float(bound),
        min_bin_width=min_bin_width,
        min_bin_height=min_bin_height,
        min_derivative=min_derivative,
        parameterization=parameterization,
        ends="interval",
    )
