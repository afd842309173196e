"""One-step distillation of a flow: the student's start, its options, and its quality."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.data import fit_standardization, sample_toy
from pushforward.fewstep.distilled import DistilledFlow
from pushforward.matching.model import FlowMatching
from pushforward.metrics import energy_distance
from pushforward.recipes.distill import distill, student_for
from tests.fewstep.test_distilled import small_teacher

pytestmark = pytest.mark.usefixtures("one_thread")


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
