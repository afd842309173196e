r"""The flat torus :math:`T^d = [-\pi, \pi)^d` with opposite faces glued: angles that
wrap, the flat metric, and Lebesgue measure (total :math:`(2\pi)^d`).

The logarithm takes the shorter way round each circle, :math:`\log_x(y) =
\operatorname{wrap}(y - x)`, so a geodesic crosses the seam at :math:`\pm\pi` when that
is shorter; wrapping is a translation by :math:`2\pi k` with unit derivative, so values
and gradients stay finite there. A velocity network sees each angle as its cosine and
sine, so the field it defines is smooth across the seam.

References: Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
Chen & Lipman (2024), Flow Matching on General Geometries.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.geometry.manifold import Manifold, check_dimension


def wrap_angle(x: Tensor) -> Tensor:
    r"""Angles wrapped into :math:`[-\pi, \pi)`: :math:`x - 2\pi \lfloor (x + \pi) / 2\pi
    \rfloor`, with unit derivative.

    Args:
        x: angles (any shape, any reals).

    Example:
        >>> wrap_angle(torch.tensor([math.pi, 3 * math.pi / 2, -7.0]))
        tensor([-3.1416, -1.5708, -0.7168])
    """
    turn = 2 * math.pi
    wrapped = torch.remainder(x + math.pi, turn) - math.pi
    # remainder can round up to the full turn for inputs just below a multiple of it.
    return torch.where(wrapped >= math.pi, wrapped - turn, wrapped)


class FlatTorus(Manifold):
    r"""The flat torus :math:`T^d`: points are ``d`` angles in :math:`[-\pi, \pi)`.

    .. math:: \exp_x(v) = \operatorname{wrap}(x + v), \quad \log_x(y) =
              \operatorname{wrap}(y - x), \quad d(x, y) = |\log_x(y)|,

    with the uniform density :math:`-d \log 2\pi` (Lebesgue measure on the square).

    Example:
        >>> torus = FlatTorus(1)
        >>> torus.log(torch.tensor([3.0]), torch.tensor([-3.0]))  # across the seam
        tensor([0.2832])
    """

    name = "torus"

    def __init__(self, dim: int = 2) -> None:
        self.dim = self.ambient = check_dimension(self.name, dim)

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return wrap_angle(x + v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        return wrap_angle(y - x)

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        difference = self.log(x, y)
        squared = difference.square().sum(dim=-1)
        # The square root's gradient at 0 is infinite: take it on 1 where the answer is 0.
        zero = squared <= torch.finfo(squared.dtype).tiny
        return torch.where(zero, torch.zeros_like(squared),
                           torch.where(zero, torch.ones_like(squared), squared).sqrt())  # fmt: skip

    def project(self, x: Tensor) -> Tensor:
        return wrap_angle(x)

    def tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return v

    @property
    def feature_size(self) -> int:
        return 2 * self.dim

    def features(self, x: Tensor) -> Tensor:
        """``(..., 2 d)``: the cosines, then the sines, of the angles."""
        return torch.cat([torch.cos(x), torch.sin(x)], dim=-1)

    @property
    def output_size(self) -> int:
        return self.dim

    def vector_field(self, x: Tensor, raw: Tensor) -> Tensor:
        return raw

    def log_volume(self) -> float:
        return self.dim * math.log(2 * math.pi)

    def random(
        self,
        n: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        u = torch.rand(n, self.dim, dtype=dtype, device=device, generator=generator)
        return wrap_angle((2 * u - 1) * math.pi)

    def _check_rows(self, x: Tensor, what: str, normalize: bool) -> Tensor:
        # Any real angle names a point of the circle.
        return wrap_angle(x)

    def coordinates(self) -> str:
        return f"({self.dim} angles in radians)"
