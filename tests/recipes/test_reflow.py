"""Reflow: pairs from a model's ODE, training on a fixed coupling, the rectified model."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import pushforward
from pushforward.data import fit_standardization, sample_toy
from pushforward.distributions import make_base
from pushforward.matching.model import FlowMatching
from pushforward.matching.schedulers import CondOTScheduler
from pushforward.metrics import energy_distance, straightness
from pushforward.recipes.distill import distill
from pushforward.recipes.pairs import reflow_pairs
from pushforward.recipes.reflow import rectified_model, reflow

pytestmark = pytest.mark.usefixtures("one_thread")


class LinearField(nn.Module):
    """v(x, t, c) = A x + B c: the ODE has the closed-form solution used below."""

    def __init__(self, a: Tensor, b: Tensor | None = None) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.b = None if b is None else nn.Parameter(b.clone())

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        out = x @ self.a.T
        if self.b is not None and context is not None:
            out = out + context @ self.b.T
        return out


def linear_fm(a: Tensor, b: Tensor | None = None) -> FlowMatching:
    base = make_base("normal", (a.shape[0],)).to(a.dtype)
    context = 0 if b is None else b.shape[1]
    return FlowMatching(LinearField(a, b), base, CondOTScheduler(), context)


A = torch.tensor([[-0.4, 0.9], [-0.7, 0.2]], dtype=torch.float64)
B = torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.4, -1.0]], dtype=torch.float64)


def test_pairs_are_the_exact_ode_solution() -> None:
    # dx/dt = A x + B c from x0 over [0, 1]: x1 = e^A x0 + A^{-1} (e^A - I) B c.
    model = linear_fm(A, B)
    generator = torch.Generator().manual_seed(3)
    context = torch.randn(300, 3, generator=generator, dtype=torch.float64)
    pairs = reflow_pairs(
        model, 300, context, generator=torch.Generator().manual_seed(4), batch_size=128
    )
    expected_x0 = torch.randn(300, 2, generator=torch.Generator().manual_seed(4), dtype=A.dtype)
    torch.testing.assert_close(pairs.x0, expected_x0, rtol=0, atol=0)
    exp_a = torch.linalg.matrix_exp(A)
    shift = torch.linalg.solve(A, exp_a - torch.eye(2, dtype=A.dtype)) @ B
    expected = pairs.x0 @ exp_a.T + context @ shift.T
    torch.testing.assert_close(pairs.x1, expected, rtol=1e-5, atol=1e-5)
    assert pairs.context is not None
    torch.testing.assert_close(pairs.context, context, rtol=0, atol=0)
    assert pairs.x1.dtype == torch.float64 and not pairs.x1.requires_grad
    # A fixed-step solver with enough steps agrees.
    rk4 = reflow_pairs(
        model, 300, context, solver="rk4", steps=50, generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(rk4.x1, expected, rtol=1e-8, atol=1e-8)


def test_pair_options_are_checked() -> None:
    model = linear_fm(A)
    with pytest.raises(ValueError, match="needs steps"):
        reflow_pairs(model, 10, solver="rk4")
    with pytest.raises(ValueError, match="solver"):
        reflow_pairs(model, 10, solver="rk5")
    with pytest.raises(ValueError, match="pairs"):
        reflow_pairs(model, 0)
    with pytest.raises(TypeError, match="flow-matching"):
        reflow_pairs(pushforward.build("maf", features=2), 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unconditional"):
        reflow_pairs(model, 10, torch.zeros(10, 3, dtype=torch.float64))


def test_rectified_model_starts_from_the_parent() -> None:
    torch.manual_seed(0)
    parent = pushforward.build("fm", features=2, hidden=[16, 16], time_embedding=8)
    assert isinstance(parent, FlowMatching)
    child = rectified_model(parent, time_sampling="u-shaped", loss="pseudo-huber")
    assert child.config["model"] == "fm"
    assert child.config["options"]["time_sampling"] == "u-shaped"
    assert child.config["options"]["loss"] == "pseudo-huber"
    assert child.config["options"]["hidden"] == [16, 16]
    for key, value in parent.state_dict().items():
        assert torch.equal(child.state_dict()[key], value), key
    with pytest.raises(ValueError, match="init"):
        rectified_model(parent, hidden=[8])
    torch.manual_seed(1)
    fresh = rectified_model(parent, init="fresh", hidden=[8])
    assert fresh.config["options"]["hidden"] == [8]
    with pytest.raises(ValueError, match="features"):
        rectified_model(parent, features=3)
    with pytest.raises(ValueError, match="init"):
        rectified_model(parent, init="teacher")


def test_one_reflow_straightens_an_independent_coupling_flow() -> None:
    # Liu et al. (2023): the 2-rectified flow's paths are straighter than the
    # 1-rectified flow's, so its one-step samples are better. Independent coupling:
    # the OT default is already nearly straight.
    values = torch.as_tensor(sample_toy("moons", 4000, seed=0), dtype=torch.float32)
    mean, std = fit_standardization(values)
    x = (values - mean) / std
    held_out = (torch.as_tensor(sample_toy("moons", 2000, seed=9)).float() - mean) / std
    torch.manual_seed(0)
    model = pushforward.build(
        "fm", features=2, hidden=[64, 64], time_embedding=8, residual=False,
        coupling="independent",
    )  # fmt: skip
    assert isinstance(model, FlowMatching)
    options = {"batch_size": 256, "lr": 3e-3, "warmup": 10, "quiet": True}
    pushforward.fit(model, x, steps=400, seed=0, **options)
    result = reflow(model, 3000, seed=5, steps=300, **options)
    assert result.model.config["model"] == "fm"
    assert result.pairs.x0.shape == (3000, 2)

    def measure(flow: FlowMatching) -> tuple[float, float]:
        flow.eval()
        with torch.no_grad():
            x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
            fine = flow.solve(x0, solver="euler", steps=64, return_path=True)
            one_step = flow.solve(x0, solver="euler", steps=1).state
        assert fine.path is not None and isinstance(one_step, Tensor)
        return straightness(fine.path, fine.times), energy_distance(one_step, held_out)

    before, after = measure(model), measure(result.model)
    assert after[0] < 0.1 * before[0], (before, after)
    assert after[1] < 0.25 * before[1], (before, after)
    # InstaFlow's recipe, the rest of it: the reflowed model distilled into one step
    # samples within 1.5x of the original model's 100 Euler steps.
    student = distill(result.model, 3000, seed=7, steps=300, **options).model
    student.eval()
    with torch.no_grad():
        x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
        reference = energy_distance(model.solve(x0, solver="euler", steps=100).state, held_out)
        one_step = student.transport(x0)
    assert energy_distance(one_step, held_out) <= 1.5 * reference
    # The measurement tells 1.5x apart here: the same points moved by 0.1 miss it.
    moved = one_step + torch.tensor([0.1, 0.0])
    assert energy_distance(moved, held_out) > 1.5 * reference


def test_reflow_is_repeatable_and_works_in_float64() -> None:
    # k-rectified: reflow the reflowed model; everything stays in float64.
    torch.manual_seed(0)
    model = pushforward.build("fm", features=2, hidden=[16, 16], time_embedding=8)
    assert isinstance(model, FlowMatching)
    model = model.double()
    options = {"steps": 5, "batch_size": 32, "quiet": True, "solver": "rk4", "solver_steps": 4}
    second = reflow(model, 64, seed=1, **options)
    third = reflow(second.model, 64, seed=2, **options)
    assert third.pairs.x1.dtype == torch.float64
    assert next(third.model.parameters()).dtype == torch.float64
    # The third model's pairs are the second model's ODE ends, not the first's.
    again = reflow_pairs(
        second.model, 64, solver="rk4", steps=4, generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(third.pairs.x1, again.x1)
    assert len(third.history.loss) >= 1
