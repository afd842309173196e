"""The one-step distilled model: its map, loss, sampling cost, save/load, and its quality."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.data import fit_standardization, sample_toy
from pushforward.matching.couplings import Coupling
from pushforward.matching.distill import DistilledFlow, distill, student_for
from pushforward.matching.model import FlowMatching
from pushforward.metrics import energy_distance
from pushforward.standardized import standardize_model
from tests.contract import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


def small_teacher(**options: object) -> FlowMatching:
    defaults: dict[str, object] = {"features": 2, "hidden": [16, 16], "time_embedding": 8}
    defaults.update(options)
    torch.manual_seed(0)
    model = pushforward.build("fm", **defaults)
    assert isinstance(model, FlowMatching)
    randomize_(model, 0.3, torch.Generator().manual_seed(1))
    return model.double()


def test_registered_without_log_prob() -> None:
    assert "distilled" in pushforward.available()
    model = pushforward.build("distilled", features=3, hidden=[8, 8], time_embedding=4)
    assert isinstance(model, DistilledFlow)
    assert not model.has_log_prob and model.has_sample and model.has_rsample
    with pytest.raises(NotImplementedError, match="log_prob"):
        model.log_prob(torch.zeros(2, 3))
    with pytest.raises(NotImplementedError, match="log_prob"):
        model.sample_and_log_prob(2)


@pytest.mark.parametrize("guided", [False, True], ids=["plain", "guided"])
def test_student_starts_as_the_teachers_one_step_euler_map(guided: bool) -> None:
    options: dict[str, object] = {"context": 2, "context_dropout": 0.2} if guided else {}
    teacher = small_teacher(**options)
    student = student_for(teacher)
    assert student.config["model"] == "distilled"
    generator = torch.Generator().manual_seed(2)
    x0 = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    context = torch.randn(50, 2, generator=generator, dtype=torch.float64) if guided else None
    with torch.no_grad():
        euler = teacher.solve(x0, context, solver="euler", steps=1).state
        mapped = student.transport(x0, context)
    assert isinstance(euler, Tensor)
    torch.testing.assert_close(mapped, euler, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        mapped, x0 + teacher.velocity(x0, torch.zeros((), dtype=x0.dtype), context).detach()
    )


def test_student_options() -> None:
    teacher = small_teacher()
    assert student_for(teacher, loss="pseudo-huber").loss_kind == "pseudo-huber"
    with pytest.raises(ValueError, match="init"):
        student_for(teacher, hidden=[8])
    fresh = student_for(teacher, init="fresh", hidden=[8])
    assert fresh.config["options"]["hidden"] == [8]
    with pytest.raises(ValueError, match="comes from the teacher"):
        student_for(teacher, base="uniform")
    noise = small_teacher(parameterization="noise", path="cosine")
    with pytest.raises(ValueError, match="velocity"):
        student_for(noise)
    assert isinstance(student_for(noise, init="fresh"), DistilledFlow)
    with pytest.raises(ValueError, match="fm"):
        student_for(pushforward.build("distilled", features=2))  # type: ignore[arg-type]


def test_sampling_is_one_network_evaluation() -> None:
    student = student_for(small_teacher())
    calls = []
    handle = student.network.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(5)
    samples = student.sample(300)
    handle.remove()
    assert len(calls) == 1 and samples.shape == (300, 2) and not samples.requires_grad
    torch.manual_seed(5)
    x0 = student.base.sample(300)
    torch.testing.assert_close(samples, student.transport(x0).detach(), rtol=0, atol=0)
    # rsample is the same map with gradients to the parameters.
    torch.manual_seed(5)
    student.rsample(300).square().sum().backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("loss", ["mse", "pseudo-huber"])
def test_regression_loss_closed_form(loss: str) -> None:
    student = student_for(small_teacher(), loss=loss)
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    x1 = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        error = student.transport(x0) - x1
    if loss == "mse":
        expected = error.square().mean()
    else:
        c = 0.00054 * math.sqrt(2)
        expected = ((error.square().sum(1) + c**2).sqrt() - c).mean() / 2
    value = student.regression_loss(Coupling(x0, x1, None))
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(student.loss(x1, source=x0), value)
    with pytest.raises(ValueError, match="pairs"):
        student.loss(x1)


def test_save_and_load_give_identical_outputs(tmp_path: Path) -> None:
    teacher = small_teacher(context=2)
    student = student_for(teacher).float()
    randomize_(student, 0.1, torch.Generator().manual_seed(4))
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    folded = standardize_model(student, mean, std, torch.zeros(2), torch.ones(2))
    pushforward.save(folded, tmp_path)
    loaded = pushforward.load(tmp_path)
    assert not loaded.has_log_prob
    context = torch.randn(20, 2, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(8)
    expected = folded.sample(20, context)
    torch.manual_seed(8)
    torch.testing.assert_close(loaded.sample(20, context), expected, rtol=0, atol=0)
    # In original units: mean + std * (one-step map of the base draw).
    torch.manual_seed(8)
    x0 = student.base.sample(20)
    torch.testing.assert_close(expected, mean + std * student.transport(x0, context).detach())


def test_empirical_source_is_the_teachers() -> None:
    # A teacher that transports a source data set: the student draws the same rows.
    teacher = pushforward.build("fm", features=2, hidden=[8, 8], base="empirical", source_rows=5)
    assert isinstance(teacher, FlowMatching)
    rows = torch.arange(10.0).reshape(5, 2)
    teacher.base.assign_rows(rows)  # type: ignore[operator]
    student = student_for(teacher)
    assert student.config["options"]["source_rows"] == 5
    torch.testing.assert_close(student.base.rows, rows, rtol=0, atol=0)  # type: ignore[arg-type]


def test_distilled_one_step_is_close_to_the_many_step_teacher() -> None:
    # InstaFlow's claim, in small: the one-step student fits the data about as well
    # as its teacher does with 100 network evaluations (rk4, 25 steps). The teacher
    # learnt from independent pairs, so its paths are curved and one Euler step is poor.
    values = torch.as_tensor(sample_toy("moons", 4000, seed=0), dtype=torch.float32)
    mean, std = fit_standardization(values)
    x = (values - mean) / std
    held_out = (torch.as_tensor(sample_toy("moons", 2000, seed=9)).float() - mean) / std
    torch.manual_seed(0)
    teacher = pushforward.build(
        "fm", features=2, hidden=[64, 64], time_embedding=8, residual=False,
        coupling="independent",
    )  # fmt: skip
    assert isinstance(teacher, FlowMatching)
    options = {"batch_size": 256, "lr": 3e-3, "warmup": 10, "quiet": True}
    pushforward.fit(teacher, x, steps=400, seed=0, **options)
    result = distill(teacher, 3000, seed=3, steps=400, **options)
    teacher.eval()
    result.model.eval()
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        many = teacher.solve(x0, solver="rk4", steps=25).state
        euler = teacher.solve(x0, solver="euler", steps=1).state
        one = result.model.transport(x0)
    reference = energy_distance(many, held_out)
    assert energy_distance(one, held_out) < 1.5 * reference, reference
    # It learnt: its start, the teacher's one-step Euler map, is far worse.
    assert energy_distance(euler, held_out) > 3 * energy_distance(one, held_out)
