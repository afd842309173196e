r"""The unit sphere :math:`S^{d} \subset \mathbb{R}^{d+1}`: exponential and logarithm
maps, geodesics, distances and projections, as pure functions on the last axis.

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

import torch
from torch import Tensor

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
