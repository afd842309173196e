"""Distributions of the training times t in [0, 1] of a flow-matching loss, as small objects."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from pushforward.matching.components import Component, make_component


def _parameter(kind: str, key: str, value: object, *, positive: bool = False) -> float:
    """A sampler's parameter as a finite float (and positive when asked), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(
            f"parameter {key!r} of time sampler {kind!r} must be a finite number, got {value!r}"
        )
    if positive and value <= 0:
        raise ValueError(f"parameter {key!r} of {kind!r} must be positive, got {value!r}")
    return float(value)


def _check_times(t: object) -> Tensor:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise TypeError("times t must be a floating-point tensor")
    return t


class TimeSampler(Component, ABC):
    r"""A distribution of training times :math:`t \in [0, 1]` with a density.

    ``sample(n, like, generator)`` draws ``n`` times in ``like``'s dtype and device;
    ``density(t)`` is 0 outside ``[0, 1]`` and integrates to 1 over it. Rebuilt
    exactly by ``make_time_sampler(sampler.name, **sampler.options())``.
    """

    def sample(self, n: int, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``n`` times ``(n,)`` in ``[0, 1]``, in ``like``'s dtype and device.

        Args:
            n: number of times.
            like: a tensor whose floating dtype and device the times take.
            generator: random generator (on ``like``'s device).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"the number of times n must be a non-negative integer, got {n!r}")
        return self._draw(n, like.dtype, like.device, generator)

    @abstractmethod
    def _draw(
        self, n: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        """``n`` times, the count already checked."""

    def density(self, t: Tensor) -> Tensor:
        """The density at times ``t`` (any shape, floating point), shaped like ``t``."""
        t = _check_times(t)
        inside = (t >= 0) & (t <= 1)
        return torch.where(inside, self._density(t), torch.zeros_like(t))

    @abstractmethod
    def _density(self, t: Tensor) -> Tensor:
        """The density inside ``[0, 1]`` (values outside are discarded)."""


class UniformTime(TimeSampler):
    r"""Uniform training times, :math:`t \sim U[0, 1]`, :math:`p(t) = 1`.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling.
    """

    name = "uniform"

    def _draw(
        self, n: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        return torch.rand(n, generator=generator, dtype=dtype, device=device)

    def _density(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


class LogitNormalTime(TimeSampler):
    r"""Logit-normal training times, more weight on intermediate times.

    .. math:: t = \mathrm{sigmoid}(m + s z), \quad z \sim N(0, 1), \qquad
              p(t) = \frac{1}{s\sqrt{2\pi}\, t (1 - t)}
              \exp\!\Big(-\frac{(\mathrm{logit}\, t - m)^2}{2 s^2}\Big),

    0 at the ends.

    References:
        Esser et al. (2024), Scaling Rectified Flow Transformers for
        High-Resolution Image Synthesis.

    Args:
        location: :math:`m`.
        scale: :math:`s`, positive.
    """

    name = "logit-normal"

    def __init__(self, location: float = 0.0, scale: float = 1.0) -> None:
        self.location = _parameter(self.name, "location", location)
        self.scale = _parameter(self.name, "scale", scale, positive=True)

    def _draw(
        self, n: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        z = torch.randn(n, generator=generator, dtype=dtype, device=device)
        return torch.sigmoid(self.location + self.scale * z)

    def _density(self, t: Tensor) -> Tensor:
        m, s = self.location, self.scale
        # logit and 1/(t(1-t)) are infinite at the ends, where the density is 0:
        # clamp first so the discarded branch forms no inf or NaN (nor its gradient).
        open_interval = (t > 0) & (t < 1)
        safe = torch.where(open_interval, t, torch.full_like(t, 0.5))
        logit = torch.log(safe) - torch.log1p(-safe)
        log_density = (
            -0.5 * ((logit - m) / s) ** 2
            - math.log(s * math.sqrt(2 * math.pi))
            - torch.log(safe)
            - torch.log1p(-safe)
        )
        return torch.where(open_interval, torch.exp(log_density), torch.zeros_like(t))

    def options(self) -> dict[str, Any]:
        """``{"location": ..., "scale": ...}``."""
        return {"location": self.location, "scale": self.scale}


class UShapedTime(TimeSampler):
    r"""U-shaped training times, more weight near both ends.

    .. math:: p(t) = \frac{a \cosh(a (t - 1/2))}{2 \sinh(a / 2)},

    the mixture :math:`\tfrac12 (q(t) + q(1 - t))` of the truncated exponential
    :math:`q(t) \propto e^{a t}` used by the paper's code; sampled by the
    closed-form inverse CDF
    :math:`t = \tfrac12 + \mathrm{asinh}((2u - 1) \sinh(a/2)) / a`, :math:`u \sim U[0, 1]`.
    (That code draws each time with its mirror :math:`1 - t` in one batch and
    squeezes times into :math:`[10^{-5}, 1 - 10^{-5}]`; here draws are
    independent and the marginal is the same.)

    References:
        Lee et al. (2024), Improving the Training of Rectified Flows.

    Args:
        a: the concentration :math:`a`, positive.
    """

    name = "u-shaped"

    def __init__(self, a: float = 4.0) -> None:
        self.a = _parameter(self.name, "a", a, positive=True)

    def _draw(
        self, n: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        u = torch.rand(n, generator=generator, dtype=dtype, device=device)
        a = self.a
        t = 0.5 + torch.asinh((2.0 * u - 1.0) * math.sinh(a / 2)) / a
        # asinh(sinh(a/2)) / a can round a hair past 1/2; the support is [0, 1].
        return t.clamp(0.0, 1.0)

    def _density(self, t: Tensor) -> Tensor:
        a = self.a
        return a * torch.cosh(a * (t - 0.5)) / (2.0 * math.sinh(a / 2))

    def options(self) -> dict[str, Any]:
        """``{"a": ...}``."""
        return {"a": self.a}


class PowerTime(TimeSampler):
    r"""Training times weighted towards the data by a power law.

    .. math:: p(t) = (1 + \alpha)\, t^\alpha, \qquad t \in [0, 1]

    .. math:: t = u^{1/(1 + \alpha)}, \quad u \sim U[0, 1]

    (:math:`t = 1` is the data). :math:`\alpha = 0` is uniform; a larger
    :math:`\alpha` spends more of the loss near the data, where a posterior's
    narrow structure is resolved. Flow matching posterior estimation uses it.

    References:
        Wildberger et al. (2023), Flow Matching for Scalable Simulation-Based
        Inference (the time prior :math:`p_\alpha(t) \propto t^{1/(1+\alpha)}` of
        their samples, whose density is the one above).

    Args:
        exponent: :math:`\alpha \ge 0`.
    """

    name = "power"

    def __init__(self, exponent: float = 4.0) -> None:
        value = _parameter(self.name, "exponent", exponent)
        if value < 0:
            raise ValueError(f"parameter 'exponent' of 'power' must be >= 0, got {exponent!r}")
        self.exponent = value

    def _draw(
        self, n: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        u = torch.rand(n, generator=generator, dtype=dtype, device=device)
        return u.pow(1.0 / (1.0 + self.exponent))

    def _density(self, t: Tensor) -> Tensor:
        # Clamped above 0: t^alpha has an infinite slope there for alpha < 1.
        return (1.0 + self.exponent) * t.clamp(min=torch.finfo(t.dtype).tiny).pow(self.exponent)

    def options(self) -> dict[str, Any]:
        """``{"exponent": ...}``."""
        return {"exponent": self.exponent}


TIME_SAMPLERS: dict[str, type[TimeSampler]] = {
    UniformTime.name: UniformTime,
    LogitNormalTime.name: LogitNormalTime,
    UShapedTime.name: UShapedTime,
    PowerTime.name: PowerTime,
}
"""Time sampler classes by name."""


def make_time_sampler(name: str, **options: Any) -> TimeSampler:
    """Builds the time sampler registered as ``name`` with keyword ``options``.

    Args:
        name: one of :data:`TIME_SAMPLERS` (``uniform``, ``logit-normal``, ``u-shaped``,
            ``power``).
        **options: the sampler's parameters, e.g. ``scale=0.7`` for ``logit-normal``.

    Returns:
        the sampler; unknown names or options raise a ValueError listing the valid ones.
    """
    return make_component("time sampler", TIME_SAMPLERS, name, options)


def sample_times(
    n: int,
    kind: str = "uniform",
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    generator: torch.Generator | None = None,
    **params: float,
) -> Tensor:
    """Draws ``n`` training times in ``[0, 1]`` from the sampler ``kind`` with ``params``.

    The functional form of ``make_time_sampler(kind, **params).sample(...)``; see
    :class:`UniformTime`, :class:`LogitNormalTime` and :class:`UShapedTime`.

    Args:
        n: number of times.
        kind: one of :data:`TIME_SAMPLERS`.
        dtype: floating dtype of the result.
        device: device of the result.
        generator: random generator (on ``device``).
        **params: the sampler's parameters.

    Returns:
        ``(n,)`` times in ``[0, 1]``.
    """
    sampler = make_time_sampler(kind, **params)
    return sampler.sample(n, torch.empty(0, dtype=dtype, device=device), generator)


def time_density(t: Tensor, kind: str, **params: float) -> Tensor:
    """The density of the time sampler ``kind`` with ``params`` at ``t`` (shaped like ``t``).

    The functional form of ``make_time_sampler(kind, **params).density(t)``.
    """
    return make_time_sampler(kind, **params).density(t)
