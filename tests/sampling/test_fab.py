"""FAB: it covers every mode of a multimodal target where reverse KL with the same budget does
not, its loss is the weighted cross-entropy it claims, it counts target evaluations, it
resumes bitwise exactly with its buffer, and its errors name the problem."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.model import Model
from pushforward.sampling import CallableTarget, builtin_target
from pushforward.sampling.fab import FAB
from pushforward.sampling.importance import mode_coverage
from pushforward.sampling.objectives import make_objective
from pushforward.train import Callback
from tests.train.models import state_equal

BUDGET: dict[str, Any] = dict(steps=300, batch_size=256, lr=1e-3, warmup=20, quiet=True)


def flow(seed: int = 0, **options: Any) -> pushforward.Model:
    torch.manual_seed(seed)
    return pushforward.build("realnvp", features=2, transforms=4, hidden=[32], **options)


def coverage(model: pushforward.Model, target: Any) -> tuple[int, float]:
    torch.manual_seed(123)
    with torch.no_grad():
        return mode_coverage(target, model.sample(4000))


@pytest.mark.parametrize("buffer", [False, True])
def test_fab_covers_every_mode_of_the_grid_where_reverse_kl_does_not(buffer: bool):
    """Nine Gaussians 5 apart, the flow starting at N(0, I): reverse KL stays on one mode."""
    target = builtin_target("grid-9")
    options: dict[str, Any] = dict(transition="metropolis", n_intermediate=1, step_size=2.0)
    if buffer:
        # FAB's heuristic: buffer_min ~ 10 x batch_size x buffer_updates (here 5x).
        options.update(buffer=True, buffer_capacity=12_800, buffer_min=2_560, buffer_updates=2)
    fab = flow()
    pushforward.fit(fab, target=target, objective="fab", objective_options=options, **BUDGET)
    reverse = flow()
    pushforward.fit(reverse, target=target, objective="reverse-kl", **BUDGET)
    covered, entropy = coverage(fab, target)
    assert covered == 9 and entropy > 0.9
    assert coverage(reverse, target)[0] < 9


def test_the_loss_is_the_self_normalised_cross_entropy_and_evaluations_are_counted():
    target = builtin_target("grid-9")
    model = flow().double()
    fab = FAB(n_intermediate=2, leapfrog_steps=3, transition_steps=2)
    torch.manual_seed(0)
    loss = fab.loss(model, target, 64)
    result = fab.last_result
    assert result is not None
    kept = result.kept
    weights = torch.softmax(result.log_w[kept], 0)
    expected = -(weights * model.log_prob(result.x[kept])).sum()
    torch.testing.assert_close(loss, expected)
    assert fab.target_evaluations == 64 * (1 + 2 * 2 * 3)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    metropolis = FAB(n_intermediate=3, transition="metropolis")
    metropolis.loss(model, target, 10)
    metropolis.loss(model, target, 10)
    assert metropolis.target_evaluations == 2 * 10 * (1 + 3)


def test_samples_outside_the_support_never_make_a_nan_gradient():
    def half_plane(x: Tensor) -> Tensor:  # zero density for x_0 < 0
        values = -0.5 * (x - 1.0).square().sum(-1)
        return torch.where(x[:, 0] >= 0, values, torch.full_like(values, -math.inf))

    target = CallableTarget(half_plane, features=2)
    for options in ({}, {"buffer": True, "buffer_min": 64, "buffer_updates": 2}):
        model = flow()
        fab = FAB(n_intermediate=2, **options)
        torch.manual_seed(1)
        for _ in range(3):
            model.zero_grad()
            loss = fab.loss(model, target, 32)
            loss.backward()
            assert math.isfinite(float(loss.detach()))
            for parameter in model.parameters():
                assert parameter.grad is None or bool(torch.isfinite(parameter.grad).all())


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int, logs: dict[str, Any]) -> bool:
        return step == self.step


def test_a_run_with_the_buffer_resumes_bitwise_exactly(tmp_path: Path):
    target = builtin_target("grid-9")
    options: dict[str, Any] = dict(
        n_intermediate=2,
        leapfrog_steps=2,
        buffer=True,
        buffer_capacity=512,
        buffer_min=192,
        buffer_updates=3,
    )
    run: dict[str, Any] = dict(
        target=target,
        objective="fab",
        objective_options=options,
        steps=40,
        batch_size=32,
        lr=3e-3,
        warmup=5,
        seed=5,
        quiet=True,
        checkpoint_every=10,
        log_every=10,
    )
    straight = flow()
    whole = pushforward.fit(straight, checkpoint_dir=tmp_path / "a", **run)
    first = flow()
    pushforward.fit(first, checkpoint_dir=tmp_path / "b", callbacks=[StopAt(20)], **run)
    # Step 20 is inside a cycle of buffer_updates = 3: one buffer batch is still pending.
    resumed = flow(seed=9)  # other initial weights: everything comes from the checkpoint
    again = pushforward.fit(resumed, checkpoint_dir=tmp_path / "b", resume=True, **run)
    assert state_equal(straight.state_dict(), resumed.state_dict())
    a, b = whole.to_dict(), again.to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_state_round_trips_the_buffer_step_sizes_and_counts():
    target = builtin_target("grid-9")
    model = flow()
    fab = FAB(n_intermediate=1, leapfrog_steps=2, buffer=True, buffer_min=64, buffer_updates=2)
    torch.manual_seed(2)
    fab.loss(model, target, 32)
    json_part, tensors = fab.state()
    assert json_part["pending"] == 1 and "buffer_x" in tensors
    copy = FAB(n_intermediate=1, leapfrog_steps=2, buffer=True, buffer_min=64, buffer_updates=2)
    copy.restore(json_part, tensors)
    assert copy.target_evaluations == fab.target_evaluations > 0
    torch.manual_seed(3)
    a = fab.loss(model, target, 32)
    torch.manual_seed(3)
    b = copy.loss(model, target, 32)
    assert torch.equal(a, b) and fab.state()[0] == copy.state()[0]


def test_options_round_trip_and_errors_name_the_problem():
    fab = make_objective("fab", buffer=True, transition="metropolis")
    assert make_objective("fab", **fab.options()).options() == fab.options()
    assert fab.options()["n_intermediate"] == 4 and fab.options()["leapfrog_steps"] == 5
    with pytest.raises(ValueError, match="transition"):
        FAB(transition="nuts")
    with pytest.raises(ValueError, match="buffer_min"):
        FAB(buffer=True, buffer_capacity=100, buffer_min=200)
    with pytest.raises(ValueError, match="buffer_updates"):
        FAB(buffer_updates=0)
    with pytest.raises(ValueError, match="has no option"):
        make_objective("fab", buffer_size=10)
    small = FAB(buffer=True, buffer_min=100, buffer_updates=4)
    with pytest.raises(ValueError, match="raise buffer_min"):
        small.loss(flow(), builtin_target("grid-9"), 32)

    def rounded(x: Tensor) -> Tensor:  # not differentiable: built outside torch's graph
        return torch.as_tensor(-(x.detach().numpy() ** 2).sum(-1))

    model = flow()
    target = CallableTarget(rounded, features=2)
    with pytest.raises(ValueError, match="metropolis"):
        FAB().check(model, target)
    FAB(transition="metropolis").check(model, target)
    with pytest.raises(ValueError, match="sample_and_log_prob"):
        FAB().check(NoDensity(), builtin_target("grid-9"))


class NoDensity(Model):
    """A model that samples but has no density."""

    event_shape = (2,)
    context_features = 0
    has_log_prob = False
