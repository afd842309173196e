"""Moving averages of weights: the one update the engine's EMA and target networks share."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


@torch.no_grad()
def move_toward(averages: Iterable[Tensor], values: Iterable[Tensor], weight: float) -> None:
    r"""One step of an exponential moving average, in place: for each pair,
    :math:`\bar\theta \leftarrow \bar\theta + w\,(\theta - \bar\theta)` on floating
    tensors (``lerp_``), and a copy of integer ones (masks, orders, counters).

    Used by :class:`~pushforward.train.ema.EMA` (Polyak averaging of the trained
    weights) and :class:`~pushforward.fewstep.target.TargetNetwork` (the target of a
    consistency loss), so both average the same way.

    Args:
        averages: the running averages, updated in place.
        values: the current values, one per average (same shapes).
        weight: :math:`w = 1 - \text{decay}`, in ``[0, 1]``.
    """
    for average, value in zip(averages, values, strict=True):
        if average.is_floating_point():
            average.lerp_(value.detach(), weight)
        else:
            average.copy_(value)
