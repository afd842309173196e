r"""The manifold contract, Euclidean space, products, and building a manifold by name.

A manifold's points are rows of ``ambient`` coordinates (unit vectors for the sphere,
angles for the torus, unit quaternions for SO(3)); its tangent vectors at a point use
the same coordinates. Every manifold here is a Riemannian submanifold of its
coordinate space (or a quotient of one) with the induced metric, so the Riemannian
inner product of two tangent vectors is their Euclidean one and its volume measure is
the induced surface (or Lebesgue) measure: a density's ``log_prob`` is with respect to
it.

Names: ``euclidean``, ``sphere``, ``torus``, ``so3``, each optionally with its
intrinsic dimension after a colon (``sphere:2`` is :math:`S^2`, ``torus:3`` is
:math:`T^3`), and products joined by ``*`` (``sphere:2*torus:1``). One factor may
leave its dimension out and takes the columns left over.

References: Absil, Mahony & Sepulchre (2008), Optimization Algorithms on Matrix
Manifolds; Chen & Lipman (2024), Flow Matching on General Geometries.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GeodesicPoint:
    """A point of a geodesic and its velocity there.

    Attributes:
        x_t: ``(batch, ambient)`` the point at time ``t``.
        dx_t: ``(batch, ambient)`` the geodesic's velocity at ``x_t`` (a tangent vector).
    """

    x_t: Tensor
    dx_t: Tensor


class Manifold(ABC):
    """A Riemannian manifold whose points are rows of ``ambient`` coordinates.

    Attributes:
        name: the factor's name in :func:`make_manifold` (``sphere``, ...).
        dim: the intrinsic dimension.
        ambient: the number of coordinates of a point (the data's columns).
        compact: whether the manifold has finite volume (and so a uniform distribution).
    """

    name: str
    dim: int
    ambient: int
    compact: bool = True

    # -- maps --------------------------------------------------------------------

    @abstractmethod
    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        """The exponential map: the point the geodesic from ``x`` with initial velocity
        ``v`` reaches at time 1. ``x, v: (..., ambient)``."""

    @abstractmethod
    def log(self, x: Tensor, y: Tensor) -> Tensor:
        """The logarithm map: the tangent vector at ``x`` with ``exp(x, log(x, y)) = y``
        along a shortest geodesic. ``x, y: (..., ambient)``."""

    @abstractmethod
    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """The geodesic distance ``(...)`` of ``x, y: (..., ambient)``."""

    @abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """The point of the manifold nearest to (or canonical for) coordinates ``x``."""

    @abstractmethod
    def tangent(self, x: Tensor, v: Tensor) -> Tensor:
        """The orthogonal projection of a vector ``v`` onto the tangent space at ``x``."""

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor) -> GeodesicPoint:
        r"""The point and velocity at ``t`` of the shortest geodesic from ``x0`` to ``x1``,

        .. math:: x_t = \exp_{x_0}(t \log_{x_0} x_1), \qquad \dot x_t = \frac{d}{dt} x_t.

        Args:
            x0, x1: ``(batch, ambient)`` points.
            t: ``(batch,)`` times in ``[0, 1]``.
        """
        v = self.log(x0, x1)
        tb = t[:, None]
        # The generic rule for flat factors; curved factors override with closed forms.
        return GeodesicPoint(self.exp(x0, tb * v), v)

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """The Riemannian inner product ``(...)`` of tangent vectors ``u, v`` at ``x``."""
        return (u * v).sum(dim=-1)

    # -- the network's view ------------------------------------------------------

    @property
    def feature_size(self) -> int:
        """Columns of :meth:`features`, the network's input for a point."""
        return self.ambient

    def features(self, x: Tensor) -> Tensor:
        """What a velocity network sees of a point: its coordinates by default
        (the torus gives cosines and sines, SO(3) a rotation matrix)."""
        return x

    @property
    def output_size(self) -> int:
        """Columns a velocity network outputs; :meth:`vector_field` turns them into a
        tangent vector."""
        return self.ambient

    def vector_field(self, x: Tensor, raw: Tensor) -> Tensor:
        """The tangent vector at ``x`` a network's output ``raw: (..., output_size)``
        stands for: its projection onto the tangent space by default."""
        return self.tangent(x, raw)

    # -- distributions -----------------------------------------------------------

    def log_volume(self) -> float:
        """The log of the total Riemannian volume (compact manifolds only)."""
        raise ValueError(f"the {self.spec()} manifold has infinite volume and no uniform density")

    def uniform_log_prob(self, x: Tensor) -> Tensor:
        """The uniform density's log ``(batch,)``: minus the log-volume."""
        value = -self.log_volume()
        return torch.full(x.shape[:-1], value, dtype=x.dtype, device=x.device)

    @abstractmethod
    def random(
        self,
        n: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` random points ``(n, ambient)``: uniform on a compact manifold, the
        standard normal on Euclidean space (the reference distribution a flow starts from)."""

    def reference_log_prob(self, x: Tensor) -> Tensor:
        """The log-density ``(batch,)`` of :meth:`random`'s distribution."""
        return self.uniform_log_prob(x)

    # -- data --------------------------------------------------------------------

    def check(self, x: Tensor, what: str = "data", *, normalize: bool = False) -> Tensor:
        """Validates rows ``x: (n, ambient)`` as points of the manifold and returns them
        (canonicalised: torus angles wrapped, sphere rows normalised when asked).

        Raises:
            ValueError: a wrong column count, a NaN or infinite value, or a row that is
                not on the manifold, naming the first bad row.
        """
        if x.ndim != 2 or x.shape[1] != self.ambient:
            shape = tuple(x.shape)
            raise ValueError(
                f"{what} has shape {shape}, but points of the {self.spec()} manifold have "
                f"{self.ambient} coordinates {self.coordinates()}: expected (n, {self.ambient})"
            )
        finite = torch.isfinite(x).all(dim=1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0])
            raise ValueError(f"{what} row {row} holds a NaN or infinite value")
        return self._check_rows(x, what, normalize)

    def _check_rows(self, x: Tensor, what: str, normalize: bool) -> Tensor:
        return x

    def coordinates(self) -> str:
        """How a point's coordinates are laid out, in words."""
        return f"({self.ambient} reals)"

    # -- names -------------------------------------------------------------------

    def spec(self) -> str:
        """The name that rebuilds this manifold with :func:`make_manifold`."""
        return f"{self.name}:{self.dim}"

    @property
    def factors(self) -> tuple[Manifold, ...]:
        """The factors of a product; a single manifold is its own only factor."""
        return (self,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifold) and other.spec() == self.spec()

    def __hash__(self) -> int:
        return hash(self.spec())


class Euclidean(Manifold):
    r""":math:`\mathbb R^d` with its flat metric: :math:`\exp_x(v) = x + v`,
    :math:`\log_x(y) = y - x`. It has no uniform distribution; :meth:`random` draws the
    standard normal, the source of a flow on a product with a Euclidean factor.

    Example:
        >>> Euclidean(2).log(torch.zeros(2), torch.ones(2))
        tensor([1., 1.])
    """

    name = "euclidean"
    compact = False

    def __init__(self, dim: int) -> None:
        self.dim = self.ambient = check_dimension(self.name, dim)

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return x + v

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        return (y - x).square().sum(dim=-1).sqrt()

    def project(self, x: Tensor) -> Tensor:
        return x

    def tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return v

    def random(
        self,
        n: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return torch.randn(n, self.dim, dtype=dtype, device=device, generator=generator)

    def reference_log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * (x.square().sum(dim=-1) + self.dim * math.log(2 * math.pi))


class Product(Manifold):
    r"""The product :math:`M_1 \times \dots \times M_k` of manifolds, its points the
    concatenated coordinates of the factors': every map acts factor by factor, the
    squared distance is the sum of the factors' and the volume their product.

    Example:
        >>> from pushforward.geometry import make_manifold
        >>> product = make_manifold("sphere:2*torus:1")
        >>> product.ambient, product.dim
        (4, 3)
    """

    name = "product"

    def __init__(self, factors: Sequence[Manifold]) -> None:
        parts: list[Manifold] = []
        for factor in factors:
            parts.extend(factor.factors)
        if len(parts) < 2:
            raise ValueError("a product needs at least two factors")
        self._factors = tuple(parts)
        self.dim = sum(f.dim for f in parts)
        self.ambient = sum(f.ambient for f in parts)
        self.compact = all(f.compact for f in parts)
        edges = [0]
        for f in parts:
            edges.append(edges[-1] + f.ambient)
        self._slices = tuple(slice(a, b) for a, b in itertools.pairwise(edges))
        out = [0]
        for f in parts:
            out.append(out[-1] + f.output_size)
        self._outputs = tuple(slice(a, b) for a, b in itertools.pairwise(out))

    @property
    def factors(self) -> tuple[Manifold, ...]:
        return self._factors

    def split(self, x: Tensor) -> list[Tensor]:
        """The factors' coordinates of ``x: (..., ambient)``."""
        return [x[..., s] for s in self._slices]

    def _each(self, method: str, *arrays: Tensor) -> Tensor:
        pieces = zip(*(self.split(a) for a in arrays), strict=True)
        return torch.cat(
            [getattr(f, method)(*p) for f, p in zip(self._factors, pieces, strict=True)], dim=-1
        )

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return self._each("exp", x, v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        return self._each("log", x, y)

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        squares = [
            f.distance(a, b).square()
            for f, a, b in zip(self._factors, self.split(x), self.split(y), strict=True)
        ]
        total = torch.stack(squares, dim=-1).sum(dim=-1)
        # The square root's gradient at 0 is infinite: take it on 1 where the answer is 0.
        zero = total <= torch.finfo(total.dtype).tiny
        return torch.where(zero, torch.zeros_like(total),
                           torch.where(zero, torch.ones_like(total), total).sqrt())  # fmt: skip

    def project(self, x: Tensor) -> Tensor:
        parts = [f.project(a) for f, a in zip(self._factors, self.split(x), strict=True)]
        return torch.cat(parts, dim=-1)

    def tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return self._each("tangent", x, v)

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor) -> GeodesicPoint:
        points = [
            f.geodesic(a, b, t)
            for f, a, b in zip(self._factors, self.split(x0), self.split(x1), strict=True)
        ]
        return GeodesicPoint(
            torch.cat([p.x_t for p in points], dim=-1), torch.cat([p.dx_t for p in points], dim=-1)
        )

    @property
    def feature_size(self) -> int:
        return sum(f.feature_size for f in self._factors)

    def features(self, x: Tensor) -> Tensor:
        return torch.cat(
            [f.features(a) for f, a in zip(self._factors, self.split(x), strict=True)], dim=-1
        )

    @property
    def output_size(self) -> int:
        return sum(f.output_size for f in self._factors)

    def vector_field(self, x: Tensor, raw: Tensor) -> Tensor:
        return torch.cat(
            [
                f.vector_field(a, raw[..., s])
                for f, a, s in zip(self._factors, self.split(x), self._outputs, strict=True)
            ],
            dim=-1,
        )

    def log_volume(self) -> float:
        return sum(f.log_volume() for f in self._factors)

    def random(
        self,
        n: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return torch.cat(
            [f.random(n, dtype=dtype, device=device, generator=generator) for f in self._factors],
            dim=-1,
        )

    def reference_log_prob(self, x: Tensor) -> Tensor:
        parts = [f.reference_log_prob(a) for f, a in zip(self._factors, self.split(x), strict=True)]
        return torch.stack(parts, dim=-1).sum(dim=-1)

    def _check_rows(self, x: Tensor, what: str, normalize: bool) -> Tensor:
        checked = [
            f._check_rows(a, f"{what} ({f.spec()} columns)", normalize)
            for f, a in zip(self._factors, self.split(x), strict=True)
        ]
        return torch.cat(checked, dim=-1)

    def coordinates(self) -> str:
        return " then ".join(f"{f.spec()} {f.coordinates()}" for f in self._factors)

    def spec(self) -> str:
        return "*".join(f.spec() for f in self._factors)


def check_dimension(name: str, dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"the {name} manifold's dimension must be a positive integer, got {dim!r}")
    return dim
