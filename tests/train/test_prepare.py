"""Batch preparation ahead of the step: the same result as preparing in step, exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import pushforward
from pushforward.train import Callback, fit
from pushforward.train.batches import EpochBatches
from pushforward.train.prepare import MAX_DEFAULT_WORKERS, PrepareAhead, default_prepare_workers
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


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 12),
    batch=st.integers(1, 12),
    before=st.integers(0, 7),
    count=st.integers(0, 9),
)
def test_upcoming_are_the_next_batches(size: int, batch: int, before: int, count: int) -> None:
    # Crosses epoch boundaries whenever count * batch > size; moves nothing on.
    assume(batch <= size)
    batches = EpochBatches(size, batch, seed=size * 100 + batch)
    for _ in range(before):
        batches.next()
    position, generator = batches.position, batches.generator.get_state()
    ahead = batches.upcoming(count)
    assert batches.position == position and torch.equal(batches.generator.get_state(), generator)
    assert len(ahead) == count
    for expected in ahead:
        assert torch.equal(expected, batches.next())


def test_more_workers_prepare_the_same_batches() -> None:
    model = ot_model()
    x = toy_data(64).float()
    preparer = PrepareAhead(model, seed=5, workers=3)
    assert preparer.current(0, x, None) is not None
    for step in range(1, 6):
        preparer.ahead(step, x, None)
    assert sorted(preparer.pending) == [1, 2, 3]  # no more than the workers
    for step in range(1, 4):
        ahead = preparer.current(step, x, None)
        direct = model.prepare_batch(x, None, preparer.seed_for(step))
        assert torch.equal(ahead.x0, direct.x0) and torch.equal(ahead.x1, direct.x1)
    preparer.close()
    assert preparer.executor is None and not preparer.pending


def test_fit_does_not_depend_on_the_prepare_workers() -> None:
    data = toy_data(400).float()
    results = []
    for workers in (1, 4):
        model = ot_model()
        fit(model, data, prepare_workers=workers, **OPTIONS)
        results.append(model.state_dict())
    assert state_equal(*results)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        fit(ot_model(), data, prepare_workers=0, **OPTIONS)


def test_default_prepare_workers() -> None:
    workers = default_prepare_workers(torch.device("cpu"))
    assert 1 <= workers <= MAX_DEFAULT_WORKERS
    assert 1 <= default_prepare_workers(torch.device("cuda")) <= MAX_DEFAULT_WORKERS


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
