r"""Circular rational-quadratic splines: diffeomorphisms of the circle :math:`[-\pi, \pi)`.

A rational-quadratic spline (Durkan et al. 2019) whose knots span :math:`[-\pi, \pi]`
with :math:`x_0 = y_0 = -\pi` and :math:`x_K = y_K = \pi` maps the interval onto itself;
if also its derivatives at the two ends agree, :math:`\delta_K = \delta_0`, it glues
across the seam into a :math:`C^1` diffeomorphism of the circle (Rezende et al. 2020).
Such a spline fixes the point :math:`-\pi \equiv \pi`, so a rotation
:math:`y \mapsto y + \theta` (mod :math:`2\pi`) follows it, with unit derivative:

.. math:: f(x) = \operatorname{wrap}\bigl(s(\operatorname{wrap}(x)) + \theta\bigr),
          \qquad \log |f'(x)| = \log s'(\operatorname{wrap}(x)).

The bin maths is the package's one spline kernel
(:func:`~pushforward.transforms.functional.spline.spline_kernel`) with ``ends="circular"``:
``K`` raw derivatives, :math:`\delta_0 .. \delta_{K-1}`, the last knot taking the first
one's. The readable reference of the knots is
:func:`~pushforward.transforms.functional.spline_parameterization.spline_knots` with the
same ``ends``.

References:
    Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
    Durkan et al. (2019), Neural Spline Flows.
"""

from __future__ import annotations

import math

from torch import Tensor

from pushforward.geometry.torus import wrap_angle
from pushforward.transforms.functional.spline import spline_kernel
from pushforward.transforms.functional.spline_parameterization import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
)


def circular_spline_bins(params: Tensor) -> int:
    """The number of bins ``K`` of packed circular-spline parameters ``(..., 3K)``.

    Raises:
        ValueError: a last dimension that is not a positive multiple of 3.
    """
    width = params.shape[-1]
    if width < 3 or width % 3:
        raise ValueError(
            f"a circular spline takes 3K raw parameters per element (K widths, K heights, "
            f"K derivatives), got {width}"
        )
    return width // 3


def circular_rational_quadratic_spline(
    x: Tensor,
    params: Tensor,
    shift: Tensor | None = None,
    *,
    inverse: bool = False,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    parameterization: str = "minimum",
) -> tuple[Tensor, Tensor]:
    r"""A circle diffeomorphism: a circular rational-quadratic spline, then a rotation.

    .. math:: y = \operatorname{wrap}\bigl(s(\operatorname{wrap}(x)) + \theta\bigr),
              \qquad x = \operatorname{wrap}\bigl(s^{-1}(\operatorname{wrap}(y - \theta))\bigr)

    with :math:`s` the rational-quadratic spline on :math:`[-\pi, \pi]` whose end knots
    share one derivative, so :math:`f` and :math:`f'` are continuous across the seam.
    All-zero raw parameters and :math:`\theta = 0` give the identity.

    References:
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
        Durkan et al. (2019), Neural Spline Flows.

    Args:
        x: angles, any shape ``S`` (any reals: they are wrapped into :math:`[-\pi, \pi)`).
        params: ``S + (3K,)`` (or broadcastable): ``K`` width and ``K`` height logits,
            then the raw derivatives :math:`\delta_0 .. \delta_{K-1}`.
        shift: the rotation :math:`\theta` in radians, shape ``S`` (or broadcastable);
            ``None`` for none.
        inverse: evaluate the inverse map instead.
        min_bin_width, min_bin_height, min_derivative, parameterization: as in
            :func:`~pushforward.transforms.functional.spline.rational_quadratic_spline`.

    Returns:
        ``(y, log|dy/dx|)``, both of shape ``S``; ``y`` in :math:`[-\pi, \pi)`.

    Example:
        >>> import torch
        >>> x = torch.tensor([-3.0, 0.5, 3.1])
        >>> y, logabsdet = circular_rational_quadratic_spline(x, torch.zeros(3, 12))
        >>> bool(torch.allclose(y, x)), bool(logabsdet.abs().max() < 1e-6)
        (True, True)
    """
    bins = circular_spline_bins(params)

    def spline(values: Tensor) -> tuple[Tensor, Tensor]:
        return spline_kernel(
            values,
            params,
            bins,
            inverse=bool(inverse),
            tail_bound=math.pi,
            min_bin_width=min_bin_width,
            min_bin_height=min_bin_height,
            min_derivative=min_derivative,
            parameterization=parameterization,
            ends="circular",
        )

    if not inverse:
        y, logabsdet = spline(wrap_angle(x))
        return wrap_angle(y if shift is None else y + shift), logabsdet
    out, logabsdet = spline(wrap_angle(x if shift is None else x - shift))
    # The spline maps [-pi, pi] onto itself; pi itself is the seam's other name for -pi.
    return wrap_angle(out), logabsdet
