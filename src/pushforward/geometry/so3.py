r"""Rotations :math:`SO(3)` as unit quaternions :math:`q = (w, x, y, z)`, with :math:`q`
and :math:`-q` the same rotation: :math:`SO(3) = S^3 / \{\pm 1\}`.

The metric is the round metric of :math:`S^3` carried to the quotient, so geodesics are
great circles of :math:`S^3` towards the nearer of :math:`\pm q_1`, the distance is
:math:`\arccos|\langle q_0, q_1\rangle| \in [0, \pi/2]` (half the angle of the relative
rotation), and densities are taken with respect to the surface measure of :math:`S^3`
(total :math:`2\pi^2`) for functions with :math:`p(q) = p(-q)`: the uniform rotation has
:math:`\log p = -\log 2\pi^2`. Adding :math:`\log 2\pi^2` converts such a log-density to
one with respect to the normalised Haar measure of :math:`SO(3)`.

A velocity network sees a rotation as its matrix (quadratic in :math:`q`, so the same
for :math:`\pm q`) and outputs an angular velocity :math:`\omega \in \mathbb R^3` in the
body frame; the tangent vector is :math:`\tfrac12 q \otimes (0, \omega)`, odd in
:math:`q`. The flow of such a field commutes with :math:`q \mapsto -q`, so with the
uniform base it defines a density that is exactly symmetric: the quotient construction
of Köhler et al. (2023).

References: Köhler et al. (2023), Rigid Body Flows for Sampling Molecular Crystal
Structures; Shoemake (1985), Animating Rotation with Quaternion Curves.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.geometry.manifold import GeodesicPoint, Manifold
from pushforward.geometry.sphere import (
    geodesic,
    sphere_distance,
    sphere_exp,
    sphere_log,
    sphere_project,
    sphere_tangent,
    unit_rows,
)


def quaternion_multiply(p: Tensor, q: Tensor) -> Tensor:
    r"""The Hamilton product :math:`p \otimes q` of quaternions ``(..., 4)`` as (w, x, y, z).

    Example:
        >>> i, j = torch.tensor([0.0, 1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, 0.0])
        >>> quaternion_multiply(i, j)  # i j = k
        tensor([0., 0., 0., 1.])
    """
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack(
        [
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ],
        dim=-1,
    )


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """The rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)``."""
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def canonical_quaternion(q: Tensor) -> Tensor:
    """The representative of ``±q`` whose first non-zero coordinate is positive, so that
    ``q`` and ``-q`` give bit-identical results."""
    nonzero = q != 0
    first = torch.argmax(nonzero.to(torch.int8), dim=-1, keepdim=True)
    sign = torch.where(torch.gather(q, -1, first) < 0, -1.0, 1.0).to(q.dtype)
    return q * sign


def rotation_angle(q: Tensor) -> Tensor:
    r"""The angle :math:`\in [0, \pi]` of the rotation of unit quaternions ``(..., 4)``:
    :math:`2 \operatorname{atan2}(|(x, y, z)|, |w|)`."""
    return 2 * torch.atan2(q[..., 1:].norm(dim=-1), q[..., 0].abs())


def _nearer(x: Tensor, y: Tensor) -> Tensor:
    """``y`` or ``-y``, whichever is nearer to ``x`` on :math:`S^3`."""
    sign = torch.where((x * y).sum(dim=-1, keepdim=True) < 0, -1.0, 1.0).to(y.dtype)
    return y * sign


class SO3(Manifold):
    """Rotations as unit quaternions ``(w, x, y, z)``, ``q`` and ``-q`` one rotation.

    Example:
        >>> rotations = SO3()
        >>> q = torch.tensor([1.0, 0.0, 0.0, 0.0])
        >>> rotations.distance(q, -q)  # the same rotation
        tensor(0.)
    """

    name = "so3"
    dim = 3
    ambient = 4

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return sphere_exp(x, v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        return sphere_log(x, _nearer(x, y))

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        return sphere_distance(x, _nearer(x, y))

    def project(self, x: Tensor) -> Tensor:
        return sphere_project(x)

    def tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return sphere_tangent(x, v)

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor) -> GeodesicPoint:
        point, velocity = geodesic(x0, _nearer(x0, x1), t[:, None])
        return GeodesicPoint(point, velocity)

    @property
    def feature_size(self) -> int:
        return 9

    def features(self, x: Tensor) -> Tensor:
        """``(..., 9)``: the rotation matrix, the same for ``q`` and ``-q``."""
        return quaternion_to_matrix(x).flatten(-2)

    @property
    def output_size(self) -> int:
        return 3

    def vector_field(self, x: Tensor, raw: Tensor) -> Tensor:
        r""":math:`\tfrac12 q \otimes (0, \omega)` for a body-frame angular velocity
        ``raw`` :math:`= \omega`: tangent at ``q`` and odd in ``q``."""
        pure = torch.cat([torch.zeros_like(raw[..., :1]), raw], dim=-1)
        return 0.5 * quaternion_multiply(x, pure)

    def log_volume(self) -> float:
        return math.log(2 * math.pi**2)

    def random(
        self,
        n: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        # A uniform point of S^3 is a uniform rotation (Shoemake 1992).
        z = torch.randn(n, 4, dtype=dtype, device=device, generator=generator)
        return sphere_project(z)

    def _check_rows(self, x: Tensor, what: str, normalize: bool) -> Tensor:
        return unit_rows(x, what, normalize, self.spec())

    def coordinates(self) -> str:
        return "(unit quaternions w, x, y, z)"

    def spec(self) -> str:
        return self.name
