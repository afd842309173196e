"""Building a manifold from its name: ``sphere:2``, ``torus``, ``so3``, ``sphere*torus``."""

from __future__ import annotations

from pushforward.geometry.manifold import Euclidean, Manifold, Product
from pushforward.geometry.so3 import SO3
from pushforward.geometry.sphere import Sphere
from pushforward.geometry.torus import FlatTorus
from pushforward.options import closest

MANIFOLDS = ("euclidean", "sphere", "torus", "so3")
"""The factor names :func:`make_manifold` accepts."""


def _columns_to_dimension(name: str, columns: int) -> int:
    return columns - 1 if name == "sphere" else columns


def make_manifold(spec: str | Manifold, columns: int | None = None) -> Manifold:
    """The manifold named ``spec``, checked against the data's number of ``columns``.

    Args:
        spec: factor names from :data:`MANIFOLDS` joined by ``*``, each with an optional
            intrinsic dimension after a colon (``sphere:2``, ``torus:3``, ``so3``); one
            factor may leave it out and takes the columns the others leave. A
            :class:`Manifold` is returned as it is (after the column check).
        columns: the number of coordinates of a data row, if known.

    Raises:
        ValueError: an unknown name (with the closest valid one), a bad dimension, a
            dimension left out where the columns are not known, or a manifold whose
            points have another number of coordinates than ``columns``.

    Example:
        >>> make_manifold("sphere", columns=3)
        Sphere('sphere:2')
        >>> make_manifold("sphere*torus:2", columns=5).spec()
        'sphere:2*torus:2'
    """
    if isinstance(spec, Manifold):
        manifold = spec
    else:
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"manifold must be a name such as 'sphere', got {spec!r}")
        parsed: list[tuple[str, int | None]] = []
        for part in spec.replace(" ", "").lower().split("*"):
            name, _, dim_text = part.partition(":")
            if name not in MANIFOLDS:
                raise ValueError(
                    f"unknown manifold {name!r}{closest(name, list(MANIFOLDS))}; valid: "
                    f"{', '.join(MANIFOLDS)}, or a product such as 'sphere*torus'"
                )
            dim = None
            if dim_text:
                if not dim_text.isdigit() or int(dim_text) < 1:
                    raise ValueError(
                        f"manifold {part!r}: the dimension after ':' must be a positive "
                        f"integer, got {dim_text!r}"
                    )
                dim = int(dim_text)
            if name == "so3":
                if dim not in (None, 3):
                    raise ValueError(f"so3 has dimension 3, got {part!r}")
                dim = 3
            parsed.append((name, dim))
        missing = [i for i, (_, dim) in enumerate(parsed) if dim is None]
        if len(missing) > 1:
            raise ValueError(
                f"manifold {spec!r}: give the dimension of all but one factor "
                "(e.g. 'sphere:2*torus')"
            )
        if missing:
            if columns is None:
                raise ValueError(
                    f"manifold {spec!r}: give its dimension (e.g. 'sphere:2') or the data's "
                    "number of columns"
                )
            known = sum(_ambient(name, dim) for name, dim in parsed if dim is not None)
            index = missing[0]
            name = parsed[index][0]
            left = _columns_to_dimension(name, columns - known)
            if left < 1:
                raise ValueError(f"manifold {spec!r} needs more than the data's {columns} columns")
            parsed[index] = (name, left)
        factors = [_factor(name, dim) for name, dim in parsed]
        manifold = factors[0] if len(factors) == 1 else Product(factors)
    if columns is not None and manifold.ambient != columns:
        raise ValueError(
            f"points of the {manifold.spec()} manifold have {manifold.ambient} coordinates "
            f"{manifold.coordinates()}, but the data has {columns} columns"
        )
    return manifold


def _ambient(name: str, dim: int) -> int:
    if name == "so3":
        return 4
    return dim + 1 if name == "sphere" else dim


def _factor(name: str, dim: int | None) -> Manifold:
    assert dim is not None
    if name == "sphere":
        return Sphere(dim)
    if name == "torus":
        return FlatTorus(dim)
    if name == "so3":
        return SO3()
    return Euclidean(dim)
