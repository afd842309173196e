r"""Product quadrature rules on :math:`S^2`, :math:`S^3`, the flat torus and boxes, and the
entropy of a density by quadrature.

Every rule is ``(points, weights)`` with ``weights.sum()`` equal to the volume of the
space (:math:`4\pi`, :math:`2\pi^2`, :math:`(2\pi)^d`, the box's volume), and each is
spectrally accurate for the smooth, strictly positive densities of
:mod:`pushforward.data.manifold_toys`:

* :math:`S^2` in :math:`(u, \phi) = (\cos\theta, \phi)`, whose area element is
  :math:`du\, d\phi`: Gauss--Legendre in :math:`u` (averaged over :math:`\phi`, a
  smooth function on the sphere is a smooth function of :math:`u`) and the
  trapezoidal rule in the periodic :math:`\phi`;
* :math:`S^3 = \{(t, \sqrt{1 - t^2}\, y) : y \in S^2\}`, volume element
  :math:`\sqrt{1 - t^2}\, dt\, dA(y)`: Gauss--Chebyshev of the second kind in
  :math:`t` times the :math:`S^2` rule;
* the torus :math:`[-\pi, \pi)^d`: the trapezoidal rule, exact to rounding for
  periodic analytic integrands once the grid resolves them;
* a box: Gauss--Legendre in each coordinate.

References:
    Davis & Rabinowitz (1984), Methods of Numerical Integration (the rules);
    Trefethen & Weideman (2014), The exponentially convergent trapezoidal rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

# Rows per log-density call when summing over a rule, so that a mixture's
# (rows, components) intermediates stay small however fine the rule.
_CHUNK_ROWS = 1 << 17


def _periodic_nodes(count: int) -> Tensor:
    """``count`` equally spaced angles in ``[-pi, pi)``, offset by half a cell from ``-pi``."""
    return -math.pi + (2 * math.pi / count) * (torch.arange(count, dtype=torch.float64) + 0.5)


def sphere_quadrature(polar: int, azimuth: int) -> tuple[Tensor, Tensor]:
    r"""A product rule on :math:`S^2`: Gauss--Legendre in :math:`u = \cos\theta`,
    trapezoidal in :math:`\phi`.

    .. math:: \int_{S^2} f\, dA = \int_{-1}^{1}\int_{-\pi}^{\pi}
              f\big(\sqrt{1 - u^2}\cos\phi, \sqrt{1 - u^2}\sin\phi, u\big)\, d\phi\, du

    Args:
        polar: Gauss--Legendre nodes in :math:`u`.
        azimuth: equally spaced nodes in :math:`\phi`.

    Returns:
        float64 ``(polar * azimuth, 3)`` points and ``(polar * azimuth,)`` weights
        summing to :math:`4\pi`.
    """
    nodes, node_weights = np.polynomial.legendre.leggauss(polar)
    u, w_u = torch.from_numpy(nodes), torch.from_numpy(node_weights)
    phi = _periodic_nodes(azimuth)
    uu, pp = torch.meshgrid(u, phi, indexing="ij")
    radius = torch.sqrt(1 - uu.square())
    points = torch.stack([radius * torch.cos(pp), radius * torch.sin(pp), uu], dim=-1)
    weights = (w_u[:, None] * (2 * math.pi / azimuth)).expand(polar, azimuth)
    return points.reshape(-1, 3), weights.reshape(-1)


def three_sphere_quadrature(height: int, polar: int, azimuth: int) -> tuple[Tensor, Tensor]:
    r"""A product rule on :math:`S^3`: Gauss--Chebyshev (second kind) in the first
    coordinate :math:`t`, :func:`sphere_quadrature` for the direction of the rest.

    .. math:: \int_{S^3} f\, dV = \int_{-1}^{1} \sqrt{1 - t^2}
              \int_{S^2} f\big(t, \sqrt{1 - t^2}\, y\big)\, dA(y)\, dt

    with nodes :math:`t_i = \cos(i\pi / (m + 1))` and weights
    :math:`\frac{\pi}{m + 1}\sin^2(i\pi / (m + 1))`, :math:`i = 1..m`.

    Args:
        height: Chebyshev nodes :math:`m` in :math:`t`.
        polar: Gauss--Legendre nodes of the :math:`S^2` rule.
        azimuth: azimuthal nodes of the :math:`S^2` rule.

    Returns:
        float64 ``(height * polar * azimuth, 4)`` points and weights summing to :math:`2\pi^2`.
    """
    angle = torch.arange(1, height + 1, dtype=torch.float64) * (math.pi / (height + 1))
    t, w_t = torch.cos(angle), (math.pi / (height + 1)) * torch.sin(angle).square()
    directions, w_dir = sphere_quadrature(polar, azimuth)
    scale = torch.sin(angle)
    points = torch.cat(
        [
            t[:, None, None].expand(height, directions.shape[0], 1),
            scale[:, None, None] * directions[None],
        ],
        dim=-1,
    )
    return points.reshape(-1, 4), (w_t[:, None] * w_dir[None]).reshape(-1)


def torus_quadrature(count: int, dims: int) -> tuple[Tensor, Tensor]:
    r"""The trapezoidal rule on the flat torus :math:`[-\pi, \pi)^d`.

    Args:
        count: nodes per angle.
        dims: the number of angles :math:`d`.

    Returns:
        float64 ``(count**dims, dims)`` points and weights summing to :math:`(2\pi)^d`.
    """
    axis = _periodic_nodes(count)
    grid = torch.cartesian_prod(*([axis] * dims)).reshape(-1, dims)
    return grid, torch.full((grid.shape[0],), (2 * math.pi / count) ** dims, dtype=torch.float64)


def box_quadrature(
    low: Sequence[float], high: Sequence[float], order: int
) -> tuple[Tensor, Tensor]:
    r"""The tensor Gauss--Legendre rule on the box :math:`\prod_j [a_j, b_j]`.

    Args:
        low: the lower corner :math:`a`.
        high: the upper corner :math:`b`.
        order: nodes per coordinate.

    Returns:
        float64 ``(order**d, d)`` points and weights summing to the box's volume.
    """
    nodes, node_weights = np.polynomial.legendre.leggauss(order)
    axes, axis_weights = [], []
    for a, b in zip(low, high, strict=True):
        axes.append(torch.from_numpy(a + (b - a) * (nodes + 1) / 2))
        axis_weights.append(torch.from_numpy((b - a) / 2 * node_weights))
    points = torch.cartesian_prod(*axes).reshape(-1, len(axes))
    weights = torch.cartesian_prod(*axis_weights).reshape(-1, len(axes)).prod(dim=1)
    return points, weights


def quadrature_entropy(
    log_prob: Callable[[Tensor], Tensor], points: Tensor, weights: Tensor
) -> float:
    r"""Differential entropy :math:`H = -\int p \log p` by a quadrature rule, in float64.

    .. math:: H \approx -\sum_i w_i\, p(x_i) \log p(x_i)

    Points where :math:`p = 0` contribute nothing.

    Args:
        log_prob: maps ``(m, D)`` float64 points to ``(m,)`` log-densities.
        points: ``(N, D)`` nodes of the rule.
        weights: ``(N,)`` its weights.

    Returns:
        The entropy in nats.
    """
    total = 0.0
    for chunk, chunk_weights in zip(
        points.split(_CHUNK_ROWS), weights.split(_CHUNK_ROWS), strict=True
    ):
        log_p = log_prob(chunk)
        finite = torch.isfinite(log_p)
        # p log p -> 0 as p -> 0: drop the -inf points before multiplying (0 * -inf = NaN).
        safe = torch.where(finite, log_p, torch.zeros_like(log_p))
        total += (chunk_weights * torch.exp(safe) * safe * finite).sum().item()
    return -total
