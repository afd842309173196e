"""Schedulers: the coefficients alpha_t, sigma_t of affine probability paths and their derivatives.

Convention throughout ``pushforward.matching``: ``t = 0`` is the source (noise),
``t = 1`` the data, and the path is :math:`x_t = \\alpha_t x_1 + \\sigma_t x_0`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from pushforward.matching.components import Component, make_component


@dataclass
class SchedulerCoefficients:
    r"""The coefficients of an affine path at times ``t``, each shaped like ``t``.

    :math:`x_t = \alpha_t x_1 + \sigma_t x_0` and
    :math:`\dot x_t = \dot\alpha_t x_1 + \dot\sigma_t x_0`.

    Attributes:
        alpha: :math:`\alpha_t`, the weight of the data.
        sigma: :math:`\sigma_t`, the weight of the source.
        d_alpha: :math:`d\alpha_t / dt`.
        d_sigma: :math:`d\sigma_t / dt`.
    """

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor

    def broadcast_like(self, x: Tensor) -> SchedulerCoefficients:
        """The coefficients reshaped to broadcast against ``x: (batch, *event)``.

        Coefficients of shape ``(batch,)`` gain trailing singleton dimensions;
        coefficients that already have ``x.ndim`` dimensions (or none) are kept.

        Args:
            x: ``(batch, *event)``.

        Returns:
            coefficients of shape ``(batch, 1, ..., 1)`` (or unchanged).
        """
        values = {}
        for field in fields(self):
            value: Tensor = getattr(self, field.name)
            if 0 < value.ndim < x.ndim:
                value = value.reshape(value.shape + (1,) * (x.ndim - value.ndim))
            values[field.name] = value
        return SchedulerCoefficients(**values)


class Scheduler(Component, ABC):
    r"""The coefficients :math:`(\alpha_t, \sigma_t)` of an affine probability path.

    A scheduler holds no tensors and no learnable state: it is rebuilt exactly by
    ``make_scheduler(scheduler.name, **scheduler.options())``. Calling it on times
    ``t`` (any shape, values in ``[0, 1]``) returns :class:`SchedulerCoefficients`
    of the same shape, dtype and device.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling.
    """

    name: ClassVar[str]

    @abstractmethod
    def __call__(self, t: Tensor) -> SchedulerCoefficients:
        """The coefficients at times ``t`` (any shape); each result is shaped like ``t``."""

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """The plain (JSON-ready) keyword options that rebuild this scheduler."""


def _check_times(t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"times t must be a tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"times t must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"option {name!r} must be a finite number, got {value!r}")
    return float(value)


def _singular_margin(t: Tensor) -> float:
    """How far inside [0, 1] a derivative that is infinite at an end is evaluated.

    1e-5 in float32 and float64; wider for half precision, where 1 - 1e-5 rounds to 1.
    """
    return max(1e-5, 4.0 * torch.finfo(t.dtype).eps)


class CondOTScheduler(Scheduler):
    r"""The conditional optimal-transport (linear) path, also called rectified flow.

    .. math:: \alpha_t = t, \quad \sigma_t = 1 - (1 - \sigma_{\min}) t,
              \quad \dot\alpha_t = 1, \quad \dot\sigma_t = -(1 - \sigma_{\min}).

    With :math:`\sigma_{\min} = 0` the path is the straight line from
    :math:`x_0` to :math:`x_1` and its velocity is :math:`x_1 - x_0`.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling;
        Liu et al. (2023), Flow Straight and Fast: Learning to Generate and
        Transfer Data with Rectified Flow;
        Albergo & Vanden-Eijnden (2023), Building Normalizing Flows with
        Stochastic Interpolants.

    Args:
        sigma_min: the noise scale left at ``t = 1``, in ``[0, 1)``.
    """

    name: ClassVar[str] = "cond-ot"

    def __init__(self, sigma_min: float = 0.0) -> None:
        sigma_min = _number("sigma_min", sigma_min)
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"option 'sigma_min' must be in [0, 1), got {sigma_min}")
        self.sigma_min = sigma_min

    def __call__(self, t: Tensor) -> SchedulerCoefficients:
        """The coefficients at times ``t`` (any shape); each result is shaped like ``t``."""
        t = _check_times(t)
        slope = 1.0 - self.sigma_min
        return SchedulerCoefficients(
            alpha=t,
            sigma=1.0 - slope * t,
            d_alpha=torch.ones_like(t),
            d_sigma=torch.full_like(t, -slope),
        )

    def options(self) -> dict[str, Any]:
        """``{"sigma_min": ...}``."""
        return {"sigma_min": self.sigma_min}


class CosineScheduler(Scheduler):
    r"""The cosine path: a quarter circle from source to data.

    .. math:: \alpha_t = \sin(\tfrac{\pi}{2} t), \quad \sigma_t = \cos(\tfrac{\pi}{2} t),
              \quad \dot\alpha_t = \tfrac{\pi}{2}\cos(\tfrac{\pi}{2} t),
              \quad \dot\sigma_t = -\tfrac{\pi}{2}\sin(\tfrac{\pi}{2} t).

    :math:`\alpha_t^2 + \sigma_t^2 = 1`, so the path preserves the variance of
    unit-variance data and noise.

    References:
        Nichol & Dhariwal (2021), Improved Denoising Diffusion Probabilistic Models;
        Albergo & Vanden-Eijnden (2023), Building Normalizing Flows with
        Stochastic Interpolants.
    """

    name: ClassVar[str] = "cosine"

    def __call__(self, t: Tensor) -> SchedulerCoefficients:
        """The coefficients at times ``t`` (any shape); each result is shaped like ``t``."""
        t = _check_times(t)
        half_pi = math.pi / 2
        # cos(pi/2 t) written as sin(pi/2 (1 - t)) so that sigma_1 is exactly 0
        # (float cos(pi/2) is 6e-17, not 0).
        sine = torch.sin(half_pi * t)
        cosine = torch.sin(half_pi * (1.0 - t))
        return SchedulerCoefficients(
            alpha=sine,
            sigma=cosine,
            d_alpha=half_pi * cosine,
            d_sigma=-half_pi * sine,
        )

    def options(self) -> dict[str, Any]:
        """``{}``: the cosine path has no options."""
        return {}


class VPScheduler(Scheduler):
    r"""The variance-preserving path of score SDEs, with time reversed so ``t = 1`` is data.

    With :math:`s = 1 - t` and
    :math:`T(s) = \beta_{\min} s + \tfrac12 (\beta_{\max} - \beta_{\min}) s^2`:

    .. math:: \alpha_t = e^{-T(1-t)/2}, \quad \sigma_t = \sqrt{1 - \alpha_t^2},
              \quad \dot\alpha_t = \tfrac12 T'(1-t)\,\alpha_t,
              \quad \dot\sigma_t = -\alpha_t \dot\alpha_t / \sigma_t,

    with :math:`T'(s) = \beta_{\min} + (\beta_{\max} - \beta_{\min}) s`.

    The source end is only approximately pure noise: :math:`\alpha_0 =
    e^{-(\beta_{\min} + \beta_{\max})/4}` (0.0066 for the defaults). At the data
    end :math:`\sigma_t \approx \sqrt{\beta_{\min}(1 - t)}`, so
    :math:`\dot\sigma_t \to -\infty` as :math:`t \to 1`; ``d_sigma`` is evaluated
    at ``min(t, 1 - 1e-5)`` to stay finite (only there; ``alpha``, ``sigma`` and
    ``d_alpha`` use ``t`` itself).

    References:
        Song et al. (2021), Score-Based Generative Modeling through Stochastic
        Differential Equations;
        Lipman et al. (2023), Flow Matching for Generative Modeling.

    Args:
        beta_min: :math:`\beta_{\min} > 0`, the noise rate at the data end.
        beta_max: :math:`\beta_{\max} \ge \beta_{\min}`, the noise rate at the source end.
    """

    name: ClassVar[str] = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        beta_min = _number("beta_min", beta_min)
        beta_max = _number("beta_max", beta_max)
        if beta_min <= 0.0:
            raise ValueError(f"option 'beta_min' must be positive, got {beta_min}")
        if beta_max < beta_min:
            raise ValueError(
                f"option 'beta_max' ({beta_max}) must be at least 'beta_min' ({beta_min})"
            )
        self.beta_min = beta_min
        self.beta_max = beta_max

    def _integrated_rate(self, s: Tensor) -> Tensor:
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s

    def _rate(self, s: Tensor) -> Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * s

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = 1.0 - t
        integrated = self._integrated_rate(s)
        alpha = torch.exp(-0.5 * integrated)
        # 1 - exp(-T) through expm1: near t = 1 the subtraction would cancel to 0.
        sigma = torch.sqrt(-torch.expm1(-integrated))
        d_alpha = 0.5 * self._rate(s) * alpha
        return alpha, sigma, d_alpha

    def __call__(self, t: Tensor) -> SchedulerCoefficients:
        """The coefficients at times ``t`` (any shape); each result is shaped like ``t``."""
        t = _check_times(t)
        alpha, sigma, d_alpha = self._alpha_sigma(t)
        # d_sigma = -alpha d_alpha / sigma is infinite at t = 1 (sigma = 0): read it just
        # inside the interval. The clamp comes before the division so no inf is formed.
        inner = t.clamp(max=1.0 - _singular_margin(t))
        alpha_in, sigma_in, d_alpha_in = self._alpha_sigma(inner)
        d_sigma = -alpha_in * d_alpha_in / sigma_in
        return SchedulerCoefficients(alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma)

    def options(self) -> dict[str, Any]:
        """``{"beta_min": ..., "beta_max": ...}``."""
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}


class PolynomialScheduler(Scheduler):
    r"""A polynomial convex path: the data weight grows as a power of time.

    .. math:: \alpha_t = t^n, \quad \sigma_t = 1 - t^n,
              \quad \dot\alpha_t = n t^{n-1}, \quad \dot\sigma_t = -n t^{n-1}.

    ``exponent = 1`` is the linear path. For ``exponent < 1`` the derivatives are
    infinite at ``t = 0``; they are then evaluated at ``max(t, 1e-5)``.

    References:
        Lipman et al. (2024), Flow Matching Guide and Code;
        Lipman et al. (2023), Flow Matching for Generative Modeling.

    Args:
        exponent: :math:`n > 0`.
    """

    name: ClassVar[str] = "polynomial"

    def __init__(self, exponent: float = 2.0) -> None:
        exponent = _number("exponent", exponent)
        if exponent <= 0.0:
            raise ValueError(f"option 'exponent' must be positive, got {exponent}")
        self.exponent = exponent

    def __call__(self, t: Tensor) -> SchedulerCoefficients:
        """The coefficients at times ``t`` (any shape); each result is shaped like ``t``."""
        t = _check_times(t)
        n = self.exponent
        alpha = t.pow(n)
        # t^(n-1) is infinite at t = 0 when n < 1: clamp first, only then.
        inner = t.clamp(min=_singular_margin(t)) if n < 1.0 else t
        d_alpha = n * inner.pow(n - 1.0)
        return SchedulerCoefficients(
            alpha=alpha, sigma=1.0 - alpha, d_alpha=d_alpha, d_sigma=-d_alpha
        )

    def options(self) -> dict[str, Any]:
        """``{"exponent": ...}``."""
        return {"exponent": self.exponent}


SCHEDULERS: dict[str, type[Scheduler]] = {
    CondOTScheduler.name: CondOTScheduler,
    "linear": CondOTScheduler,
    CosineScheduler.name: CosineScheduler,
    VPScheduler.name: VPScheduler,
    PolynomialScheduler.name: PolynomialScheduler,
}
"""Scheduler classes by name; ``"linear"`` is an alias of ``"cond-ot"``."""


def make_scheduler(name: str, **options: Any) -> Scheduler:
    """Builds the scheduler registered as ``name`` with keyword ``options``.

    Args:
        name: one of :data:`SCHEDULERS` (``cond-ot``/``linear``, ``cosine``, ``vp``,
            ``polynomial``).
        **options: the scheduler's keyword options, e.g. ``sigma_min=0.01``.

    Returns:
        the scheduler; unknown names or options raise a ValueError listing the valid ones.
    """
    return make_component("scheduler", SCHEDULERS, name, options)
