"""What a computation holds for its backward pass: the bytes autograd saves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SavedBytes:
    """The running total of :func:`saved_tensor_bytes` (``total`` bytes in ``count`` tensors)."""

    total: int = 0
    count: int = 0


@contextmanager
def saved_tensor_bytes() -> Iterator[SavedBytes]:
    """Counts the bytes of every tensor autograd saves for the backward pass inside the block.

    The memory a backward pass needs beyond the parameters is what the forward pass
    saved for it (activations, intermediate states of an ODE solve); this counts it
    on any device, without a profiler, through
    :func:`torch.autograd.graph.saved_tensors_hooks`. A tensor saved twice counts
    twice (an upper bound on the memory held, exact when every saved tensor is new).

    Example:
        >>> import torch
        >>> w = torch.ones(3, requires_grad=True)
        >>> with saved_tensor_bytes() as saved:
        ...     loss = (w * torch.arange(3.0)).sum()
        >>> saved.total  # w * a saves a (and w is a leaf needing no save): 3 float32
        12
    """
    record = SavedBytes()

    def pack(tensor: Tensor) -> Tensor:
        record.total += tensor.numel() * tensor.element_size()
        record.count += 1
        return tensor

    def unpack(tensor: Tensor) -> Tensor:
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield record


__all__ = ["SavedBytes", "saved_tensor_bytes"]
