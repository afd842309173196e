r"""The cylindrical coordinates of :math:`S^2`, which preserve area.

A point :math:`x = (x_1, x_2, x_3)` of the unit sphere other than the poles is its
height and longitude,

.. math:: z = x_3 \in (-1, 1), \qquad \phi = \operatorname{atan2}(x_2, x_1) \in [-\pi, \pi),
          \qquad x = \bigl(\sqrt{1 - z^2}\cos\phi,\ \sqrt{1 - z^2}\sin\phi,\ z\bigr),

and the surface area element is :math:`dA = dz\, d\phi` (Archimedes' hat-box theorem):
the map to the cylinder :math:`[-1, 1] \times [-\pi, \pi)` preserves area, so a density on
the sphere w.r.t. area *is* the density of :math:`(z, \phi)` w.r.t. :math:`dz\,d\phi`,
with no Jacobian term, and the uniform distribution of :math:`S^2` is the uniform one of
the cylinder. The poles (a set of measure zero) are handled numerically: their longitude
is 0, and values and gradients stay finite there.

References:
    Rezende et al. (2020), Normalizing Flows on Tori and Spheres (the cylindrical
    construction of flows on :math:`S^2`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sphere_to_cylinder(x: Tensor) -> Tensor:
    r"""Unit vectors ``(..., 3)`` to cylindrical coordinates ``(..., 2)``: :math:`(z, \phi)`.

    :math:`z` is clamped into :math:`[-1, 1]` against rounding; at a pole (where
    :math:`x_1 = x_2 = 0`) the longitude is 0 with a zero gradient, where ``atan2``'s
    own gradient would be 0/0.

    Example:
        >>> sphere_to_cylinder(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        tensor([[0.0000, 1.5708],
                [1.0000, 0.0000]])
    """
    first, second, height = x.unbind(-1)
    pole = first * first + second * second <= torch.finfo(x.dtype).tiny
    first = torch.where(pole, torch.ones_like(first), first)
    second = torch.where(pole, torch.zeros_like(second), second)
    longitude = torch.atan2(second, first)
    # atan2 returns pi for (negative, +0); the torus convention is [-pi, pi).
    longitude = torch.where(longitude >= torch.pi, longitude - 2 * torch.pi, longitude)
    return torch.stack([height.clamp(-1.0, 1.0), longitude], dim=-1)


def cylinder_to_sphere(cylinder: Tensor) -> Tensor:
    r"""Cylindrical coordinates ``(..., 2)``, :math:`(z, \phi)`, to unit vectors ``(..., 3)``.

    The radius :math:`\sqrt{1 - z^2}` is taken of at least the dtype's epsilon, so its
    gradient stays finite at the poles.

    Example:
        >>> cylinder_to_sphere(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        tensor([[1., 0., 0.],
                [0., 0., 1.]])
    """
    height, longitude = cylinder.unbind(-1)
    height = height.clamp(-1.0, 1.0)
    squared = (1 - height * height).clamp_min(torch.finfo(cylinder.dtype).eps)
    # At a pole the clamp leaves a radius of sqrt(eps); zero it, keeping the gradient finite.
    radius = torch.where(squared > torch.finfo(cylinder.dtype).eps, squared.sqrt(), 0.0)
    return torch.stack(
        [radius * torch.cos(longitude), radius * torch.sin(longitude), height], dim=-1
    )
