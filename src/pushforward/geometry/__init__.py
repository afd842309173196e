"""Manifolds: the maths of their points, tangent vectors and geodesics.

:class:`Manifold` objects (:class:`Euclidean`, :class:`Sphere`, :class:`FlatTorus`,
:class:`SO3` and their :class:`Product`), built by name with :func:`make_manifold`, and
the sphere's maths as pure functions, which the simplex's flow matching also uses, with
its area-preserving cylindrical coordinates.
"""

from __future__ import annotations

from pushforward.geometry.cylinder import cylinder_to_sphere, sphere_to_cylinder
from pushforward.geometry.manifold import Euclidean, GeodesicPoint, Manifold, Product
from pushforward.geometry.names import MANIFOLDS, make_manifold
from pushforward.geometry.so3 import (
    SO3,
    canonical_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
    rotation_angle,
)
from pushforward.geometry.sphere import (
    Sphere,
    geodesic,
    sphere_distance,
    sphere_exp,
    sphere_log,
    sphere_project,
    sphere_tangent,
)
from pushforward.geometry.torus import FlatTorus, wrap_angle

__all__ = [
    "MANIFOLDS",
    "SO3",
    "Euclidean",
    "FlatTorus",
    "GeodesicPoint",
    "Manifold",
    "Product",
    "Sphere",
    "canonical_quaternion",
    "cylinder_to_sphere",
    "geodesic",
    "make_manifold",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "rotation_angle",
    "sphere_distance",
    "sphere_exp",
    "sphere_log",
    "sphere_project",
    "sphere_tangent",
    "sphere_to_cylinder",
    "wrap_angle",
]
