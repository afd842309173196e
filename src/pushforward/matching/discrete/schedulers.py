r"""Convex schedulers :math:`\kappa_t` of discrete mixture paths, and their derivatives.

A mixture path puts each position of a sequence at its data token with
probability :math:`\kappa_t` and at its source token otherwise,

.. math:: p_t(x^i \mid x_0, x_1)
          = (1 - \kappa_t)\, \delta_{x_0^i}(x^i) + \kappa_t\, \delta_{x_1^i}(x^i),

with :math:`\kappa_0 = 0`, :math:`\kappa_1 = 1` and :math:`\kappa` non-decreasing. The
convention is the continuous one: ``t = 0`` is the source, ``t = 1`` the data.

References: Gat et al. (2024), Discrete Flow Matching; Campbell et al. (2024),
Generative Flows on Discrete State-Spaces.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from pushforward.matching.components import Component, make_component
from pushforward.options import positive_float


class KappaScheduler(Component, ABC):
    r"""The weight :math:`\kappa_t` of the data in a mixture path, a function of time.

    Subclasses give :math:`\kappa_t` and :math:`\dot\kappa_t`; both take and return
    tensors shaped like ``t`` (any shape, in its dtype and device).
    """

    @abstractmethod
    def kappa(self, t: Tensor) -> Tensor:
        r""":math:`\kappa_t`, from 0 at ``t = 0`` to 1 at ``t = 1``."""

    @abstractmethod
    def d_kappa(self, t: Tensor) -> Tensor:
        r""":math:`d\kappa_t / dt \ge 0`."""

    @abstractmethod
    def time(self, kappa: Tensor) -> Tensor:
        r"""The inverse :math:`t(\kappa)`: the time at which the weight reaches ``kappa``."""

    def jump_coefficient(self, t: Tensor) -> Tensor:
        r"""The rate factor :math:`\dot\kappa_t / (1 - \kappa_t)` of the mixture path's
        velocity (infinite at ``t = 1``; callers stop short of it)."""
        return self.d_kappa(t) / (1.0 - self.kappa(t))


class PolynomialKappa(KappaScheduler):
    r""":math:`\kappa_t = t^n` (``n = 1``: the linear scheduler).

    References: Gat et al. (2024), Discrete Flow Matching (their polynomial
    schedulers, with :math:`n = 2` for code).

    Args:
        exponent: :math:`n > 0`.
    """

    name: ClassVar[str] = "polynomial"

    def __init__(self, exponent: float = 1.0) -> None:
        self.exponent = positive_float("exponent", exponent)

    def options(self) -> dict[str, Any]:
        return {"exponent": self.exponent}

    def kappa(self, t: Tensor) -> Tensor:
        return t.pow(self.exponent)

    def d_kappa(self, t: Tensor) -> Tensor:
        if self.exponent == 1.0:
            return torch.ones_like(t)
        return self.exponent * t.pow(self.exponent - 1.0)

    def time(self, kappa: Tensor) -> Tensor:
        return kappa.clamp(0.0, 1.0).pow(1.0 / self.exponent)


class CosineKappa(KappaScheduler):
    r""":math:`\kappa_t = \sin^2(\pi t / 2)`, slow at both ends.

    References: Gat et al. (2024), Discrete Flow Matching; Nichol & Dhariwal (2021),
    Improved Denoising Diffusion Probabilistic Models (the cosine schedule).
    """

    name: ClassVar[str] = "cosine"

    def kappa(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t).square()

    def d_kappa(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.sin(math.pi * t)

    def time(self, kappa: Tensor) -> Tensor:
        return torch.asin(kappa.clamp(0.0, 1.0).sqrt()) * (2.0 / math.pi)


class LinearKappa(PolynomialKappa):
    r""":math:`\kappa_t = t`, the polynomial scheduler of degree one.

    References: Campbell et al. (2024), Generative Flows on Discrete State-Spaces
    (the linear interpolation they use throughout).
    """

    name: ClassVar[str] = "linear"

    def __init__(self) -> None:
        super().__init__(1.0)

    def options(self) -> dict[str, Any]:
        return {}


KAPPA_SCHEDULERS: dict[str, type[KappaScheduler]] = {
    cls.name: cls for cls in (LinearKappa, PolynomialKappa, CosineKappa)
}
"""The mixture-path schedulers by name."""


def make_kappa_scheduler(name: str, **options: Any) -> KappaScheduler:
    """The scheduler ``name`` of :data:`KAPPA_SCHEDULERS` with keyword ``options``.

    An unknown name or option is a ValueError listing the valid ones (did-you-mean).
    """
    return make_component("scheduler", KAPPA_SCHEDULERS, name, options)
