"""Data-parallel training with PyTorch's DistributedDataParallel (launched by torchrun)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.model import Model


@dataclass(frozen=True)
class Placement:
    """Where this process stands in a (possibly distributed) run.

    Attributes:
        rank: this process's rank (0 when not distributed).
        world_size: the number of processes (1 when not distributed).
    """

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        """Whether gradients are averaged across processes."""
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes files (only rank 0 does)."""
        return self.rank == 0


def placement(distributed: bool | None = None) -> Placement:
    """The current placement: distributed when ``torch.distributed`` is initialised.

    Args:
        distributed: ``None`` to follow ``torch.distributed``; ``False`` to train
            alone even inside a process group; ``True`` to require a group.
    """
    available = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and not available:
        raise ValueError(
            "distributed=True but torch.distributed is not initialised; launch with torchrun "
            "and call torch.distributed.init_process_group first"
        )
    if distributed is False or not available:
        return Placement()
    return Placement(torch.distributed.get_rank(), torch.distributed.get_world_size())


class LossModule(nn.Module):
    """Wraps a model so its ``loss`` is its ``forward``, which is what DDP hooks into.

    DistributedDataParallel averages gradients only for computations that go
    through the wrapped module's ``forward``.
    """

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, context: Tensor | None = None, prepared: Any = None) -> Tensor:
        # The engine checked and preprocessed the data set once: the model's own units.
        return self.model.loss_preprocessed(x, context, prepared)


def loss_function(model: Model, where: Placement) -> nn.Module:
    """A module computing ``model.loss``: plain, or inside DDP when distributed.

    DDP broadcasts rank 0's parameters and buffers when it is built, so every
    rank starts from the same weights.
    """
    wrapper = LossModule(model)
    if not where.distributed:
        return wrapper
    reference = next(model.parameters())
    device_ids = [reference.device] if reference.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(wrapper, device_ids=device_ids)


def all_reduce_mean(values: Tensor, where: Placement) -> Tensor:
    """The mean of ``values`` over ranks (the tensor itself when not distributed)."""
    if not where.distributed:
        return values
    values = values.clone()
    torch.distributed.all_reduce(values)
    return values / where.world_size
