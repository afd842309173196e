r"""The probability simplex as the positive orthant of a sphere, and geodesic paths on it.

The square-root map :math:`p \mapsto s = \sqrt{p}` sends the simplex
:math:`\Delta^{V-1}` onto the positive orthant of the unit sphere
:math:`S^{V-1}_+`, and the Fisher-Rao metric onto four times the sphere's round
metric: the Fisher-Rao geodesics between categorical distributions are great-circle
arcs of the orthant. A token ``k`` is the vertex :math:`e_k`; a source point is drawn
from a distribution on the orthant; the path between them is the arc
(:func:`~pushforward.geometry.sphere.geodesic`), which stays in the orthant because
every angle there is at most :math:`\pi/2`.

References: Davis et al. (2024), Fisher Flow Matching for Generative Modeling over
Discrete Data; Cheng et al. (2024), Categorical Flow Matching on Statistical
Manifolds; Jo & Hwang (2025), Continuous Diffusion Model for Language Modeling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

from pushforward.geometry.sphere import geodesic, sphere_exp

SIMPLEX_SOURCES: tuple[str, ...] = ("orthant", "simplex")
"""Source distributions: ``orthant``, uniform on the sphere's positive orthant (the
square root of a Dirichlet(1/2) point; Davis et al. 2024), or ``simplex``, uniform on
the simplex (Dirichlet(1), mapped by the square root; Cheng et al. 2024)."""

SERIES_BELOW = 1e-4
"""Angles to a vertex under which :math:`\\theta/\\sin\\theta` is its series."""


@dataclass(frozen=True)
class SimplexPathSample:
    """A point of the geodesic path between a source point and a token's vertex.

    Attributes:
        s_t: ``(batch, L, V)`` points of the positive orthant at time ``t``.
        ds_t: ``(batch, L, V)`` their velocities, tangent at ``s_t``.
        t: ``(batch,)`` times.
    """

    s_t: Tensor
    ds_t: Tensor
    t: Tensor


def sample_source(
    kind: str,
    shape: tuple[int, ...],
    valid: Tensor,
    *,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Source points on the positive orthant, zero at the tokens a position cannot take.

    Args:
        kind: ``orthant`` or ``simplex`` (see :data:`SIMPLEX_SOURCES`).
        shape: ``(batch, L)``.
        valid: ``(L, V)`` bool, the tokens each position can take.
        dtype: the floating dtype of the points.
        generator: random generator.

    Returns:
        ``(batch, L, V)`` unit vectors with non-negative coordinates.
    """
    full = (*shape, valid.shape[-1])
    if kind == "orthant":
        raw = torch.randn(full, dtype=dtype, device=valid.device, generator=generator).abs()
    else:
        # Normalised exponentials are Dirichlet(1): uniform on the simplex; the square
        # root below maps it to the orthant.
        raw = torch.empty(full, dtype=dtype, device=valid.device).exponential_(generator=generator)
    raw = raw * valid.to(dtype)
    if kind == "orthant":
        return raw / raw.norm(dim=-1, keepdim=True)
    return (raw / raw.sum(dim=-1, keepdim=True)).sqrt()


def vertices(x: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    """Tokens ``x: (batch, L)`` as the orthant's vertices ``(batch, L, width)``."""
    return functional.one_hot(x, width).to(dtype)


def sample_simplex_path(s0: Tensor, x: Tensor, t: Tensor) -> SimplexPathSample:
    """The geodesic path from source points ``s0`` to the vertices of tokens ``x`` at ``t``.

    Args:
        s0: ``(batch, L, V)`` source points on the orthant.
        x: ``(batch, L)`` int64 tokens.
        t: ``(batch,)`` times in ``[0, 1]``.
    """
    s1 = vertices(x, s0.shape[-1], s0.dtype)
    s_t, ds_t = geodesic(s0, s1, t[:, None, None])
    return SimplexPathSample(s_t, ds_t, t)


def posterior_velocity(s: Tensor, p: Tensor, t: Tensor) -> Tensor:
    r"""The marginal velocity of the geodesic path given the posterior over tokens,

    .. math:: u_t(s)^i = \frac{1}{1 - t} \sum_k p^i_k \log_{s^i}(e_k)
              = \frac{1}{1 - t}\Bigl[p^i \odot f^i - \Bigl(\sum_k p^i_k f^i_k
              s^i_k\Bigr) s^i\Bigr], \qquad f_k = \frac{\theta_k}{\sin\theta_k},\;
              \cos\theta_k = s_k,

    exact because the conditional velocity at position ``i``,
    :math:`\log_{s_t^i}(e_{x_1^i}) / (1 - t)`, depends on the data only through
    :math:`x_1^i`. Costs ``O(V)`` per position.

    Args:
        s: ``(batch, L, V)`` points of the orthant.
        p: ``(batch, L, V)`` the posterior :math:`p_{1|t}(\cdot \mid s)` of each position.
        t: ``(batch,)`` times in ``[0, 1)``.
    """
    cos = s.clamp(0.0, 1.0)
    sin = (1.0 - cos * cos).clamp_min(0.0).sqrt()
    theta = torch.atan2(sin, cos)
    small = theta < SERIES_BELOW
    safe = torch.where(small, torch.ones_like(sin), sin)
    ratio = torch.where(small, 1.0 + theta * theta / 6.0, theta / safe)
    weighted = p * ratio
    direction = weighted - (weighted * cos).sum(dim=-1, keepdim=True) * s
    return direction / (1.0 - t)[:, None, None]


def sphere_euler(
    velocity: Callable[[Tensor, Tensor], Tensor], s0: Tensor, valid: Tensor, steps: int
) -> Tensor:
    r"""Euler steps along the sphere's exponential map from ``s0``, rounded to tokens.

    .. math:: s_{t+h} = \Pi\bigl(\exp_{s_t}(h\, u_t(s_t))\bigr), \qquad h = 1/\text{steps},

    on the uniform grid :math:`t = 0, h, \dots, 1 - h` (the field is never evaluated at
    :math:`t = 1`), with :math:`\Pi` the projection onto the orthant (negative
    coordinates from an overshooting step set to zero, then normalised). Each position
    is rounded to its largest coordinate at the end.

    Args:
        velocity: ``(s_t: (batch, L, V), t: (batch,)) -> (batch, L, V)`` tangent vectors.
        s0: ``(batch, L, V)`` source points on the orthant.
        valid: ``(L, V)`` bool, the tokens each position can take.
        steps: Euler steps.

    Returns:
        ``(batch, L)`` int64 tokens.
    """
    s = s0
    mask = valid.to(s0.dtype)
    h = 1.0 / steps
    for step in range(steps):
        t = torch.full(s.shape[:1], step * h, dtype=s.dtype, device=s.device)
        s = sphere_exp(s, h * velocity(s, t))
        # An Euler step can overshoot the orthant's faces: project back onto it.
        s = s.clamp_min(0.0) * mask
        s = s / s.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
    return s.argmax(dim=-1)
