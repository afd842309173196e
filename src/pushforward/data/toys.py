"""Two-dimensional toy distributions of the flow literature, with exact densities.

Every toy is defined so that its density is known: ``get_toy(name)`` returns a
:class:`Toy` with ``sample(n, seed)`` (float64 ``(n, 2)``, reproducible from the
seed), ``log_prob`` (a function ``(n, 2) -> (n,)``, or ``None`` for a toy without
an exact density) and ``entropy`` (nats, or ``None``), so a fitted model's
KL divergence to the truth is ``NLL - entropy``.

======================  ==============================================  ==================
name                    definition                                      density
======================  ==============================================  ==================
``8gaussians``          8 Gaussians (sd 0.2) on a circle of radius 2    exact mixture
``checkerboard``        uniform on 8 unit squares of ``[-2, 2]^2``      exact, H = log 8
``circles``             circles r = 1, 2 + Gaussian noise (sd 0.1)      closed form (I0)
``rings``               circles r = .75, 1.5, 2.25, 3 + noise (sd .08)  closed form (I0)
``moons``               two half circles + Gaussian noise (sd 0.2)      1-D quadrature
``swissroll``           spiral (t cos t, t sin t)/5 + noise (sd 0.2)    1-D quadrature
``2spirals``            two Archimedean spirals + noise (sd 0.1)        1-D quadrature
``pinwheel``            5 curved arms + noise (sd 0.2)                  1-D quadrature
======================  ==============================================  ==================

The curve toys are continuous mixtures ``p(x) = sum_k w_k int q(t) N(x; c_k(t),
sigma^2 I) dt`` over a latent curve parameter; their density is that 1-D
integral by composite Gauss--Legendre quadrature
(:func:`pushforward.data.densities.noisy_curve_mixture`).

References:
    Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models (the usual set of 2-D toys, which these follow
    up to the changes that make their densities exact).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cached_property

import torch
from torch import Tensor

from pushforward.data.densities import (
    IsotropicGaussianMixture,
    NoisyCircles,
    ToyDensity,
    UnionOfSquares,
    noisy_curve_mixture,
)
from pushforward.options import closest


def check_sample_count(n: int) -> int:
    """``n`` unchanged if it is a non-negative integer, else a ValueError in the user's words."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of samples must be a non-negative integer, got {n!r}")
    return n


class Toy(ABC):
    """A named 2-D distribution: a seeded sampler and, where it exists, its exact density."""

    name: str
    description: str

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``n`` independent samples, float64 ``(n, 2)``, the same for the same ``seed``."""
        return self.sample_with(check_sample_count(n), torch.Generator().manual_seed(int(seed)))

    @abstractmethod
    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` samples ``(n, 2)`` in float64 drawn with ``generator``."""

    @abstractmethod
    def _density(self) -> ToyDensity | None: ...

    @cached_property
    def density(self) -> ToyDensity | None:
        """The exact density object (built once), or ``None`` if there is none."""
        return self._density()

    @property
    def log_prob(self) -> Callable[[Tensor], Tensor] | None:
        """The exact log-density ``(n, 2) -> (n,)``, or ``None``."""
        density = self.density
        return None if density is None else density.log_prob

    @property
    def entropy(self) -> float | None:
        """The differential entropy in nats (computed once), or ``None``."""
        density = self.density
        return None if density is None else density.entropy

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _randn(n: int, generator: torch.Generator) -> Tensor:
    return torch.randn(n, 2, generator=generator, dtype=torch.float64)


def mixture_components(n: int, weights: tuple[float, ...], generator: torch.Generator) -> Tensor:
    """``n`` component indices ``(n,)`` (int64) drawn with probabilities ``weights``."""
    probabilities = torch.tensor(weights, dtype=torch.float64)
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.multinomial(probabilities, n, replacement=True, generator=generator)


class EightGaussians(Toy):
    r"""An equal mixture of 8 isotropic Gaussians centred on a circle.

    .. math:: p(x) = \frac18 \sum_{k=0}^{7} \mathcal N\big(x; R(\cos\tfrac{k\pi}{4},
              \sin\tfrac{k\pi}{4}), \sigma^2 I\big), \quad R = 2,\ \sigma = 0.2
    """

    name = "8gaussians"
    description = "8 Gaussians (sd 0.2) on a circle of radius 2; exact density"
    radius = 2.0
    scale = 0.2

    def _centres(self) -> Tensor:
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        component = torch.randint(0, 8, (n,), generator=generator)
        return self._centres()[component] + self.scale * _randn(n, generator)

    def _density(self) -> ToyDensity:
        log_weights = torch.full((8,), -math.log(8), dtype=torch.float64)
        return IsotropicGaussianMixture(self._centres(), log_weights, self.scale)


class Checkerboard(Toy):
    r"""Uniform on the 8 squares of a 4x4 checkerboard on :math:`[-2, 2]^2`.

    The black squares are the unit cells whose integer corner :math:`(i, j)`
    has :math:`i + j` even; :math:`p = 1/8` on them and :math:`H = \log 8`.
    """

    name = "checkerboard"
    description = "uniform on the 8 black unit squares of [-2, 2]^2; exact density, H = log 8"

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        x = 4 * torch.rand(n, generator=generator, dtype=torch.float64) - 2
        row = torch.randint(0, 2, (n,), generator=generator).to(torch.float64)
        y = torch.rand(n, generator=generator, dtype=torch.float64) - 2 * row + torch.floor(x) % 2
        return torch.stack([x, y], dim=1)

    def _density(self) -> ToyDensity:
        corners = [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]
        return UnionOfSquares(torch.tensor(corners, dtype=torch.float64), 1.0)


class NoisyCirclesToy(Toy):
    r"""Concentric circles with uniform angle, convolved with isotropic Gaussian noise.

    .. math:: x = r_k(\cos\theta, \sin\theta) + \sigma\varepsilon,\quad k \sim w,\
              \theta \sim U[0, 2\pi)

    Its density has the closed form of :class:`~pushforward.data.densities.NoisyCircles`.

    Args:
        name: registry name.
        description: one line for listings.
        radii: circle radii.
        weights: mixture weights over the circles.
        scale: noise standard deviation.
    """

    def __init__(
        self,
        name: str,
        description: str,
        radii: tuple[float, ...],
        weights: tuple[float, ...],
        scale: float,
    ) -> None:
        self.name = name
        self.description = description
        self.radii = radii
        self.weights = tuple(w / sum(weights) for w in weights)
        self.scale = scale

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        radius = torch.tensor(self.radii, dtype=torch.float64)[
            mixture_components(n, self.weights, generator)
        ]
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        circle = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return circle + self.scale * _randn(n, generator)

    def _density(self) -> ToyDensity:
        return NoisyCircles(self.radii, self.weights, self.scale)


class NoisyCurveToy(Toy):
    r"""Points on one or more curves :math:`c_k(t)`, plus isotropic Gaussian noise.

    .. math:: x = c_k(t) + \sigma\varepsilon,\quad k \sim w,\ t \sim q,\
              \varepsilon \sim \mathcal N(0, I)

    Subclasses give the curve, the latent density :math:`q` on ``interval`` and
    its quantile function (for sampling by inversion). The density is the 1-D
    integral over :math:`t`, by quadrature (see
    :func:`~pushforward.data.densities.noisy_curve_mixture`).
    """

    scale: float
    branch_weights: tuple[float, ...]
    interval: tuple[float, float]

    @abstractmethod
    def position(self, branch: int, t: Tensor) -> Tensor:
        """The point ``(m, 2)`` of curve ``branch`` at latent ``t: (m,)``."""

    @abstractmethod
    def latent_quantile(self, u: Tensor) -> Tensor:
        """The quantile function of :math:`q`: maps ``u ~ U(0, 1)`` to ``t ~ q``."""

    @abstractmethod
    def latent_log_density(self, t: Tensor) -> Tensor:
        r""":math:`\log q(t)` on ``interval``."""

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        branch = mixture_components(n, self.branch_weights, generator)
        t = self.latent_quantile(torch.rand(n, generator=generator, dtype=torch.float64))
        points = torch.empty(n, 2, dtype=torch.float64)
        for k in range(len(self.branch_weights)):
            chosen = branch == k
            points[chosen] = self.position(k, t[chosen])
        return points + self.scale * _randn(n, generator)

    def quadrature_density(self, panel_length: float, order: int = 8) -> IsotropicGaussianMixture:
        """The density by a quadrature with panels of at most ``panel_length`` arc length."""
        return noisy_curve_mixture(
            self.position,
            self.latent_log_density,
            self.interval,
            self.branch_weights,
            self.scale,
            panel_length,
            order,
        )

    def _density(self) -> ToyDensity:
        return self.quadrature_density(2 * self.scale)


def _polar(radius: Tensor, angle: Tensor) -> Tensor:
    return radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


class Moons(NoisyCurveToy):
    r"""Two interleaving half circles (scikit-learn's ``make_moons``), scaled by 2.

    With :math:`\theta \sim U[0, \pi]`, the upper moon is
    :math:`2((\cos\theta, \sin\theta) - (\tfrac12, \tfrac14))`, the lower one
    :math:`2((1 - \cos\theta, \tfrac12 - \sin\theta) - (\tfrac12, \tfrac14))`,
    each with probability 1/2, plus Gaussian noise of sd 0.2.
    """

    name = "moons"
    description = "two interleaving half circles + noise (sd 0.2); density by 1-D quadrature"
    scale = 0.2
    branch_weights = (0.5, 0.5)
    interval = (0.0, math.pi)

    def position(self, branch: int, t: Tensor) -> Tensor:
        circle = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
        if branch == 1:
            circle = torch.tensor([1.0, 0.5], dtype=t.dtype) - circle
        return 2 * (circle - torch.tensor([0.5, 0.25], dtype=t.dtype))

    def latent_quantile(self, u: Tensor) -> Tensor:
        return math.pi * u

    def latent_log_density(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -math.log(math.pi))


class SwissRoll(NoisyCurveToy):
    r"""The 2-D swiss roll: :math:`(t\cos t, t\sin t)/5`, :math:`t \sim U[1.5\pi, 4.5\pi]`.

    As in FFJORD (scikit-learn's ``make_swiss_roll`` with noise 1, divided by 5),
    so the Gaussian noise has sd 0.2.
    """

    name = "swissroll"
    description = "spiral (t cos t, t sin t)/5 + noise (sd 0.2); density by 1-D quadrature"
    scale = 0.2
    branch_weights = (1.0,)
    interval = (1.5 * math.pi, 4.5 * math.pi)

    def position(self, branch: int, t: Tensor) -> Tensor:
        return _polar(t / 5, t)

    def latent_quantile(self, u: Tensor) -> Tensor:
        return 1.5 * math.pi * (1 + 2 * u)

    def latent_log_density(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -math.log(3 * math.pi))


class TwoSpirals(NoisyCurveToy):
    r"""Two interleaved Archimedean spirals :math:`\pm(t\cos t, t\sin t)/3`.

    :math:`t = 3\pi\sqrt u`, :math:`u \sim U[0, 1]`, so :math:`q(t) =
    2t/(3\pi)^2` on :math:`[0, 3\pi]` (uniform mass per unit area of the disc the
    spirals sweep); each spiral has probability 1/2; noise sd 0.1.
    """

    name = "2spirals"
    description = "two interleaved spirals + noise (sd 0.1); density by 1-D quadrature"
    scale = 0.1
    branch_weights = (0.5, 0.5)
    interval = (0.0, 3 * math.pi)

    def position(self, branch: int, t: Tensor) -> Tensor:
        sign = 1.0 if branch == 0 else -1.0
        return sign * _polar(t / 3, t)

    def latent_quantile(self, u: Tensor) -> Tensor:
        return 3 * math.pi * torch.sqrt(u)

    def latent_log_density(self, t: Tensor) -> Tensor:
        # q(0) = 0: clamp before the log so the node at t = 0 (never used) is -inf, not NaN.
        return torch.log(t.clamp(min=0)) + math.log(2 / (3 * math.pi) ** 2)


class Pinwheel(NoisyCurveToy):
    r"""Five curved arms: :math:`2s(\cos\varphi_k(s), \sin\varphi_k(s))`, plus noise.

    .. math:: \varphi_k(s) = \frac{2\pi k}{5} + \frac14 e^{s}, \quad
              s \sim \mathcal N(1, 0.3^2) \text{ truncated to } [1 - 4(0.3), 1 + 4(0.3)]

    FFJORD's pinwheel with its tangential noise replaced by isotropic noise of
    sd 0.2 (twice its 0.1, as FFJORD scales by 2) and the radial latent
    truncated at 4 standard deviations (6e-5 of the mass), so that the density
    is a 1-D integral over a bounded interval.
    """

    name = "pinwheel"
    description = "5 curved arms + noise (sd 0.2); density by 1-D quadrature"
    scale = 0.2
    arms = 5
    branch_weights = (0.2, 0.2, 0.2, 0.2, 0.2)
    mean, sd, rate = 1.0, 0.3, 0.25
    interval = (1.0 - 4 * 0.3, 1.0 + 4 * 0.3)

    def position(self, branch: int, t: Tensor) -> Tensor:
        angle = 2 * math.pi * branch / self.arms + self.rate * torch.exp(t)
        return _polar(2 * t, angle)

    def _standard_bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        low, high = self.interval
        bounds = torch.tensor([low, high], dtype=like.dtype, device=like.device)
        cdf = torch.special.ndtr((bounds - self.mean) / self.sd)
        return cdf[0], cdf[1]

    def latent_quantile(self, u: Tensor) -> Tensor:
        low, high = self._standard_bounds(u)
        return self.mean + self.sd * torch.special.ndtri(low + u * (high - low))

    def latent_log_density(self, t: Tensor) -> Tensor:
        low, high = self._standard_bounds(t)
        z = (t - self.mean) / self.sd
        log_normaliser = math.log(self.sd * math.sqrt(2 * math.pi)) + torch.log(high - low)
        return -0.5 * z.square() - log_normaliser


def _toys() -> dict[str, Toy]:
    toys: list[Toy] = [
        Moons(),
        NoisyCirclesToy(
            "circles",
            "circles of radius 1 and 2 + noise (sd 0.1); closed-form density",
            (1.0, 2.0),
            (0.5, 0.5),
            0.1,
        ),
        EightGaussians(),
        Checkerboard(),
        Pinwheel(),
        SwissRoll(),
        TwoSpirals(),
        NoisyCirclesToy(
            "rings",
            "circles of radius 0.75, 1.5, 2.25, 3 + noise (sd 0.08); closed-form density",
            (0.75, 1.5, 2.25, 3.0),
            (0.25, 0.25, 0.25, 0.25),
            0.08,
        ),
    ]
    return {toy.name: toy for toy in toys}


TOYS: dict[str, Toy] = _toys()
"""The built-in toys by name."""


def get_toy(name: str) -> Toy:
    """The built-in toy called ``name``.

    Raises:
        ValueError: for an unknown name, with the closest valid names and the full list.
    """
    if name not in TOYS:
        names = sorted(TOYS)
        raise ValueError(
            f"unknown toy dataset {name!r}{closest(name, names)}; valid toys: {', '.join(names)}"
        )
    return TOYS[name]


def sample_toy(name: str, n: int, seed: int = 0) -> Tensor:
    """``n`` samples ``(n, 2)`` (float64) of the named toy, reproducible from ``seed``."""
    return get_toy(name).sample(n, seed)
