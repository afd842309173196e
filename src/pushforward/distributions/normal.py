"""Gaussian base distributions: the standard normal and a learnable diagonal normal."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pushforward.distributions.base import Distribution


class StandardNormal(Distribution):
    r"""The standard normal :math:`\mathcal N(0, I)` over ``event_shape``.

    .. math:: \log p(z) = -\tfrac12 \lVert z \rVert^2 - \tfrac D2 \log 2\pi
    """

    def log_prob(self, z: Tensor) -> Tensor:
        z = z.reshape(z.shape[0], -1)
        return -0.5 * z.square().sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(
            (n, *self.event_shape), dtype=self.dtype, device=self.device, generator=generator
        )


class DiagonalNormal(Distribution):
    r"""A normal with learnable mean and per-dimension scale, :math:`\mathcal N(\mu, \sigma^2 I)`.

    The scale is stored as its logarithm so it stays positive under gradient steps.

    .. math:: \log p(z) = \sum_i \left[-\tfrac12 ((z_i - \mu_i)/\sigma_i)^2 - \log \sigma_i
              - \tfrac12 \log 2\pi\right]
    """

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    @property
    def dtype(self) -> torch.dtype:
        return self.loc.dtype

    @property
    def device(self) -> torch.device:
        return self.loc.device

    def log_prob(self, z: Tensor) -> Tensor:
        standardized = (z - self.loc) * torch.exp(-self.log_scale)
        per_element = -0.5 * standardized.square() - self.log_scale - 0.5 * math.log(2 * math.pi)
        return per_element.reshape(z.shape[0], -1).sum(dim=1)

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(
            (n, *self.event_shape), dtype=self.dtype, device=self.device, generator=generator
        )
        return self.loc + noise * torch.exp(self.log_scale)
