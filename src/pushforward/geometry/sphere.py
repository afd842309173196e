r"""The unit sphere :math:`S^{d} \subset \mathbb{R}^{d+1}`: exponential and logarithm
maps, geodesics, distances and projections, as pure functions on the last axis, and
the :class:`Sphere` manifold built on them.

Points are unit vectors ``(..., d + 1)``; tangent vectors at ``x`` are the vectors
orthogonal to it. Every function is finite, with finite gradients, at coincident
points and at zero tangent vectors (the series of :math:`\sin\theta / \theta` and
:math:`\theta / \sin\theta` take over near :math:`\theta = 0`, with the branch that
``torch.where`` discards evaluated on a safe value), and stays finite at antipodal
points, where the logarithm has no unique answer.

References: Absil, Mahony & Sepulchre (2008), Optimization Algorithms on Matrix
Manifolds (the sphere's exponential and logarithm maps).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.geometry.manifold import GeodesicPoint, Manifold, check_dimension

SERIES_BELOW = 1e-4
"""Angles under which :math:`\\sin\\theta/\\theta` and :math:`\\theta/\\sin\\theta` are
evaluated by their Taylor series (exact to float64 rounding there)."""


def _safe_norm(v: Tensor) -> Tensor:
    """``|v|`` over the last axis, keeping the axis, with a finite (zero) gradient at zero."""
    squared = (v * v).sum(dim=-1, keepdim=True)
    small = squared <= torch.finfo(v.dtype).tiny
    # The square root's gradient at 0 is infinite: take it on 1 where the answer is 0.
    return torch.where(small, torch.zeros_like(squared),
                       torch.where(small, torch.ones_like(squared), squared).sqrt())  # fmt: skip


def _sinc(theta: Tensor) -> Tensor:
    r""":math:`\sin\theta / \theta`, by its series near 0."""
    small = theta.abs() < SERIES_BELOW
    safe = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, 1.0 - theta * theta / 6.0, torch.sin(safe) / safe)


def _theta_over_sin(theta: Tensor, sin: Tensor) -> Tensor:
    r""":math:`\theta / \sin\theta` for :math:`\theta \in [0, \pi]`, by its series near 0;
    bounded by :math:`\theta / \sin\theta` at the largest representable step near
    :math:`\pi` (the antipodal point, where the logarithm is not unique)."""
    small = theta < SERIES_BELOW
    tiny = torch.finfo(theta.dtype).eps
    safe = torch.where(small, torch.ones_like(sin), sin.clamp_min(tiny))
    return torch.where(small, 1.0 + theta * theta / 6.0, theta / safe)


def sphere_project(x: Tensor) -> Tensor:
    """The nearest point of the sphere: ``x / |x|`` (``x`` must not be zero).

    Args:
        x: ``(..., d + 1)`` non-zero vectors.
    """
    norm = _safe_norm(x)
    return x / norm.clamp_min(torch.finfo(x.dtype).tiny)


def sphere_tangent(x: Tensor, v: Tensor) -> Tensor:
    r"""The projection of ``v`` onto the tangent space at ``x``: :math:`v - \langle v, x\rangle x`.

    Args:
        x: ``(..., d + 1)`` points of the sphere.
        v: ``(..., d + 1)`` vectors.
    """
    return v - (v * x).sum(dim=-1, keepdim=True) * x


def sphere_exp(x: Tensor, v: Tensor) -> Tensor:
    r"""The exponential map :math:`\exp_x(v) = \cos|v|\, x + \frac{\sin|v|}{|v|}\, v`.

    Args:
        x: ``(..., d + 1)`` points of the sphere.
        v: ``(..., d + 1)`` tangent vectors at ``x``.

    Returns:
        ``(..., d + 1)`` points, projected onto the sphere against rounding.
    """
    theta = _safe_norm(v)
    return sphere_project(torch.cos(theta) * x + _sinc(theta) * v)


def sphere_log(x: Tensor, y: Tensor) -> Tensor:
    r"""The logarithm map: the tangent vector at ``x`` whose geodesic reaches ``y`` at time 1,

    .. math:: \log_x(y) = \frac{\theta}{\sin\theta}\,\bigl(y - \cos\theta\, x\bigr),
              \qquad \theta = \operatorname{atan2}\bigl(|y - \langle x, y\rangle x|,
              \langle x, y\rangle\bigr).

    ``atan2`` instead of ``acos`` keeps the angle accurate (and its gradient finite)
    when ``y`` is near ``x``. At the antipode, where no direction is preferred, the
    answer is finite but not meaningful.

    Args:
        x, y: ``(..., d + 1)`` points of the sphere.
    """
    cos = (x * y).sum(dim=-1, keepdim=True)
    rest = y - cos * x
    sin = _safe_norm(rest)
    theta = torch.atan2(sin, cos)
    return _theta_over_sin(theta, sin) * rest


def sphere_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""The geodesic distance, the angle between ``x`` and ``y``,

    .. math:: d(x, y) = \operatorname{atan2}\bigl(|y - \langle x,y\rangle x|,
              \langle x, y\rangle\bigr).

    Args:
        x, y: ``(..., d + 1)`` points of the sphere.

    Returns:
        ``(...)`` angles in :math:`[0, \pi]`.
    """
    cos = (x * y).sum(dim=-1, keepdim=True)
    return torch.atan2(_safe_norm(y - cos * x), cos).squeeze(-1)


def geodesic(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""The point and velocity at time ``t`` of the geodesic from ``x0`` to ``x1``.

    With :math:`v = \log_{x_0}(x_1)` and :math:`\theta = |v|`,

    .. math:: x_t = \cos(t\theta)\, x_0 + \frac{\sin(t\theta)}{\theta}\, v, \qquad
              \dot x_t = -\theta \sin(t\theta)\, x_0 + \cos(t\theta)\, v,

    so the speed is the constant :math:`\theta`; unlike
    :math:`\log_{x_t}(x_1) / (1 - t)` this stays accurate as ``t`` reaches 1.

    Args:
        x0, x1: ``(..., d + 1)`` points of the sphere (not antipodal).
        t: times broadcastable against ``(..., 1)``, e.g. ``(batch, 1)``.

    Returns:
        ``(x_t, dx_t)``, each ``(..., d + 1)``.
    """
    v = sphere_log(x0, x1)
    theta = _safe_norm(v)
    angle = t * theta
    point = torch.cos(angle) * x0 + t * _sinc(angle) * v
    velocity = -theta * torch.sin(angle) * x0 + torch.cos(angle) * v
    return point, velocity


class Sphere(Manifold):
    r"""The unit sphere :math:`S^d`, points as unit vectors ``(d + 1)`` with the round metric.

    Its volume is :math:`|S^d| = 2\pi^{(d+1)/2} / \Gamma(\tfrac{d+1}{2})` (:math:`4\pi` for
    :math:`S^2`), so the uniform density is :math:`-\log 4\pi` on :math:`S^2`, with respect
    to the surface area.

    Example:
        >>> sphere = Sphere(2)
        >>> x = torch.tensor([0.0, 0.0, 1.0])
        >>> sphere.distance(x, sphere.exp(x, torch.tensor([0.5, 0.0, 0.0])))
        tensor(0.5000)
    """

    name = "sphere"

    def __init__(self, dim: int = 2) -> None:
        self.dim = check_dimension(self.name, dim)
        self.ambient = self.dim + 1

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return sphere_exp(x, v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        return sphere_log(x, y)

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        return sphere_distance(x, y)

    def project(self, x: Tensor) -> Tensor:
        return sphere_project(x)

    def tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return sphere_tangent(x, v)

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor) -> GeodesicPoint:
        point, velocity = geodesic(x0, x1, t[:, None])
        return GeodesicPoint(point, velocity)

    def log_volume(self) -> float:
        half = (self.dim + 1) / 2
        return math.log(2.0) + half * math.log(math.pi) - math.lgamma(half)

    def random(
        self,
        n: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        # A standard normal vector's direction is uniform on the sphere.
        z = torch.randn(n, self.ambient, dtype=dtype, device=device, generator=generator)
        return sphere_project(z)

    def _check_rows(self, x: Tensor, what: str, normalize: bool) -> Tensor:
        return unit_rows(x, what, normalize, self.spec())

    def coordinates(self) -> str:
        return f"(unit vectors of R^{self.ambient})"


UNIT_TOLERANCE = 1e-4
"""How far a row's norm may be from 1 for it to count as a point of a sphere."""


def unit_rows(x: Tensor, what: str, normalize: bool, manifold: str) -> Tensor:
    """Rows ``x: (n, k)`` checked to be unit vectors (to :data:`UNIT_TOLERANCE`), or
    normalised when ``normalize`` (zero rows are refused either way)."""
    norms = x.norm(dim=-1)
    if normalize:
        zero = norms <= torch.finfo(x.dtype).tiny
        if bool(zero.any()):
            row = int(zero.nonzero()[0])
            raise ValueError(f"{what} row {row} is zero and has no direction to normalise")
        return x / norms[:, None]
    bad = (norms - 1.0).abs() > UNIT_TOLERANCE
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"{what} row {row} has norm {float(norms[row]):.6g}, but points of the {manifold} "
            f"manifold are unit vectors (to {UNIT_TOLERANCE:g}); normalise the rows first "
            "(--set normalize=true, or normalize=True in Python)"
        )
    return x
