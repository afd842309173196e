"""Minibatches: the aligned rows the engine batches, and their epoch-wise random order
drawn from a seeded generator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.paired import PairedBatch


class EpochBatches:
    """Yields index batches of a fixed size, each epoch a fresh random permutation.

    Every example is seen once per epoch; the last incomplete batch of an epoch
    is dropped so all batches have the same size (the loss scale stays the same
    from step to step). The generator is a CPU ``torch.Generator`` seeded with
    ``seed``, so the order is the same on every machine and every rank.

    For an exact resume the state is the generator state *before* the current
    epoch's permutation and the position in it: restoring redraws the same
    permutation and leaves the generator where it was.

    Args:
        size: number of examples.
        batch_size: examples per batch (at most ``size``).
        seed: the generator's seed.
    """

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        if batch_size > size:
            raise ValueError(f"batch_size {batch_size} exceeds the {size} training examples")
        self.size = size
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_start: Tensor | None = None
        self.permutation: Tensor | None = None
        self.position = 0
        self.epoch = 0

    def next(self) -> Tensor:
        """The next batch of indices, shape ``(batch_size,)``, int64 on CPU."""
        if self.permutation is None or self.position + self.batch_size > self.size:
            if self.permutation is not None:
                self.epoch += 1
            self.epoch_start = self.generator.get_state()
            self.permutation = torch.randperm(self.size, generator=self.generator)
            self.position = 0
        batch = self.permutation[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def upcoming(self, count: int) -> list[Tensor]:
        """The next ``count`` batches :meth:`next` will return, without moving the order on.

        Across an epoch boundary the next permutation is drawn from a copy of the
        generator, exactly as :meth:`next` will draw it.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        batches: list[Tensor] = []
        permutation, position = self.permutation, self.position
        generator: torch.Generator | None = None
        while len(batches) < count:
            if permutation is None or position + self.batch_size > self.size:
                if generator is None:
                    generator = torch.Generator().manual_seed(0)
                    generator.set_state(self.generator.get_state())
                permutation = torch.randperm(self.size, generator=generator)
                position = 0
            batches.append(permutation[position : position + self.batch_size])
            position += self.batch_size
        return batches

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """``(json_part, tensors)`` describing where the order stands."""
        json_part = {"position": self.position, "epoch": self.epoch, "started": self.started}
        tensors = {} if self.epoch_start is None else {"batches_epoch_start": self.epoch_start}
        return json_part, tensors

    @property
    def started(self) -> bool:
        return self.permutation is not None

    def restore(self, json_part: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state`."""
        self.epoch = int(json_part["epoch"])
        if not json_part["started"]:
            return
        self.epoch_start = tensors["batches_epoch_start"]
        self.generator.set_state(self.epoch_start)
        self.permutation = torch.randperm(self.size, generator=self.generator)
        self.position = int(json_part["position"])


@dataclass(frozen=True)
class Rows:
    """Aligned rows the engine batches together: data, context and fixed source points."""

    x: Tensor
    context: Tensor | None = None
    source: Tensor | None = None

    def take(self, index: Tensor) -> Rows:
        """The rows at ``index`` of every part."""
        index = index.to(self.x.device)
        return Rows(
            self.x[index],
            None if self.context is None else self.context[index],
            None if self.source is None else self.source[index],
        )

    def between(self, begin: int, end: int) -> Rows:
        """Rows ``begin`` to ``end`` (views)."""
        return Rows(
            self.x[begin:end],
            None if self.context is None else self.context[begin:end],
            None if self.source is None else self.source[begin:end],
        )

    def pairs(self) -> PairedBatch | None:
        """The rows as fixed (source, data) pairs, or ``None`` without a source."""
        if self.source is None:
            return None
        return PairedBatch(self.source, self.x, self.context)
