"""The empirical distribution of stored rows: a source that is a data set, not a density."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from pushforward.distributions.base import Distribution


class Empirical(Distribution):
    r"""The empirical distribution of :math:`N` stored rows, drawn uniformly with replacement.

    .. math:: \hat p = \frac1N \sum_{j=1}^N \delta_{x_j}

    It is the source :math:`p_0` of a flow that transports one data set onto
    another (rectified flow between two empirical distributions): ``sample``
    returns stored rows, each with probability :math:`1/N`. A sum of point masses
    has no density, so ``log_prob`` raises ``NotImplementedError`` and
    :attr:`has_density` is ``False`` (a flow with this source has no
    likelihood either).

    The rows are a buffer: they move with ``.to``/``.double()`` and are saved in
    the ``state_dict``, so a saved model brings its source with it.
    :meth:`zeros` makes a placeholder of the right shape that ``load_state_dict``
    (or :meth:`assign_rows`) fills.

    References:
        Liu et al. (2023), Flow Straight and Fast: Learning to Generate and
        Transfer Data with Rectified Flow.

    Args:
        rows: ``(N, *event_shape)`` finite floating values, ``N >= 1``.
    """

    has_density: ClassVar[bool] = False
    #: Stored data, not weights: the EMA of training leaves them out.
    constant_buffers: ClassVar[tuple[str, ...]] = ("rows",)
    rows: Tensor

    def __init__(self, rows: Tensor) -> None:
        rows = _checked_rows(rows)
        super().__init__(tuple(rows.shape[1:]))
        self.register_buffer("rows", rows.detach().clone())

    @classmethod
    def zeros(
        cls, count: int, event_shape: Sequence[int], dtype: torch.dtype | None = None
    ) -> Empirical:
        """A placeholder of ``count`` zero rows of shape ``event_shape``, to be filled.

        Args:
            count: number of rows ``N >= 1``.
            event_shape: shape of one row.
            dtype: floating dtype of the rows (default: torch's default dtype).

        Returns:
            An :class:`Empirical` whose rows are all zero.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"an empirical distribution needs at least one row, got {count!r}")
        shape = tuple(int(d) for d in event_shape)
        return cls(torch.zeros((count, *shape), dtype=dtype))

    @property
    def dtype(self) -> torch.dtype:
        return self.rows.dtype

    @property
    def device(self) -> torch.device:
        return self.rows.device

    @property
    def count(self) -> int:
        """The number of stored rows ``N``."""
        return int(self.rows.shape[0])

    def assign_rows(self, values: Tensor) -> None:
        """Replaces the stored rows in place by ``values`` (same count and event shape).

        Args:
            values: ``(N, *event_shape)`` finite values; cast to the rows' dtype and device.
        """
        values = _checked_rows(values)
        if tuple(values.shape) != tuple(self.rows.shape):
            raise ValueError(
                f"the empirical source holds {self.count} rows of shape {self.event_shape}; "
                f"got values of shape {tuple(values.shape)}"
            )
        with torch.no_grad():
            self.rows.copy_(values)

    def log_prob(self, z: Tensor) -> Tensor:
        """Not defined: a sum of point masses has no density; raises ``NotImplementedError``."""
        raise NotImplementedError(
            f"an empirical distribution ({self.count} stored rows) has no density, "
            "so log_prob is undefined"
        )

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``n`` stored rows uniformly with replacement.

        Args:
            n: number of draws.
            generator: random generator on the rows' device (default: the global one).

        Returns:
            ``(n, *event_shape)``; no gradient flows to the rows (they are data).
        """
        index = torch.randint(self.count, (n,), generator=generator, device=self.device)
        return self.rows[index]


def _checked_rows(rows: Tensor) -> Tensor:
    """``rows`` checked to be a finite floating tensor ``(N >= 1, *event)``."""
    if not isinstance(rows, Tensor):
        raise TypeError(f"expected the source rows as a torch.Tensor, got {type(rows).__name__}")
    if not rows.is_floating_point():
        raise TypeError(f"the source rows must be floating-point, got dtype {rows.dtype}")
    if rows.ndim < 2 or rows.shape[0] == 0 or math.prod(rows.shape[1:]) == 0:
        raise ValueError(
            f"the source rows have shape {tuple(rows.shape)}; "
            "expected (rows, *event_shape) with at least one row and one value per row"
        )
    if not bool(torch.isfinite(rows).all()):
        raise ValueError("the source rows contain NaN or Inf values")
    return rows
