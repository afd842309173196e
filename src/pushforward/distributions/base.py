"""The base-distribution contract: modules whose dtype and device follow their buffers."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Distribution(nn.Module):
    """A distribution over events of shape ``event_shape``, as a module.

    Being a module, a base distribution moves with its flow (``.to``,
    ``.double()``) and its learnable parameters train with the flow's.

    Subclasses implement ``log_prob(z) -> (batch,)`` and ``rsample(n) -> (n, *event_shape)``.
    """

    event_shape: tuple[int, ...]
    _anchor: torch.Tensor

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(int(d) for d in event_shape)
        # A zero-size anchor carries the dtype and device for parameter-free distributions.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``n`` reparameterised samples; ``generator`` replaces the global
        random generator where the distribution supports it (parameter-free ones do)."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``n`` samples without tracking gradients."""
        with torch.no_grad():
            return self.rsample(n, generator)

    def _no_generator(self, generator: torch.Generator | None) -> None:
        if generator is not None:
            raise ValueError(f"{type(self).__name__} cannot draw from a given generator")
