from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pushforward.train import (
    Callback,
    fit,
    latest_checkpoint,
    load_checkpoint,
    verify_checkpoint,
)
from pushforward.train.checkpoint import flatten_optimizer_state, unflatten_optimizer_state
from tests.train.models import small_flow, state_equal, toy_data

OPTIONS: dict[str, Any] = dict(
    steps=200,
    batch_size=48,
    lr=3e-3,
    warmup=20,
    ema=0.99,
    validation=0.1,
    eval_every=30,
    patience=50,
    seed=3,
    log_every=25,
)


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int, logs: dict[str, Any]) -> bool:
        return step == self.step


def test_optimizer_state_round_trips_without_pickle() -> None:
    model = small_flow()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(toy_data(32)).backward()
        optimizer.step()
    tensors, json_part = flatten_optimizer_state(optimizer.state_dict())
    restored = unflatten_optimizer_state(tensors, json.loads(json.dumps(json_part)))
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    assert restored["param_groups"][0]["betas"] == (0.8, 0.9)
    for index, entries in original["state"].items():
        for name, value in entries.items():
            assert torch.equal(restored["state"][index][name], value)


def test_resume_is_bitwise_exact(tmp_path: Path) -> None:
    data = toy_data(600)
    straight = small_flow()
    whole = fit(straight, data, checkpoint_dir=tmp_path / "a", checkpoint_every=50, **OPTIONS)

    first = small_flow()
    fit(
        first,
        data,
        checkpoint_dir=tmp_path / "b",
        checkpoint_every=50,
        callbacks=[StopAt(100)],
        **OPTIONS,
    )
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-000000100"
    resumed_model = small_flow(seed=99)  # different initial weights: all comes from the checkpoint
    resumed = fit(
        resumed_model,
        data,
        checkpoint_dir=tmp_path / "b",
        checkpoint_every=50,
        resume=True,
        **OPTIONS,
    )

    assert state_equal(straight.state_dict(), resumed_model.state_dict())
    assert state_equal(whole.last_weights, resumed.last_weights)
    a, b = whole.to_dict(), resumed.to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b and whole.weights == "best"
    final_a = load_checkpoint(latest_checkpoint(tmp_path / "a"))
    final_b = load_checkpoint(latest_checkpoint(tmp_path / "b"))
    assert final_a.step == final_b.step == 200
    assert state_equal(final_a.ema, final_b.ema) and state_equal(final_a.best, final_b.best)
    assert not state_equal(final_a.model, final_a.ema)


def test_resume_refuses_a_different_run(tmp_path: Path) -> None:
    fit(small_flow(), toy_data(), steps=5, batch_size=32, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="seed=0"):
        fit(
            small_flow(),
            toy_data(),
            steps=10,
            batch_size=32,
            seed=1,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def _write_checkpoint(directory: Path) -> Path:
    fit(
        small_flow(),
        toy_data(),
        steps=6,
        batch_size=32,
        ema=0.9,
        validation=0.25,
        eval_every=3,
        checkpoint_dir=directory,
        checkpoint_every=3,
    )
    path = latest_checkpoint(directory)
    assert path is not None and sorted(p.name for p in directory.iterdir()) == [path.name]
    return path


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip", "delete", "manifest"],
)
@pytest.mark.parametrize(
    "filename", ["model.safetensors", "ema.safetensors", "training_state.json"]
)
def test_corrupt_checkpoint_is_refused(tmp_path: Path, damage: str, filename: str) -> None:
    path = _write_checkpoint(tmp_path)
    target = path / filename
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
    elif damage == "delete":
        target.unlink()
    else:
        (path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"corrupt|missing|incomplete"):
        load_checkpoint(path)
    with pytest.raises(ValueError):
        fit(
            small_flow(),
            toy_data(),
            steps=9,
            batch_size=32,
            ema=0.9,
            validation=0.25,
            eval_every=3,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_leftovers_of_a_crashed_write_are_ignored(tmp_path: Path) -> None:
    path = _write_checkpoint(tmp_path)
    (tmp_path / ".checkpoint-000000009.123.tmp").mkdir()
    (tmp_path / ".checkpoint-000000009.123.tmp" / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path) == path
    verify_checkpoint(path)
    fit(
        small_flow(),
        toy_data(),
        steps=9,
        batch_size=32,
        ema=0.9,
        validation=0.25,
        eval_every=3,
        checkpoint_dir=tmp_path,
        checkpoint_every=3,
        resume=True,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-000000009"]


def test_non_finite_weights_are_never_written(tmp_path: Path) -> None:
    model = small_flow()

    class Poison(Callback):
        def on_step(self, step: int, logs: dict[str, Any]) -> None:
            if step == 5:
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))

    with pytest.raises(RuntimeError, match="no checkpoint was written"):
        fit(
            model,
            toy_data(),
            steps=8,
            batch_size=32,
            checkpoint_dir=tmp_path,
            checkpoint_every=3,
            callbacks=[Poison()],
        )
    saved = load_checkpoint(latest_checkpoint(tmp_path))
    assert saved.step == 3
    assert all(torch.isfinite(v).all() for v in saved.model.values() if v.is_floating_point())
