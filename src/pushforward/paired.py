"""Source and data points paired row by row: what the training engine hands a model that
learns from a coupling (flow matching, reflow, distillation).

It lives apart from the couplings that make such pairs (``pushforward.matching.couplings``)
so that the training engine, which batches fixed pairs given to ``fit(..., source=...)``,
needs nothing from ``matching/``. It imports only torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class PairedBatch:
    """Source and data points paired row by row.

    Attributes:
        x0: ``(batch, *event)`` source points; ``x0[i]`` is paired with ``x1[i]``.
        x1: ``(batch, *event)`` data points, in the order they were given.
        context: ``(batch, ...)`` context rows aligned with ``x1``, or ``None``.
    """

    x0: Tensor
    x1: Tensor
    context: Tensor | None
