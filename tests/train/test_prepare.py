"""Batch preparation one step ahead: the same result as preparing in step, exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import pushforward
from pushforward.train import Callback, fit
from pushforward.train.batches import EpochBatches
from pushforward.train.prepare import PrepareAhead
from tests.train.models import small_flow, state_equal, toy_data


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int, logs: dict[str, Any]) -> bool:
        return step == self.step


def ot_model(seed: int = 0) -> pushforward.Model:
    torch.manual_seed(seed)
    return pushforward.build("fm", features=2, hidden=[16], time_embedding=4, coupling="ot")


OPTIONS: dict[str, Any] = {"steps": 40, "batch_size": 64, "lr": 3e-3, "seed": 3, "quiet": True}


def test_peek_is_the_next_batch() -> None:
    batches = EpochBatches(10, 4, seed=0)
    for _ in range(7):  # crosses epoch boundaries (two batches of 4 per epoch of 10)
        ahead = batches.peek()
        assert torch.equal(ahead, batches.next())


def test_prepared_ahead_equals_prepared_in_step() -> None:
    model = ot_model()
    x = torch.randn(32, 2)
    preparer = PrepareAhead(model, seed=5)
    now = preparer.current(0, x, None)
    assert now is not None
    preparer.ahead(1, x, None)
    later = preparer.current(1, x, None)
    preparer.close()
    direct = model.prepare_batch(x, None, preparer.seed_for(1))
    assert torch.equal(later.x0, direct.x0) and torch.equal(later.x1, direct.x1)
    # Different steps draw different source points.
    assert not torch.equal(now.x0, later.x0)
    # The coupling is a permutation of the source points that lowers the transport cost.
    assert torch.equal(later.x1, x)


def test_models_without_preparation_start_no_thread() -> None:
    preparer = PrepareAhead(small_flow(), seed=0)
    assert preparer.current(0, toy_data(8), None) is None
    preparer.ahead(1, toy_data(8), None)
    assert preparer.executor is None and preparer.enabled is False


def test_seeds_differ_by_step_and_rank() -> None:
    seeds = {
        PrepareAhead(small_flow(), 0, rank).seed_for(step) for step in range(50) for rank in (0, 1)
    }
    assert len(seeds) == 100


def test_resume_with_prepared_couplings_is_exact(tmp_path: Path) -> None:
    data = toy_data(400).float()
    straight = ot_model()
    fit(straight, data, checkpoint_dir=tmp_path / "a", checkpoint_every=10, **OPTIONS)
    first = ot_model()
    fit(
        first,
        data,
        checkpoint_dir=tmp_path / "b",
        checkpoint_every=10,
        callbacks=[StopAt(20)],
        **OPTIONS,
    )
    resumed = ot_model(seed=9)  # everything comes from the checkpoint
    fit(resumed, data, checkpoint_dir=tmp_path / "b", checkpoint_every=10, resume=True, **OPTIONS)
    assert state_equal(straight.state_dict(), resumed.state_dict())
