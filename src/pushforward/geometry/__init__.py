"""Manifolds: the maths of their points, tangent vectors and geodesics.

For now the sphere's maths as pure functions (:mod:`pushforward.geometry.sphere`),
which the simplex's flow matching uses through the square-root map.
"""

from __future__ import annotations

from pushforward.geometry.sphere import (
    geodesic,
    sphere_distance,
    sphere_exp,
    sphere_log,
    sphere_project,
    sphere_tangent,
)

__all__ = [
    "geodesic",
    "sphere_distance",
    "sphere_exp",
    "sphere_log",
    "sphere_project",
    "sphere_tangent",
]
