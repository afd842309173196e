"""Random Fourier features of a network's input (Tancik et al. 2020)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierFeatures(nn.Module):
    r"""The input and sines and cosines of fixed random projections of it,

    .. math:: \gamma(x) = \bigl(x,\ \sin(2\pi B^\top x),\ \cos(2\pi B^\top x)\bigr),
              \qquad B_{ij} \sim \mathcal N(0, \sigma^2),

    so that an MLP behind it can represent functions that vary on the scale
    :math:`1 / \sigma` of its input (a plain MLP is biased towards slowly varying ones):
    sharply concentrated densities, such as events clustered along faults and rivers.
    ``B`` is drawn once, from torch's global generator (a run seeds it), and is saved
    with the weights as a buffer, never trained.

    Reference: Tancik et al. (2020), 'Fourier Features Let Networks Learn High Frequency
    Functions in Low Dimensional Domains'.

    Args:
        features: input columns.
        frequencies: columns of ``B`` (the output has ``features + 2 * frequencies``).
        scale: the standard deviation :math:`\sigma` of ``B``'s entries, in cycles per
            unit of the input.

    Example:
        >>> layer = FourierFeatures(3, frequencies=8, scale=4.0)
        >>> layer(torch.zeros(5, 3)).shape
        torch.Size([5, 19])
    """

    projection: Tensor

    def __init__(self, features: int, frequencies: int, scale: float) -> None:
        super().__init__()
        if frequencies < 1 or not math.isfinite(scale) or scale <= 0:
            raise ValueError(
                f"Fourier features need frequencies >= 1 and a positive scale, "
                f"got {frequencies} and {scale}"
            )
        self.in_features = features
        self.out_features = features + 2 * frequencies
        self.register_buffer("projection", scale * torch.randn(features, frequencies))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., features + 2 * frequencies)`` from ``x: (..., features)``."""
        angles = (2 * math.pi) * (x @ self.projection.to(x.dtype))
        return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)
