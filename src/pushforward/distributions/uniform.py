"""The uniform distribution on an axis-aligned box."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pushforward.distributions.base import Distribution


class BoxUniform(Distribution):
    r"""The uniform distribution on the box :math:`\prod_i [a_i, b_i]`.

    .. math::
        \log p(z) = -\sum_i \log(b_i - a_i) \text{ if } a \le z \le b,
        \quad -\infty \text{ otherwise.}

    The bounds are buffers, so they move with ``.to`` / ``.double()`` and are
    saved in the ``state_dict``; they are not learned.

    Args:
        event_shape: shape of one event, e.g. ``(features,)``.
        low: lower bound, a float (every dimension) or a nested sequence of
            shape ``event_shape``.
        high: upper bound, same forms as ``low``; must exceed ``low`` everywhere.
    """

    low: Tensor
    high: Tensor

    def __init__(
        self,
        event_shape: tuple[int, ...],
        low: float | Sequence = -1.0,
        high: float | Sequence = 1.0,
    ) -> None:
        super().__init__(event_shape)
        dtype = torch.get_default_dtype()  # what the anchor and every parameter start in
        low_t = torch.as_tensor(low, dtype=dtype).expand(self.event_shape).clone()
        high_t = torch.as_tensor(high, dtype=dtype).expand(self.event_shape).clone()
        if not bool((high_t > low_t).all()):
            raise ValueError("BoxUniform needs high > low in every dimension")
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    @property
    def dtype(self) -> torch.dtype:
        return self.low.dtype

    @property
    def device(self) -> torch.device:
        return self.low.device

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each event.

        Args:
            z: ``(batch, *event_shape)``.

        Returns:
            ``(batch,)``: ``-log(volume)`` inside the closed box, ``-inf`` outside
            (never NaN, so a flow's out-of-support points are simply impossible).
        """
        inside = ((z >= self.low) & (z <= self.high)).reshape(z.shape[0], -1).all(dim=1)
        log_volume = torch.log(self.high - self.low).sum()
        value = -log_volume.expand(z.shape[0])
        return torch.where(inside, value, torch.full_like(value, -torch.inf))

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``low + (high - low) * u``, ``u ~ U[0, 1)``: ``(n, *event_shape)``."""
        unit = torch.rand(
            (n, *self.event_shape), dtype=self.dtype, device=self.device, generator=generator
        )
        return self.low + (self.high - self.low) * unit

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}"
