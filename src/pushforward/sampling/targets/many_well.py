"""FAB's many-well target (``many-well-32``): independent copies of a 2-D double well.

The 1-D double well :math:`e^{-E(x)}`, :math:`E(x) = a x + b x^2 + c x^4`, has no
closed-form normaliser; here it is integrated by composite Gauss--Legendre
quadrature in float64 (exact to rounding) and sampled exactly by rejection from a
piecewise-constant envelope that provably bounds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from pushforward.data.densities import gauss_legendre_panels
from pushforward.data.toys import check_sample_count
from pushforward.options import positive_int
from pushforward.sampling.target import Target
from pushforward.sampling.targets.points import check_points

# Below e^-800 of the peak a density's mass does not register in float64 (e^-745
# is the smallest positive double), so the support is cut there.
_NEGLIGIBLE_LOG = 800.0
_ENVELOPE_CELLS = 4096
_QUADRATURE_PANELS = 400
_QUADRATURE_ORDER = 16

Array = TypeVar("Array", Tensor, np.ndarray)


@dataclass(frozen=True)
class DoubleWell:
    r"""The 1-D double well :math:`\tilde p(x) = e^{-E(x)}`, :math:`E(x) = a x + b x^2 + c x^4`.

    Its maths in float64: the energy and its derivative, the interval outside which
    the mass is below :math:`e^{-800}` of the peak, :math:`\log Z`, the mass left
    of 0, and exact samples.

    Args:
        a, b, c: the coefficients; ``c > 0`` so the density is normalisable.
    """

    a: float = -0.5
    b: float = -6.0
    c: float = 1.0

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"option {name!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"option {name!r} must be finite, got {value!r}")
        if not self.c > 0:
            raise ValueError(f"option 'c' must be positive (a normalisable well), got {self.c!r}")

    def energy(self, x: Array) -> Array:
        """:math:`E(x) = a x + b x^2 + c x^4`, elementwise."""
        square = x * x
        # Factored so that far out (x^2 overflowing) it is +inf, never inf - inf = NaN.
        return self.a * x + square * (self.b + self.c * square)

    def slope(self, x: np.ndarray) -> np.ndarray:
        """:math:`E'(x) = a + 2 b x + 4 c x^3`, elementwise."""
        return self.a + 2 * self.b * x + 4 * self.c * x**3

    @cached_property
    def peak(self) -> float:
        r""":math:`\max_x -E(x)`, attained at a real root of :math:`E'`."""
        roots = np.roots([4 * self.c, 0.0, 2 * self.b, self.a])
        real = roots[np.abs(roots.imag) < 1e-9].real
        return float(np.max(-self.energy(real)))

    @cached_property
    def support(self) -> tuple[float, float]:
        """``(-L, L)`` outside which :math:`e^{-E}` is below :math:`e^{-800}` of its peak."""
        roots = np.roots([4 * self.c, 0.0, 2 * self.b, self.a])
        # Beyond every stationary point E only grows, so the first L past them with
        # both ends below the cut bounds the whole tail.
        width = float(np.max(np.abs(roots))) + 1.0
        while max(-self.energy(np.array([-width, width]))) - self.peak > -_NEGLIGIBLE_LOG:
            width *= 1.5
        return -width, width

    def _quadrature(self) -> tuple[np.ndarray, np.ndarray]:
        low, high = self.support
        half = _QUADRATURE_PANELS // 2
        # 0 is a panel boundary so that the mass left of 0 is a sum over whole panels.
        breaks = np.concatenate(
            [np.linspace(low, 0.0, half + 1), np.linspace(0.0, high, half + 1)[1:]]
        )
        return gauss_legendre_panels(breaks, _QUADRATURE_ORDER)

    @cached_property
    def log_z(self) -> float:
        r""":math:`\log \int e^{-E(x)} dx` by composite Gauss--Legendre quadrature."""
        nodes, weights = self._quadrature()
        return self.peak + math.log(
            float(np.sum(weights * np.exp(-self.energy(nodes) - self.peak)))
        )

    @cached_property
    def left_mass(self) -> float:
        r""":math:`P(x < 0) = Z^{-1} \int_{-\infty}^0 e^{-E(x)} dx`."""
        nodes, weights = self._quadrature()
        mass = weights * np.exp(-self.energy(nodes) - self.peak)
        return float(np.sum(mass[nodes < 0]) / np.sum(mass))

    @cached_property
    def _envelope(self) -> tuple[Tensor, Tensor, float]:
        r"""Cell edges, log envelope per cell and the cell width of the rejection sampler.

        On a cell :math:`[t, t + h]` with :math:`M \ge \max |E'|` there, both
        :math:`-E(x) \le -E(t) + M(x - t)` and :math:`-E(x) \le -E(t + h) + M(t + h - x)`,
        so :math:`-E(x) \le \frac12(-E(t) - E(t + h) + M h)`: a constant bound per cell.
        :math:`|E'|` is a cubic's modulus, largest at a cell end or where :math:`E'' = 0`.
        """
        low, high = self.support
        edges = np.linspace(low, high, _ENVELOPE_CELLS + 1)
        left, right = edges[:-1], edges[1:]
        candidates = [left, right]
        if self.b < 0:
            inflection = math.sqrt(-self.b / (6 * self.c))
            candidates += [np.clip(point, left, right) for point in (-inflection, inflection)]
        bound = np.max(np.abs(np.stack([self.slope(point) for point in candidates])), axis=0)
        log_edges = -self.energy(edges) - self.peak
        width = (high - low) / _ENVELOPE_CELLS
        # The 1e-9 absorbs the rounding of E (about 1e-13 here) so the bound stays a bound.
        log_envelope = 0.5 * (log_edges[:-1] + log_edges[1:] + bound * width) + 1e-9
        return torch.from_numpy(edges), torch.from_numpy(log_envelope), width

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples ``(n,)`` in float64, by rejection from the cell envelope."""
        edges, log_envelope, width = self._envelope
        cumulative = torch.cumsum(torch.exp(log_envelope - log_envelope.max()), dim=0)
        cumulative = cumulative / cumulative[-1]
        accepted: list[Tensor] = []
        remaining = n
        while remaining > 0:
            # The envelope accepts over 90% of proposals; 10% extra usually ends in one round.
            proposals = int(1.1 * remaining) + 16
            uniforms = torch.rand(3, proposals, generator=generator, dtype=torch.float64)
            cell = torch.searchsorted(cumulative, uniforms[0]).clamp(max=_ENVELOPE_CELLS - 1)
            x = edges[cell] + width * uniforms[1]
            log_ratio = -self.energy(x) - self.peak - log_envelope[cell]
            keep = x[torch.log(uniforms[2]) < log_ratio][:remaining]
            accepted.append(keep)
            remaining -= keep.shape[0]
        return torch.cat(accepted) if accepted else torch.zeros(0, dtype=torch.float64)


class ManyWell(Target):
    r"""Independent copies of FAB's 2-D double well: a target with :math:`2^{w}` modes.

    .. math:: \log \tilde p(x) = \sum_{i=0}^{w-1} -\big(a x_{2i} + b x_{2i}^2 + c x_{2i}^4\big)
              - \tfrac12 x_{2i+1}^2, \qquad a = -\tfrac12,\ b = -6,\ c = 1

    Coordinates are paired as FAB pairs them, ``x[:, 2i:2i + 2]``: the even
    coordinate is the double well, the odd one a standard Gaussian factor.
    :math:`\log Z = w(\log Z_1 + \frac12 \log 2\pi)` with :math:`Z_1 = \int
    e^{-E(x)}dx = 11784.50927` (FAB's constant) by quadrature, so for the 32-D default
    (:math:`w = 16`) :math:`\log Z = 164.69568`. The linear term :math:`a = -1/2`
    tilts the wells: the right one (:math:`x_{2i} > 0`, near 1.7) is the deeper and
    holds 0.844307 of each pair's mass, the left one (near -1.7) 0.155693
    (:attr:`left_well_mass`). Samples are exact (:class:`DoubleWell`).

    References:
        Midgley et al. (2023), Flow Annealed Importance Sampling Bootstrap
        (``DoubleWellEnergy`` and ``ManyWellEnergy`` of lollcat/fab-torch); the
        double well is that of Noé et al. (2019), Boltzmann Generators.

    Args:
        wells: the number of pairs :math:`w` (16); the dimension is :math:`2w`.
        a, b, c: the double well's coefficients (-0.5, -6, 1), ``c > 0``.

    Example:
        >>> target = ManyWell()
        >>> target.features, round(target.log_z, 5), round(target.left_well_mass, 6)
        (32, 164.69568, 0.155693)
    """

    has_sample = True

    def __init__(self, wells: int = 16, a: float = -0.5, b: float = -6.0, c: float = 1.0) -> None:
        self.wells = positive_int("wells", wells)
        self.well = DoubleWell(a, b, c)
        self.features = 2 * self.wells
        self.name = f"many-well-{self.features}"
        self.log_z = self.wells * (self.well.log_z + 0.5 * math.log(2 * math.pi))

    @property
    def left_well_mass(self) -> float:
        """The exact fraction of each pair's mass with :math:`x_{2i} < 0` (0.155693 by default)."""
        return self.well.left_mass

    def left_well(self, x: Tensor) -> Tensor:
        """``(batch, wells)`` bool: the pairs of ``x`` in the left well (:math:`x_{2i} < 0`)."""
        check_points(x, self.features, self.name)
        return x[:, 0::2] < 0

    def log_prob(self, x: Tensor) -> Tensor:
        check_points(x, self.features, self.name)
        wells, gaussians = x[:, 0::2], x[:, 1::2]
        return -(self.well.energy(wells) + 0.5 * gaussians.square()).sum(dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_sample_count(n)
        wells = self.well.sample(n * self.wells, generator).reshape(n, self.wells)
        gaussians = torch.randn(n, self.wells, generator=generator, dtype=torch.float64)
        return torch.stack([wells, gaussians], dim=2).reshape(n, self.features)
