"""Batch preparation one step ahead, in a background thread (``Model.prepare_batch``)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from torch import Tensor

from pushforward.model import Model

_MIX = 1_000_003


class PrepareAhead:
    """Calls ``model.prepare_batch`` for step ``k + 1`` while step ``k`` trains.

    A model prepares work that reads no parameter (a minibatch optimal-transport
    assignment, say); done in a second thread it overlaps the training step
    (scipy's assignment and torch's kernels release the GIL). The seed of step
    ``k`` depends only on the run's seed, ``k`` and the rank, so a run prepares
    the same batches whether it is resumed or not. A model whose
    ``prepare_batch`` returns ``None`` for the first batch starts no thread.

    Args:
        model: the model being trained (not its DDP wrapper).
        seed: the run's seed.
        rank: this process's rank.
    """

    def __init__(self, model: Model, seed: int, rank: int = 0) -> None:
        self.model = model
        self.seed = int(seed)
        self.rank = int(rank)
        self.enabled: bool | None = None  # unknown until the first batch
        self.executor: ThreadPoolExecutor | None = None
        self.pending: tuple[int, Future[Any]] | None = None

    def seed_for(self, step: int) -> int:
        """The seed of step ``step``'s preparation (a non-negative 63-bit int)."""
        return ((self.seed * _MIX + step) * _MIX + self.rank) % (2**63)

    def current(self, step: int, x: Tensor, context: Tensor | None) -> Any:
        """The preparation of step ``step``'s batch: the one made ahead, or made now."""
        if self.enabled is False:
            return None
        if self.pending is not None and self.pending[0] == step:
            prepared = self.pending[1].result()
            self.pending = None
            return prepared
        prepared = self.model.prepare_batch(x, context, self.seed_for(step))
        if self.enabled is None:
            self.enabled = prepared is not None
        return prepared

    def ahead(self, step: int, x: Tensor, context: Tensor | None) -> None:
        """Starts preparing step ``step``'s batch in the background."""
        if not self.enabled:
            return
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        future = self.executor.submit(self.model.prepare_batch, x, context, self.seed_for(step))
        self.pending = (step, future)

    def close(self) -> None:
        """Waits for a running preparation and stops the thread."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        self.pending = None
