r"""Built-in distributions on the sphere, the torus, SO(3) and a box, with exact log-densities.

Every set is a :class:`ManifoldToy`: ``sample(n, seed)`` (float64, reproducible from
the seed), ``log_prob(x)`` (exact, ``(n,)``) and ``entropy`` (nats, computed once by
a spectrally accurate quadrature, :mod:`pushforward.data.manifold_quadrature`), so a
fitted model's KL divergence to the truth is its cross-entropy (NLL) minus ``entropy``.

Densities are with respect to the Riemannian volume of each space, a convention
evaluation depends on:

==========  ===========================  ==================================  ===================
manifold    points (``features``)        reference measure                   uniform log-density
==========  ===========================  ==================================  ===================
``sphere``  unit vectors of R^3 (3)      surface area of S^2 (total 4 pi)    -log 4 pi
``torus``   angles in [-pi, pi)^d (d)    Lebesgue measure on [-pi, pi)^d     -d log 2 pi
``so3``     unit quaternions (4)         surface measure of S^3 (2 pi^2)     -log 2 pi^2
``box``     points of [low, high] (d)    Lebesgue measure                    -log volume
==========  ===========================  ==================================  ===================

Quaternions are ``(w, x, y, z)``, scalar part first. A rotation is a pair of
antipodal quaternions, so an SO(3) density satisfies
:math:`p(q) = p(-q)` and integrates to 1 over all of :math:`S^3`.

====================  ========  ==========================================================
name                  space     definition
====================  ========  ==========================================================
``vmf-mixture``       S^2       4 von Mises--Fisher components, kappa 4 to 60
``von-mises-torus``   T^2       3 products of von Mises densities, one across the seam
``rotation-mixture``  SO(3)     3 antipodally symmetrised vMF components on S^3
``box-edges``         [0, 1]^2  Beta(1, b) products: mass along the 4 edges and 2 corners
====================  ========  ==========================================================

References:
    Mardia & Jupp (2000), Directional Statistics (the von Mises and von Mises--Fisher
    densities, antipodal symmetry).
    Wood (1994), Simulation of the von Mises Fisher distribution (the samplers).
    Chen & Lipman (2024), Flow Matching on General Geometries (Riemannian flow
    matching on these spaces, which these sets measure with exact KL divergences).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property

import torch
from torch import Tensor

from pushforward.data.earth import latlon_to_unit
from pushforward.data.manifold_densities import log_vmf_mode_density, sample_vmf, vmf_log_prob
from pushforward.data.manifold_quadrature import (
    box_quadrature,
    quadrature_entropy,
    sphere_quadrature,
    three_sphere_quadrature,
    torus_quadrature,
)
from pushforward.data.toys import check_sample_count, mixture_components

MANIFOLDS = ("sphere", "torus", "so3", "box")
"""The spaces a :class:`ManifoldToy` (and a data set's ``domain``) can live on."""


class ManifoldToy(ABC):
    r"""A named distribution on a manifold: a seeded sampler, its exact density and entropy.

    It answers what :class:`~pushforward.data.toys.Toy` answers (``sample``,
    ``log_prob``, ``entropy``), so evaluation reports ``kl = nll - entropy`` for it
    the same way, and says where its points live: ``manifold`` (one of
    :data:`MANIFOLDS`) and ``features``, the number of embedding coordinates.

    Example:
        >>> toy = MANIFOLD_TOYS["vmf-mixture"]
        >>> x = toy.sample(5, seed=0)
        >>> x.shape, toy.log_prob(x).shape
        (torch.Size([5, 3]), torch.Size([5]))
    """

    name: str
    description: str
    manifold: str
    features: int

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``n`` independent samples, float64 ``(n, features)``, the same for the same ``seed``."""
        return self.sample_with(check_sample_count(n), torch.Generator().manual_seed(int(seed)))

    @abstractmethod
    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` samples ``(n, features)`` in float64 drawn with ``generator``."""

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact log-density of ``x: (n, features)`` w.r.t. the space's volume (see the
        module's table); ``(n,)`` in ``x``'s dtype and device."""
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(
                f"{self.name!r} takes points of shape (n, {self.features}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"points must be a floating-point tensor, got dtype {x.dtype}")
        return self._log_prob(x)

    @abstractmethod
    def _log_prob(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def quadrature(self) -> tuple[Tensor, Tensor]:
        """The rule ``(points, weights)`` (float64) that :attr:`entropy` sums over."""

    @cached_property
    def entropy(self) -> float:
        r"""Differential entropy :math:`-\int p \log p` w.r.t. the space's volume, in nats
        (by :meth:`quadrature`, computed once, then cached)."""
        return quadrature_entropy(self.log_prob, *self.quadrature())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _normalised_weights(weights: Sequence[float]) -> tuple[float, ...]:
    total = sum(weights)
    if not weights or min(weights) <= 0:
        raise ValueError(f"mixture weights must be positive, got {tuple(weights)}")
    return tuple(float(w) / total for w in weights)


def _positive(name: str, values: Tensor) -> Tensor:
    if values.numel() == 0 or not bool((values > 0).all()):
        raise ValueError(f"{name} must be positive, got {values.tolist()}")
    return values


class _VonMisesFisherComponents(ManifoldToy):
    r"""vMF components :math:`(w_k, \mu_k, \kappa_k)` on the unit sphere of R^features, and
    the mixture's exact sampler; subclasses give the density built from them."""

    def __init__(
        self, name: str, description: str, means: Tensor, kappas: Tensor, weights: Sequence[float]
    ) -> None:
        self.name, self.description = name, description
        means = means.to(torch.float64)
        self.means = means / torch.linalg.vector_norm(means, dim=1, keepdim=True)
        self.kappas = _positive("kappas", kappas.to(torch.float64))
        self.weights = _normalised_weights(weights)
        self.log_weights = torch.tensor(self.weights, dtype=torch.float64).log()
        if not self.means.shape[0] == self.kappas.shape[0] == len(self.weights):
            raise ValueError("means, kappas and weights must have one entry per component")
        if self.means.shape[1] != self.features:
            raise ValueError(f"means must have {self.features} coordinates")

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        component = mixture_components(n, self.weights, generator)
        points = torch.empty(n, self.features, dtype=torch.float64)
        for k, kappa in enumerate(self.kappas.tolist()):
            chosen = component == k
            points[chosen] = sample_vmf(self.means[k], kappa, int(chosen.sum()), generator)
        return points


class VonMisesFisherMixture(_VonMisesFisherComponents):
    r"""A mixture of von Mises--Fisher densities on :math:`S^2`.

    .. math::
        p(x) = \sum_k w_k\, \frac{\kappa_k}{4\pi\sinh\kappa_k}\, e^{\kappa_k \mu_k^\top x}

    w.r.t. surface area, evaluated as :math:`\kappa_k(\mu_k^\top x - 1) + \log
    \frac{\kappa_k}{2\pi(1 - e^{-2\kappa_k})}` so that large :math:`\kappa` stays finite.
    Sampled exactly (inversion of the cosine, see
    :func:`~pushforward.data.manifold_densities.vmf_cosines`).

    References:
        Mardia & Jupp (2000), Directional Statistics, section 9.3.

    Args:
        name: registry name.
        description: one line for listings.
        means: ``(K, 3)`` mean directions (normalised here).
        kappas: ``(K,)`` concentrations, positive.
        weights: ``K`` mixture weights (normalised here).
    """

    manifold = "sphere"
    features = 3

    def _log_prob(self, x: Tensor) -> Tensor:
        terms = vmf_log_prob(x, self.means.to(x), self.kappas.to(x))
        return torch.logsumexp(terms + self.log_weights.to(x), dim=1)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        # The sharpest component (kappa 60) spans about 1/sqrt(60) = 0.13 rad, which
        # 128 x 256 nodes cross with 5 or more; a rule twice as fine changes H by < 1e-13.
        return sphere_quadrature(128, 256)


class VonMisesTorusMixture(ManifoldToy):
    r"""A mixture of products of von Mises densities on the flat torus :math:`[-\pi, \pi)^d`.

    .. math::
        p(\theta) = \sum_k w_k \prod_{j=1}^{d}
            \frac{e^{\kappa_{kj}\cos(\theta_j - \mu_{kj})}}{2\pi I_0(\kappa_{kj})}

    w.r.t. the Lebesgue measure on :math:`[-\pi, \pi)^d`, with :math:`I_0` through the
    scaled :math:`\operatorname{i0e}`. The density is :math:`2\pi`-periodic in every
    angle, so angles outside :math:`[-\pi, \pi)` get the value of their wrapped
    angle. Each angle is sampled as the direction of a vMF draw on the circle
    (Wood's algorithm with :math:`d = 2`), wrapped into :math:`[-\pi, \pi)`.

    References:
        Mardia & Jupp (2000), Directional Statistics, section 3.5.
        Wood (1994), Simulation of the von Mises Fisher distribution.

    Args:
        name: registry name.
        description: one line for listings.
        means: ``(K, d)`` mean angles :math:`\mu_{kj}`.
        kappas: ``(K, d)`` concentrations, positive.
        weights: ``K`` mixture weights (normalised here).
    """

    manifold = "torus"

    def __init__(
        self, name: str, description: str, means: Tensor, kappas: Tensor, weights: Sequence[float]
    ) -> None:
        self.name, self.description = name, description
        self.means = means.to(torch.float64)
        self.kappas = _positive("kappas", kappas.to(torch.float64))
        self.weights = _normalised_weights(weights)
        self.log_weights = torch.tensor(self.weights, dtype=torch.float64).log()
        if self.means.shape != self.kappas.shape or self.means.shape[0] != len(self.weights):
            raise ValueError("means and kappas must be (K, d) and weights must have K entries")
        self.features = self.means.shape[1]

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        component = mixture_components(n, self.weights, generator)
        angles = torch.empty(n, self.features, dtype=torch.float64)
        for k in range(len(self.weights)):
            chosen = component == k
            count = int(chosen.sum())
            for j in range(self.features):
                mean = self.means[k, j]
                direction = torch.stack([torch.cos(mean), torch.sin(mean)])
                circle = sample_vmf(direction, float(self.kappas[k, j]), count, generator)
                angles[chosen, j] = torch.atan2(circle[:, 1], circle[:, 0])
        # atan2 lies in (-pi, pi]; the torus is [-pi, pi).
        return torch.where(angles >= math.pi, angles - 2 * math.pi, angles)

    def _log_prob(self, x: Tensor) -> Tensor:
        means, kappas = self.means.to(x), self.kappas.to(x)
        mode = log_vmf_mode_density(kappas, 2)
        per_angle = kappas * (torch.cos(x[:, None, :] - means) - 1) + mode
        return torch.logsumexp(per_angle.sum(dim=2) + self.log_weights.to(x), dim=1)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        # Periodic and analytic: 128 nodes an angle cross the sharpest factor (kappa 10,
        # width 0.3 rad) with 6, where the trapezoidal rule is already exact to rounding.
        return torus_quadrature(128, self.features)


class AntipodalVonMisesFisherMixture(_VonMisesFisherComponents):
    r"""A mixture of antipodally symmetrised vMF densities on :math:`S^3`: a density on SO(3).

    .. math::
        p(q) = \sum_k w_k\, \tfrac12\big[\mathrm{vMF}(q; \mu_k, \kappa_k)
               + \mathrm{vMF}(q; -\mu_k, \kappa_k)\big]
             = \sum_k w_k\, \frac{\kappa_k}{4\pi^2 I_1(\kappa_k)} \cosh(\kappa_k \mu_k^\top q)

    w.r.t. the surface measure of :math:`S^3` (total :math:`2\pi^2`), for unit
    quaternions :math:`q = (w, x, y, z)`. It is evaluated through
    :math:`|\mu_k^\top q|` as :math:`\log\cosh(\kappa t) = \kappa |t| +
    \log(1 + e^{-2\kappa|t|}) - \log 2`, so that :math:`p(q) = p(-q)` holds to the
    last bit, with :math:`I_1` through the scaled :math:`\operatorname{i1e}`.
    Sampled by Wood's algorithm on :math:`S^3`, then a random sign.

    References:
        Mardia & Jupp (2000), Directional Statistics, section 9.3 (the vMF density and
        its normaliser on :math:`S^3`; antipodally symmetric densities are those of axes).
        Wood (1994), Simulation of the von Mises Fisher distribution.

    Args:
        name: registry name.
        description: one line for listings.
        means: ``(K, 4)`` mean quaternions (normalised here).
        kappas: ``(K,)`` concentrations, positive.
        weights: ``K`` mixture weights (normalised here).
    """

    manifold = "so3"
    features = 4

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        points = super().sample_with(n, generator)
        sign = 2 * torch.randint(0, 2, (n, 1), generator=generator, dtype=torch.float64) - 1
        return sign * points

    def _log_prob(self, x: Tensor) -> Tensor:
        means, kappas = self.means.to(x), self.kappas.to(x)
        scaled = kappas * (x @ means.T).abs()
        log_cosh = scaled + torch.log1p(torch.exp(-2 * scaled)) - math.log(2)
        terms = log_cosh - kappas + log_vmf_mode_density(kappas, 4)
        return torch.logsumexp(terms + self.log_weights.to(x), dim=1)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        # 64 x 64 x 96 nodes: the sharpest component (kappa 24, width 0.2 rad) gets 4 or
        # more a width in each direction; a rule twice as fine changes H by < 1e-13.
        return three_sphere_quadrature(64, 64, 96)


class BetaEdgeMixture(ManifoldToy):
    r"""A mixture of products of Beta(1, b) densities on a box: mass along edges and corners.

    In the unit coordinates :math:`u = (x - a) / (b - a)`, component :math:`k` is a
    product over coordinates of :math:`\beta\,(1 - u_j)^{\beta - 1}` (mass at the
    side :math:`u_j = 0`) or :math:`\beta\, u_j^{\beta - 1}` (at :math:`u_j = 1`),
    :math:`\beta = \beta_{kj} \ge 1`; :math:`\beta = 1` is uniform in that coordinate.

    .. math::
        p(x) = \frac{1}{\prod_j (b_j - a_j)} \sum_k w_k \prod_j
               \beta_{kj}\, \big(1 - |u_j - s_{kj}|\big)^{\beta_{kj} - 1}

    w.r.t. the Lebesgue measure, :math:`-\infty` outside the box. Every term is at
    most :math:`\prod_j \beta_{kj}`, so the sum is formed without logarithms; as long
    as every point of the closed box has a component that does not vanish there (an
    edge component and the one on the opposite edge do), :math:`\log p` is finite on
    the whole closed box. Sampled by inversion, :math:`1 - |u_j - s_{kj}| =
    V^{1/\beta_{kj}}` with :math:`V \sim U(0, 1]`.

    Args:
        name: registry name.
        description: one line for listings.
        low: the lower corner :math:`a`.
        high: the upper corner :math:`b`.
        sides: ``(K, d)`` the side :math:`s_{kj} \in \{0, 1\}` each factor piles up at.
        exponents: ``(K, d)`` the :math:`\beta_{kj} \ge 1`.
        weights: ``K`` mixture weights (normalised here).
    """

    manifold = "box"

    def __init__(
        self,
        name: str,
        description: str,
        low: Sequence[float],
        high: Sequence[float],
        sides: Tensor,
        exponents: Tensor,
        weights: Sequence[float],
    ) -> None:
        self.name, self.description = name, description
        self.low = tuple(float(a) for a in low)
        self.high = tuple(float(b) for b in high)
        if len(self.low) != len(self.high) or any(
            b <= a for a, b in zip(self.low, self.high, strict=True)
        ):
            raise ValueError(f"the box needs low < high in every coordinate, got {low}, {high}")
        self.sides = sides.to(torch.float64)
        self.exponents = exponents.to(torch.float64)
        self.weights = _normalised_weights(weights)
        shape = (len(self.weights), len(self.low))
        if self.sides.shape != shape or self.exponents.shape != shape:
            raise ValueError(f"sides and exponents must have shape {shape}")
        if not bool(((self.sides == 0) | (self.sides == 1)).all()) or self.exponents.min() < 1:
            raise ValueError("sides must be 0 or 1 and exponents at least 1")
        self.features = len(self.low)
        self.corners = torch.tensor([self.low, self.high], dtype=torch.float64)
        self.weight_vector = torch.tensor(self.weights, dtype=torch.float64)
        self.volume = math.prod(b - a for a, b in zip(self.low, self.high, strict=True))

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        component = mixture_components(n, self.weights, generator)
        v = 1 - torch.rand(n, self.features, generator=generator, dtype=torch.float64)
        near = v.pow(1 / self.exponents[component])
        unit = torch.where(self.sides[component] == 1, near, 1 - near)
        low, high = self.corners
        return low + (high - low) * unit

    def _log_prob(self, x: Tensor) -> Tensor:
        low, high = self.corners.to(x)
        inside = ((x >= low) & (x <= high)).all(dim=1)
        # Clamped before the power so that points outside (masked below) stay finite.
        unit = ((x - low) / (high - low)).clamp(0, 1)[:, None, :]
        sides, exponents = self.sides.to(x), self.exponents.to(x)
        near = torch.where(sides == 1, unit, 1 - unit)
        factors = exponents * near.pow(exponents - 1)
        density = (factors.prod(dim=2) * self.weight_vector.to(x)).sum(dim=1)
        log_p = torch.log(density) - math.log(self.volume)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))

    def quadrature(self) -> tuple[Tensor, Tensor]:
        # The density is a polynomial of degree below 16 in each coordinate and log p is
        # analytic on the closed box: 64 Gauss-Legendre nodes a coordinate integrate p
        # exactly and p log p to rounding.
        return box_quadrature(self.low, self.high, 64)


def _manifold_toys() -> dict[str, ManifoldToy]:
    degrees = torch.tensor([[40.0, -100.0], [-20.0, 30.0], [10.0, 120.0], [-70.0, -60.0]])
    toys: list[ManifoldToy] = [
        VonMisesFisherMixture(
            "vmf-mixture",
            "4 von Mises-Fisher components on S^2 (kappa 8, 20, 60, 4); exact density",
            latlon_to_unit(degrees[:, 0].double(), degrees[:, 1].double()),
            torch.tensor([8.0, 20.0, 60.0, 4.0]),
            (0.3, 0.25, 0.25, 0.2),
        ),
        VonMisesTorusMixture(
            "von-mises-torus",
            "3 products of von Mises densities on the torus [-pi, pi)^2; exact density",
            torch.tensor([[-2.0, -1.0], [1.0, 2.0], [3.0, 0.5]]),
            torch.tensor([[4.0, 8.0], [10.0, 2.0], [6.0, 6.0]]),
            (0.4, 0.35, 0.25),
        ),
        AntipodalVonMisesFisherMixture(
            "rotation-mixture",
            "3 antipodally symmetric vMF components on unit quaternions (SO(3)); exact density",
            torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 1.0, 0.0]]),
            torch.tensor([4.0, 10.0, 24.0]),
            (0.3, 0.4, 0.3),
        ),
        BetaEdgeMixture(
            "box-edges",
            "mass along the 4 edges and at 2 corners of [0, 1]^2 (Beta(1, b) products); exact",
            (0.0, 0.0),
            (1.0, 1.0),
            torch.tensor([[0, 0], [1, 0], [0, 0], [0, 1], [0, 0], [1, 1]]),
            torch.tensor([[6, 1], [6, 1], [1, 6], [1, 6], [10, 10], [8, 8]]),
            (0.15, 0.15, 0.15, 0.15, 0.25, 0.15),
        ),
    ]
    return {toy.name: toy for toy in toys}


MANIFOLD_TOYS: dict[str, ManifoldToy] = _manifold_toys()
"""The built-in manifold sets by name."""
