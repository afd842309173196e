"""A velocity field on a box whose normal component vanishes at the faces."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def face_weight(x: Tensor, low: Tensor, high: Tensor) -> Tensor:
    r"""The weight :math:`g_i(x) = 4 (x_i - a_i)(b_i - x_i) / (b_i - a_i)^2`: 1 at the
    middle of each side, 0 on its faces, and negative only outside the box.

    Args:
        x: ``(batch, *event)`` points.
        low, high: ``event``-shaped bounds :math:`a, b`.
    """
    width = high - low
    return 4.0 * (x - low) * (high - x) / (width * width)


class FaceTangentVelocity(nn.Module):
    r"""A velocity network made tangent to the faces of a box:
    :math:`v(x) = g(x) \odot f_\theta(x, t, c)` with :math:`g` the :func:`face_weight`.

    Each component :math:`v_i` vanishes on the faces :math:`x_i = a_i, b_i`, so the flow
    of :math:`v` maps the box onto itself: no probability crosses a face, and the
    change of variables of the flow's density is exact on the box. The exact marginal
    field of linear paths between points of the box is tangent to its faces too, so
    nothing the regression needs is lost; near a face the network fits the field's
    normal slope instead of its value.

    Args:
        network: ``network(x, t, context) -> like x``, the free field :math:`f_\theta`.
        low, high: the box's bounds, ``event``-shaped (buffers: they follow the dtype).
    """

    low: Tensor
    high: Tensor

    def __init__(
        self, network: nn.Module, low: Tensor | Sequence[float], high: Tensor | Sequence[float]
    ) -> None:
        super().__init__()
        self.network = network
        dtype = torch.get_default_dtype()
        self.register_buffer("low", torch.as_tensor(low, dtype=dtype).clone())
        self.register_buffer("high", torch.as_tensor(high, dtype=dtype).clone())

    def forward(self, x: Tensor, t: Tensor | float, context: Tensor | None = None) -> Tensor:
        """``(batch, *event)``: the weighted field at ``x``."""
        return face_weight(x, self.low, self.high) * self.network(x, t, context)
