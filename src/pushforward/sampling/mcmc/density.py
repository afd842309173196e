"""The density a kernel samples: a target in the data's units, evaluations counted."""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from pushforward.sampling.target import Target, checked_log_prob


class DataLogDensity:
    r"""The target's unnormalized :math:`\log \tilde p(x)` in the data's own coordinates.

    Every kernel reaches the target through one of these, so ``evaluations``
    counts the rows the target was asked about (a gradient evaluation counts as
    one). Rows that are not finite (a diverging trajectory) get ``-inf``
    without being shown to the target.

    Args:
        target: the unnormalized target.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.evaluations = 0

    def log_prob(self, x: Tensor) -> Tensor:
        """``(batch,)`` :math:`\\log \\tilde p(x)` of ``x: (batch, d)``, differentiable in ``x``."""
        finite = torch.isfinite(x).all(dim=-1)
        # Replace non-finite rows before the call: the target never sees them.
        safe = torch.where(finite.unsqueeze(-1), x, torch.zeros_like(x))
        self.evaluations += int(x.shape[0])
        values = checked_log_prob(self.target, safe)
        return torch.where(finite, values, torch.full_like(values, -math.inf))

    def to_position(self, x: Tensor) -> Tensor:
        """The kernel's coordinates of data points: the data themselves."""
        return x

    def to_data(self, position: Tensor) -> Tensor:
        """Data points of the kernel's coordinates: the coordinates themselves."""
        return position


class LogDensity(Protocol):
    """What a gradient-based kernel needs of a density: ``log_prob`` and the map to the data."""

    def log_prob(self, position: Tensor) -> Tensor: ...

    def to_position(self, x: Tensor) -> Tensor: ...

    def to_data(self, position: Tensor) -> Tensor: ...


def log_prob_and_gradient(density: LogDensity, position: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(batch,)`` log-density and ``(batch, d)`` its gradient by autograd.

    Where the log-density is ``-inf`` or the gradient is not finite, the gradient
    is set to zero: such a point is rejected anyway, and a zero keeps the
    leapfrog or Langevin update that reads it finite.
    """
    with torch.enable_grad():
        point = position.detach().requires_grad_(True)
        values = density.log_prob(point)
        # Rows at -inf add nothing to the sum, so they cannot poison the others' gradients.
        summed = torch.where(torch.isfinite(values), values, torch.zeros_like(values)).sum()
        (gradient,) = torch.autograd.grad(summed, point, allow_unused=True)
    if gradient is None:
        gradient = torch.zeros_like(point)
    usable = torch.isfinite(gradient).all(dim=-1) & torch.isfinite(values)
    values = torch.where(usable, values.detach(), torch.full_like(values, -math.inf))
    gradient = torch.where(usable.unsqueeze(-1), gradient, torch.zeros_like(gradient))
    return values, gradient.detach()
