from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch

import pushforward
from pushforward.train import Callback, ProgressBar, fit
from pushforward.train.batches import EpochBatches
from tests.train.models import Faulty, Scalar, small_flow, state_equal, toy_data


def test_same_seed_gives_bitwise_identical_weights() -> None:
    data = toy_data()
    runs = []
    for _ in range(2):
        model = small_flow()
        history = fit(
            model,
            data,
            steps=60,
            batch_size=64,
            lr=3e-3,
            warmup=5,
            ema=0.99,
            validation=0.2,
            eval_every=20,
            seed=7,
            log_every=10,
        )
        runs.append((model.state_dict(), history))
    assert state_equal(runs[0][0], runs[1][0])
    assert runs[0][1].loss == runs[1][1].loss and runs[0][1].val_loss == runs[1][1].val_loss
    other = small_flow()
    fit(
        other,
        data,
        steps=60,
        batch_size=64,
        lr=3e-3,
        warmup=5,
        ema=0.99,
        validation=0.2,
        eval_every=20,
        seed=8,
        log_every=10,
    )
    assert not state_equal(runs[0][0], other.state_dict())


def test_fit_leaves_global_rng_alone_and_learns() -> None:
    data = toy_data(1024)
    model = small_flow()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    history = fit(model, data, steps=150, batch_size=128, lr=1e-2, warmup=10, log_every=50)
    assert torch.equal(torch.get_rng_state(), before)
    assert history.steps == [50, 100, 150]
    assert history.loss[-1] < history.loss[0] - 0.3
    assert history.weights == "last" and history.last_weights is None


class GradientSpy(Callback):
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.seen: list[tuple[float, float]] = []

    def on_step(self, step: int, logs: dict[str, Any]) -> None:
        after = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in self.model.parameters() if p.grad is not None])
        )
        self.seen.append((logs["grad_norm"], float(after)))


def test_gradient_clipping_bounds_the_norm() -> None:
    model = small_flow()
    spy = GradientSpy(model)
    fit(model, toy_data() * 50, steps=5, batch_size=64, clip=0.1, callbacks=[spy])
    assert all(before > 0.1 for before, _ in spy.seen)
    assert all(after == pytest.approx(0.1, rel=1e-4) for _, after in spy.seen)


def test_early_stopping_restores_best_weights() -> None:
    # Training pulls theta from 0 towards 5; validation data sits at 1, so the
    # validation loss falls, bottoms out near theta = 1, then rises.
    model = Scalar(0.0)
    train = torch.full((64, 1), 5.0)
    val = torch.full((8, 1), 1.0)
    seen: list[float] = []

    class Watch(Callback):
        def on_eval(self, step: int, logs: dict[str, Any]) -> None:
            seen.append(float(model.theta.detach()))

    history = fit(
        model,
        train,
        steps=400,
        batch_size=16,
        lr=0.05,
        warmup=0,
        clip=None,
        validation=val,
        eval_every=5,
        patience=4,
        callbacks=[Watch()],
    )
    assert history.stopped_early and history.weights == "best"
    best = history.val_loss.index(min(history.val_loss))
    assert history.best_step == history.eval_steps[best]
    assert len(history.eval_steps) == best + 1 + 4
    assert float(model.theta.detach()) == seen[best]
    assert abs(float(model.theta.detach()) - 1.0) < 0.3
    assert float(history.last_weights["theta"]) > float(model.theta.detach()) + 0.3


def test_ema_weights_are_returned_and_raw_weights_kept() -> None:
    model = small_flow()
    history = fit(model, toy_data(), steps=30, batch_size=64, ema=0.9)
    assert history.weights == "ema"
    raw = history.last_weights
    assert not state_equal(model.state_dict(), raw)


def test_non_finite_steps_are_skipped_and_counted() -> None:
    model = Faulty(small_flow(), nan_loss_at={3, 4}, nan_grad_at={7})
    history = fit(model, toy_data(), steps=12, batch_size=64, log_every=1)
    assert history.skipped == 3 and history.skipped_steps == [3, 4, 7]
    assert history.steps_done == 12
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # An interval with only skipped steps records NaN; the others are finite.
    assert [s for s, v in zip(history.steps, history.loss, strict=True) if v != v] == [3, 4, 7]


def test_many_non_finite_steps_in_a_row_stop_the_run() -> None:
    model = Faulty(small_flow(), nan_loss_at=set(range(5, 100)))
    with pytest.raises(RuntimeError, match="NaN or Inf for 10 steps in a row"):
        fit(model, toy_data(), steps=50, batch_size=64, max_skipped_in_a_row=10)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_validation_with_context_and_bad_inputs() -> None:
    model = small_flow()
    with pytest.raises(ValueError, match="rows"):
        fit(model, toy_data(), validation=(toy_data(10), torch.zeros(3, 1)), steps=1)
    with pytest.raises(ValueError, match="fraction"):
        fit(model, toy_data(), validation=1.5, steps=1)
    with pytest.raises(ValueError, match="optimizer"):
        fit(model, toy_data(), optimizer="sgd", steps=1)
    with pytest.raises(ValueError, match="empty"):
        fit(model, toy_data()[:0], steps=1)


def test_progress_is_quiet_off_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not ProgressBar(stream=io.StringIO()).enabled
    assert not ProgressBar(quiet=True, stream=Terminal()).enabled
    stream = Terminal()
    bar = ProgressBar(stream=stream)
    bar.on_start(0, 3)
    for step in (1, 2, 3):
        bar.on_step(step, {"loss": 1.5})
    bar.on_eval(3, {"val_loss": 1.25})
    bar.on_step(3, {"loss": math.nan})
    bar.close()
    assert "loss=1.5000" in stream.getvalue() or "3/3" in stream.getvalue()


def _realnvp() -> Any:
    torch.manual_seed(0)
    return pushforward.build("realnvp", features=2, transforms=2, hidden=[8])


def test_data_dependent_layers_start_from_the_first_batch(tmp_path) -> None:
    data = toy_data(256)
    options: dict[str, Any] = {"batch_size": 64, "lr": 1e-2, "warmup": 0, "seed": 3}
    trained = _realnvp()
    fit(trained, data, steps=1, **options)
    # The same as initialising by hand from the first batch, then training.
    by_hand = _realnvp()
    by_hand.initialize(data[EpochBatches(256, 64, seed=3).next()])
    fit(by_hand, data, steps=1, **options)
    assert state_equal(trained.state_dict(), by_hand.state_dict())
    # Another batch gives other weights: the first one is the one used.
    other = _realnvp()
    other.initialize(data[EpochBatches(256, 64, seed=4).next()])
    fit(other, data, steps=1, **options)
    assert not state_equal(trained.state_dict(), other.state_dict())


def test_a_resumed_run_takes_its_initialisation_from_the_checkpoint(tmp_path, monkeypatch) -> None:
    data = toy_data(256)
    options: dict[str, Any] = {"batch_size": 64, "lr": 1e-2, "warmup": 0, "quiet": True}
    straight = _realnvp()
    fit(straight, data, steps=4, **options)
    first = _realnvp()

    class StopAfterTwo(Callback):
        def on_step(self, step: int, logs: dict[str, Any]) -> bool:
            return step == 2

    fit(first, data, steps=4, checkpoint_dir=tmp_path, callbacks=[StopAfterTwo()], **options)
    resumed = _realnvp()
    calls: list[int] = []
    monkeypatch.setattr(resumed, "initialize", lambda *args: calls.append(1) or resumed)
    fit(resumed, data, steps=4, checkpoint_dir=tmp_path, resume=True, **options)
    assert not calls
    assert state_equal(straight.state_dict(), resumed.state_dict())
