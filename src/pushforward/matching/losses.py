"""Regression losses of flow matching: squared error and pseudo-Huber, row by row."""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOSSES: tuple[str, ...] = ("mse", "pseudo-huber")
"""Regression losses: squared error, or the pseudo-Huber loss of Song & Dhariwal (2024)."""

LOSS_WEIGHTINGS: tuple[str, ...] = ("none", "uniform-time")
"""``uniform-time`` divides by the time density, so a non-uniform time sampler
changes the variance of the loss estimate but not the objective."""


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
