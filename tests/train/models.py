"""Small models for training-engine tests."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import pushforward
from pushforward.model import Model


def small_flow(seed: int = 0) -> Model:
    """A two-layer MAF on 2-D data, built deterministically."""
    torch.manual_seed(seed)
    return pushforward.build("maf", features=2, transforms=2, hidden=[16])


def toy_data(n: int = 512, seed: int = 0) -> Tensor:
    """Correlated 2-D Gaussian data."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=generator)
    return torch.stack([z[:, 0], 0.8 * z[:, 0] + 0.6 * z[:, 1]], dim=1) * 2.0 + 1.0


class Scalar(Model):
    """One parameter ``theta``; the loss is ``mean((theta - x)^2)`` over 1-D data."""

    event_shape = (1,)
    context_features = 0

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([start]))

    def _loss(self, x: Tensor, context: Tensor | None, prepared: object = None) -> Tensor:
        return ((self.theta - x) ** 2).mean()


class Faulty(Model):
    """Wraps a flow; the loss (or its gradient) is NaN at chosen calls of ``loss``."""

    def __init__(self, inner: Model, nan_loss_at: set[int], nan_grad_at: set[int] = frozenset()):
        super().__init__()
        self.inner = inner
        self.event_shape = inner.event_shape
        self.context_features = inner.context_features
        self.nan_loss_at = set(nan_loss_at)
        self.nan_grad_at = set(nan_grad_at)
        self.calls = 0

    def _loss(self, x: Tensor, context: Tensor | None, prepared: object = None) -> Tensor:
        self.calls += 1
        loss = self.inner.loss(x, context)
        if self.calls in self.nan_loss_at:
            return loss * math.nan
        if self.calls in self.nan_grad_at:
            # Finite value, infinite gradient: d sqrt(u)/du at u = 0.
            weight = next(self.inner.parameters()).flatten()[0]
            return loss + (weight - weight.detach()).sqrt()
        return loss


def state_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    """Whether two state dicts are bitwise identical."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Noisy(Model):
    """Wraps a flow; the loss sees Gaussian-jittered data, so it draws from torch's RNG."""

    def __init__(self, inner: Model) -> None:
        super().__init__()
        self.inner = inner
        self.event_shape = inner.event_shape
        self.context_features = inner.context_features

    def _loss(self, x: Tensor, context: Tensor | None, prepared: object = None) -> Tensor:
        return self.inner.loss(x + 0.1 * torch.randn_like(x), context)
