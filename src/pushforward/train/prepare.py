"""Batch preparation ahead of the training step, in background threads (``Model.prepare_batch``)."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from pushforward.model import Model

_MIX = 1_000_003
#: The most preparation threads :func:`default_prepare_workers` picks.
MAX_DEFAULT_WORKERS = 8


def default_prepare_workers(device: torch.device) -> int:
    """Preparation threads for a run on ``device``: the cores training leaves free.

    On CUDA the training step barely uses the CPU, so every core but one; on the
    CPU the cores beyond torch's intra-op threads. At least 1, at most
    :data:`MAX_DEFAULT_WORKERS`.
    """
    cores = os.cpu_count() or 1
    busy = 1 if device.type == "cuda" else torch.get_num_threads()
    return max(1, min(MAX_DEFAULT_WORKERS, cores - busy))


class PrepareAhead:
    """Calls ``model.prepare_batch`` for the next steps while this one trains.

    A model prepares work that reads no parameter (a minibatch optimal-transport
    assignment, say); done in other threads it overlaps the training step
    (scipy's assignment and torch's kernels release the GIL). With ``workers``
    threads, the batches of up to ``workers`` coming steps are in preparation at
    once, so a preparation that takes ``k`` times as long as a step is hidden
    once ``workers >= k`` and as many cores are free. The seed of step ``k``
    depends only on the run's seed, ``k`` and the rank, so a run prepares the
    same batches whether it is resumed or not, and whatever ``workers`` is. A
    model whose ``prepare_batch`` returns ``None`` for the first batch starts no
    thread.

    Args:
        model: the model being trained (not its DDP wrapper).
        seed: the run's seed.
        rank: this process's rank.
        workers: preparation threads, and steps prepared ahead (at least 1).
    """

    def __init__(self, model: Model, seed: int, rank: int = 0, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.model = model
        self.seed = int(seed)
        self.rank = int(rank)
        self.workers = workers
        self.enabled: bool | None = None  # unknown until the first batch
        self.executor: ThreadPoolExecutor | None = None
        self.pending: dict[int, Future[Any]] = {}

    def seed_for(self, step: int) -> int:
        """The seed of step ``step``'s preparation (a non-negative 63-bit int)."""
        return ((self.seed * _MIX + step) * _MIX + self.rank) % (2**63)

    def current(self, step: int, x: Tensor, context: Tensor | None) -> Any:
        """The preparation of step ``step``'s batch: the one made ahead, or made now."""
        if self.enabled is False:
            return None
        future = self.pending.pop(step, None)
        if future is not None:
            return future.result()
        prepared = self.model.prepare_batch(x, context, self.seed_for(step))
        if self.enabled is None:
            self.enabled = prepared is not None
        return prepared

    def wants(self, step: int) -> bool:
        """Whether :meth:`ahead` would start preparing step ``step`` now."""
        return bool(self.enabled) and step not in self.pending and len(self.pending) < self.workers

    def ahead(self, step: int, x: Tensor, context: Tensor | None) -> None:
        """Starts preparing step ``step``'s batch in the background (if :meth:`wants` it)."""
        if not self.wants(step):
            return
        if self.executor is None:
            self.executor = ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="prepare"
            )
        future = self.executor.submit(self.model.prepare_batch, x, context, self.seed_for(step))
        self.pending[step] = future

    def close(self) -> None:
        """Waits for running preparations, drops queued ones and stops the threads."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        self.pending = {}
