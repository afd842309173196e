"""Regression losses of flow matching: squared error and pseudo-Huber, row by row, and the
weightings of the rows by their training times."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from pushforward.matching.components import Component, make_component
from pushforward.matching.time_sampling import TimeSampler

LOSSES: tuple[str, ...] = ("mse", "pseudo-huber")
"""Regression losses: squared error, or the pseudo-Huber loss of Song & Dhariwal (2024)."""


def row_regression_loss(error: Tensor, kind: str) -> Tensor:
    r"""The regression loss of each row of residuals, averaged over its entries.

    ``mse`` is :math:`\lVert e \rVert^2 / d`; ``pseudo-huber`` is
    :math:`(\sqrt{\lVert e \rVert^2 + c^2} - c) / d`, quadratic for small and
    linear for large residuals, with :math:`c = 0.00054 \sqrt{d}` for
    :math:`d`-dimensional data as Lee et al. (2024) pick it.

    References: Song & Dhariwal (2024), Improved Techniques for Training
    Consistency Models; Lee et al. (2024), Improving the Training of Rectified Flows.

    Args:
        error: ``(batch, d)`` residuals :math:`e`.
        kind: ``"mse"`` or ``"pseudo-huber"``.

    Returns:
        ``(batch,)``.
    """
    if kind == "mse":
        return error.square().mean(dim=1)
    c = 0.00054 * math.sqrt(error.shape[1])
    return (torch.sqrt(error.square().sum(dim=1) + c * c) - c) / error.shape[1]


class LossWeighting(Component, ABC):
    r"""A weight :math:`w(t)` on each row's loss by its training time.

    Called as ``weighting(per_row, t, sampler)`` on the ``(batch,)`` row losses, the
    rows' times ``t: (batch,)`` and the time sampler that drew them; returns the
    weighted ``(batch,)`` losses. Rebuilt exactly by
    ``make_loss_weighting(weighting.name, **weighting.options())``.

    Attributes:
        reweights: whether it changes the row losses at all (a model may then skip
            computing them row by row).
    """

    reweights: ClassVar[bool]

    @abstractmethod
    def __call__(self, per_row: Tensor, t: Tensor, sampler: TimeSampler) -> Tensor:
        """The weighted row losses ``(batch,)``."""


class NoWeighting(LossWeighting):
    r"""Every row weighs the same, :math:`w(t) = 1`: the objective is the expectation under
    the time sampler's distribution.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling.
    """

    name = "none"
    reweights = False

    def __call__(self, per_row: Tensor, t: Tensor, sampler: TimeSampler) -> Tensor:
        return per_row


class UniformTimeWeighting(LossWeighting):
    r"""Importance weights back to uniform times, :math:`w(t) = 1 / p(t)`.

    .. math:: \mathbb E_{t \sim p}\big[\ell(t) / p(t)\big] = \int_0^1 \ell(t)\, dt,

    so a non-uniform time sampler changes the variance of the loss estimate but
    not the objective.

    References:
        Esser et al. (2024), Scaling Rectified Flow Transformers for
        High-Resolution Image Synthesis.
    """

    name = "uniform-time"
    reweights = True

    def __call__(self, per_row: Tensor, t: Tensor, sampler: TimeSampler) -> Tensor:
        return per_row / sampler.density(t)


LOSS_WEIGHTINGS: dict[str, type[LossWeighting]] = {
    NoWeighting.name: NoWeighting,
    UniformTimeWeighting.name: UniformTimeWeighting,
}
"""Loss weighting classes by name."""


def make_loss_weighting(name: str, **options: Any) -> LossWeighting:
    """Builds the loss weighting registered as ``name`` (``none`` or ``uniform-time``).

    Unknown names or options raise a ValueError listing the valid ones.
    """
    return make_component("loss weighting", LOSS_WEIGHTINGS, name, options)
