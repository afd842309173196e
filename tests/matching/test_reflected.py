"""The registered ``reflected-fm`` model: samples stay in the box at any steps and guidance
(where plain ``fm`` leaves it), the reflected ODE, exact densities, normalisation, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import pushforward
from pushforward.distributions.uniform import BoxUniform
from pushforward.geometry.box import box_contains, box_reflect, box_reflection_sign
from pushforward.matching.model import FlowMatching
from pushforward.matching.reflected import ReflectedFlowMatching
from pushforward.matching.schedulers import CondOTScheduler
from pushforward.ode import exact_divergence
from pushforward.transforms.preprocessing import Preprocessing
from pushforward.transforms.standardize import Standardize
from tests.contract import grid_integral_2d, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
SMALL = {"features": 2, "hidden": [32, 32], "time_embedding": 16}
STEPS = [1, 2, 4, 100]
GUIDANCE = [0.0, 5.0]


def edge_mixture(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A mixture of Beta(1, 6) x Beta(6, 1) and Beta(6, 1) x Beta(1, 6) on [0, 1]^2: its
    density is 18 at two corners, so its mass sits at the box's edges. Returns the points
    and the one-hot component of each."""
    generator = torch.Generator().manual_seed(seed)
    near_zero = 1 - torch.rand(n, 2, generator=generator).pow(1 / 6)  # Beta(1, 6)
    component = torch.randint(0, 2, (n,), generator=generator)
    first = torch.stack([near_zero[:, 0], 1 - near_zero[:, 1]], dim=1)
    second = torch.stack([1 - near_zero[:, 0], near_zero[:, 1]], dim=1)
    points = torch.where(component[:, None] == 0, first, second)
    return points, nn.functional.one_hot(component, 2).float()


def train(model: FlowMatching, x: Tensor, steps: int, context: Tensor | None = None) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = torch.randint(0, x.shape[0], (256,), generator=generator)
        loss = model.loss(x[rows], None if context is None else context[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def outside_fraction(x: Tensor, low: Tensor | float, high: Tensor | float) -> float:
    return float((~box_contains(x, low, high)).float().mean())


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    return edge_mixture(8000, seed=0)


@pytest.fixture(scope="module")
def trained(data: tuple[Tensor, Tensor]) -> ReflectedFlowMatching:
    torch.manual_seed(0)
    model = pushforward.build("reflected-fm", coupling="independent", **SMALL)
    assert isinstance(model, ReflectedFlowMatching)
    train(model, data[0], steps=500)
    return model


@pytest.fixture(scope="module")
def trained_guided(data: tuple[Tensor, Tensor]) -> ReflectedFlowMatching:
    torch.manual_seed(1)
    model = pushforward.build(
        "reflected-fm", context=2, context_dropout=0.2, coupling="independent", **SMALL
    )
    assert isinstance(model, ReflectedFlowMatching)
    train(model, data[0], steps=300, context=data[1])
    return model


# -- samples never leave the box ---------------------------------------------------------


def test_an_untrained_guided_model_never_leaves_a_per_feature_box() -> None:
    torch.manual_seed(2)
    low, high = [-1.0, 2.0], [0.5, 2.25]
    model = pushforward.build(
        "reflected-fm",
        features=2,
        context=2,
        context_dropout=0.1,
        low=low,
        high=high,
        hidden=[8],
        time_embedding=0,
        solver="euler",
    )
    # Large random weights: the field overshoots the box by many widths in one step.
    randomize_(model, 1.0, torch.Generator().manual_seed(3))
    context = torch.tensor([0.3, -1.0])
    x0 = model.base.sample(1000)
    one_step = x0 + model.velocity(x0, torch.zeros(()), context.expand(1000, 2), 5.0).detach()
    assert outside_fraction(one_step, torch.tensor(low), torch.tensor(high)) > 0.5
    for steps in STEPS:
        for guidance in GUIDANCE:
            x = model.sample(100_000, context, steps=steps, guidance=guidance)
            assert outside_fraction(x, model.low, model.high) == 0.0, (steps, guidance)
    # And with RK4 steps, whose inner stages leave the box too.
    x = model.sample(100_000, context, solver="rk4", steps=4, guidance=5.0)
    assert outside_fraction(x, model.low, model.high) == 0.0


def test_a_trained_guided_model_never_leaves_the_box(trained_guided) -> None:
    torch.manual_seed(4)
    label = torch.tensor([1.0, 0.0])
    for steps in STEPS:
        # 100 RK4 steps of 100,000 guided samples take a minute on one core: 5,000 there.
        n = 100_000 if steps < 100 else 5_000
        for guidance in GUIDANCE:
            x = trained_guided.sample(n, label, steps=steps, guidance=guidance)
            assert outside_fraction(x, 0.0, 1.0) == 0.0, (steps, guidance)


def test_plain_fm_trained_on_the_same_data_leaves_the_box(data, trained) -> None:
    torch.manual_seed(0)
    plain = pushforward.build("fm", coupling="independent", **SMALL)
    train(plain, data[0], steps=500)
    torch.manual_seed(5)
    with torch.no_grad():
        outside = outside_fraction(plain.sample(20_000), 0.0, 1.0)
        reflected = outside_fraction(trained.sample(20_000), 0.0, 1.0)
    print(f"outside [0, 1]^2 after 20 RK4 steps: fm {outside:.4f}, reflected-fm {reflected}")
    assert outside > 0.01
    assert reflected == 0.0


def test_one_euler_step_is_a_step_then_the_reflection() -> None:
    torch.manual_seed(6)
    model = pushforward.build("reflected-fm", features=3, low=-1.0, high=[1.0, 2.0, 0.5])
    randomize_(model, 1.0, torch.Generator().manual_seed(7))
    x0 = model.base.sample(256)
    with torch.no_grad():
        step = x0 + model.velocity(x0, torch.zeros(()))
        end = model.solve(x0, solver="euler", steps=1).state
    assert outside_fraction(step, model.low, model.high) > 0.5
    torch.testing.assert_close(end, box_reflect(step, model.low, model.high), atol=0, rtol=0)


# -- the unfolded field ----------------------------------------------------------------------


def test_the_velocity_is_fms_in_the_box_and_unfolded_outside() -> None:
    torch.manual_seed(8)
    model = pushforward.build(
        "reflected-fm",
        features=2,
        low=[0.0, -1.0],
        high=[1.0, 3.0],
        hidden=[32, 32],
        boundary="free",
    )
    model.double()
    randomize_(model, 0.3, torch.Generator().manual_seed(9))
    t = torch.full((64,), 0.3, dtype=F64)
    inside = model.base.sample(64)
    assert torch.equal(model.velocity(inside, t), FlowMatching.velocity(model, inside, t))
    outside = 10 * torch.randn(64, 2, dtype=F64)
    folded = box_reflect(outside, model.low, model.high)
    sign = box_reflection_sign(outside, model.low, model.high)
    expected = sign * FlowMatching.velocity(model, folded, t)
    torch.testing.assert_close(model.velocity(outside, t), expected, atol=0, rtol=0)
    # The divergence of the unfolded field is the divergence at the reflected point; the
    # generic forward-mode trace through the fold agrees.
    velocity, divergence = model.velocity_and_divergence(outside, t)
    _, generic = exact_divergence(lambda z: model.velocity(z, t), outside)
    torch.testing.assert_close(velocity, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(divergence, generic, atol=1e-12, rtol=1e-10)
    _, at_folded = FlowMatching.velocity_and_divergence(model, folded, t)
    torch.testing.assert_close(divergence, at_folded, atol=1e-12, rtol=1e-12)


# -- densities ------------------------------------------------------------------------------


class LogisticField(nn.Module):
    r""":math:`v_i = r_i (x_i - a_i)(b_i - x_i) / (b_i - a_i)`: tangent to every face, with the
    closed-form flow :math:`\operatorname{logit} u_1 = \operatorname{logit} u_0 + r`,
    :math:`u = (x - a) / (b - a)`."""

    def __init__(self, rate: Tensor, low: Tensor, high: Tensor) -> None:
        super().__init__()
        self.rate = nn.Parameter(rate.clone())
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        return self.rate * (x - self.low) * (self.high - x) / (self.high - self.low)

    def log_density(self, x: Tensor) -> Tensor:
        """The closed-form log-density at t = 1 of the uniform source pushed by the flow."""
        width = self.high - self.low
        u1 = (x - self.low) / width
        u0 = torch.sigmoid(torch.logit(u1) - self.rate)
        log_jacobian = torch.log(u0 * (1 - u0)) - torch.log(u1 * (1 - u1))
        return (log_jacobian - torch.log(width)).sum(-1)


LOW = torch.tensor([-1.0, 0.0], dtype=F64)
HIGH = torch.tensor([1.0, 0.5], dtype=F64)


def logistic_model() -> tuple[ReflectedFlowMatching, LogisticField]:
    field = LogisticField(torch.tensor([1.5, -2.0], dtype=F64), LOW, HIGH)
    source = BoxUniform((2,), LOW.tolist(), HIGH.tolist())
    model = ReflectedFlowMatching(field, source, CondOTScheduler(), atol=1e-10, rtol=1e-10)
    return model.double(), field


def test_a_field_tangent_to_the_faces_has_its_closed_form_density() -> None:
    model, field = logistic_model()
    x = LOW + (HIGH - LOW) * torch.rand(50, 2, dtype=F64).clamp(1e-3, 1 - 1e-3)
    expected = field.log_density(x)
    torch.testing.assert_close(model.log_prob(x), expected, atol=1e-8, rtol=0)
    torch.testing.assert_close(
        model.log_prob(x, solver="rk4", steps=100), expected, atol=1e-6, rtol=0
    )
    x0 = model.base.sample(50)
    u0 = (x0 - LOW) / (HIGH - LOW)
    pushed = LOW + (HIGH - LOW) * torch.sigmoid(torch.logit(u0) + field.rate)
    with torch.no_grad():
        torch.testing.assert_close(model.transport(x0, steps=100), pushed, atol=1e-8, rtol=0)


def test_a_tangent_fields_density_integrates_to_one_over_the_box() -> None:
    square = torch.tensor([-1.0, -1.0], dtype=F64), torch.tensor([1.0, 1.0], dtype=F64)
    field = LogisticField(torch.tensor([1.5, -2.0], dtype=F64), *square)
    source = BoxUniform((2,), square[0].tolist(), square[1].tolist())
    model = ReflectedFlowMatching(field, source, CondOTScheduler()).double()
    total = grid_integral_2d(
        lambda x: model.log_prob(x, solver="rk4", steps=10).detach(), -1.0, 1.0, 200
    )
    assert total == pytest.approx(1.0, abs=1e-3)
    # What is left is the grid's: the closed form on the same grid misses by as much.
    closed_form = grid_integral_2d(field.log_density, -1.0, 1.0, 200)
    assert total == pytest.approx(closed_form, abs=1e-5)


def test_a_zero_velocity_gives_exactly_the_uniform_density() -> None:
    model = pushforward.build("reflected-fm", features=3, low=[-1.0, 0.0, 2.0], high=[1, 0.5, 6])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    uniform = -math.log(2.0 * 0.5 * 4.0)
    x = model.base.sample(32)
    for options in ({}, {"solver": "rk4", "steps": 7}, {"divergence": "hutchinson"}):
        log_prob = model.log_prob(x, **options)
        assert torch.equal(log_prob, torch.full_like(log_prob, uniform)), options
    torch.testing.assert_close(float(model.log_volume()), -uniform)
    with torch.no_grad():
        assert torch.equal(model.transport(x), x)


def test_the_trained_density_integrates_to_one_over_the_box(trained) -> None:
    # The default field is tangent to the faces by construction, so its flow keeps the
    # box and the change of variables is exact up to solver and quadrature error
    # (Richardson's extrapolation of two midpoint grids removes the latter's h^2 term).
    totals = [
        grid_integral_2d(lambda x: trained.log_prob(x, solver="rk4", steps=16).detach(),
                         0.0, 1.0, side, torch.float32)
        for side in (48, 96)
    ]  # fmt: skip
    total = (4 * totals[1] - totals[0]) / 3
    assert total == pytest.approx(1.0, abs=0.01), totals


@pytest.mark.slow
def test_a_free_field_misses_the_normalisation_by_its_flux_through_the_faces(data) -> None:
    # Xie et al.'s raw field, reflected at the faces: a learned field keeps a normal
    # component there, the reflection piles mass against a face or leaves a layer empty,
    # and the computed density misses 1 (0.85 to 1.05 measured over couplings, widths and
    # training lengths on this data). This bound catches a lost or doubled density.
    torch.manual_seed(0)
    model = pushforward.build("reflected-fm", coupling="independent", boundary="free", **SMALL)
    train(model, data[0], steps=300)
    total = grid_integral_2d(
        lambda x: model.log_prob(x, solver="rk4", steps=16).detach(), 0.0, 1.0, 64, torch.float32
    )
    assert total == pytest.approx(1.0, abs=0.2)


def test_adaptive_and_fixed_step_likelihoods_agree(trained, data) -> None:
    x = data[0][:200]
    with torch.no_grad():
        adaptive = trained.log_prob(x)
        fixed = trained.log_prob(x, solver="rk4", steps=50)
    torch.testing.assert_close(adaptive, fixed, atol=2e-2, rtol=0)


# -- bad inputs --------------------------------------------------------------------------------


def test_empty_or_mismatched_bounds_are_errors_naming_them() -> None:
    with pytest.raises(ValueError, match=r"'high' must exceed 'low'.*feature 1 has low = 0.0"):
        pushforward.build("reflected-fm", features=3, low=[0, 0, 0], high=[1, 0, 1])
    with pytest.raises(ValueError, match=r"feature 0 has low = 2.0 >= high = 1.0"):
        pushforward.build("reflected-fm", features=2, low=2.0, high=1.0)
    with pytest.raises(ValueError, match="option 'low' has 3 values for 2 features"):
        pushforward.build("reflected-fm", features=2, low=[0, 0, 0])
    with pytest.raises(ValueError, match="option 'high' must be finite: feature 1 is inf"):
        pushforward.build("reflected-fm", features=2, high=[1.0, math.inf])
    with pytest.raises(ValueError, match="option 'low' must be a number or a list"):
        pushforward.build("reflected-fm", features=2, low="zero")
    with pytest.raises(ValueError, match="the 'cosine' path leaves the box"):
        pushforward.build("reflected-fm", features=2, path="cosine")
    assert isinstance(
        pushforward.build("reflected-fm", features=2, path="polynomial"), FlowMatching
    )


def test_data_outside_the_box_or_not_finite_are_errors_naming_the_row() -> None:
    model = pushforward.build("reflected-fm", features=2, low=[0.0, -1.0], high=[1.0, 1.0])
    x = model.base.sample(5)
    assert model.check_points(x) is x
    outside = x.clone()
    outside[3, 1] = 1.5
    outside[4, 0] = -0.1
    message = r"row 3 of the data lies outside the box: feature 1 is 1.5, the box has \[-1.0, 1.0\]"
    for answer in (model.loss, model.log_prob, model.check_points, model.transport):
        with pytest.raises(ValueError, match=message):
            answer(outside)
    broken = x.clone()
    broken[2, 0] = math.nan
    with pytest.raises(ValueError, match=r"data contains NaN or Inf values \(first in row 2\)"):
        model.check_points(broken)
    for answer in (model.loss, model.log_prob):
        with pytest.raises(ValueError, match="data contains NaN or Inf"):
            answer(broken)
    on_the_faces = torch.tensor([[0.0, -1.0], [1.0, 1.0]])
    assert torch.isfinite(model.log_prob(on_the_faces)).all()


def test_a_data_standardisation_is_refused_a_context_one_accepted() -> None:
    model = pushforward.build("reflected-fm", features=2, context=1)
    standardize = Standardize(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="box points are never standardised"):
        model.set_preprocessing(Preprocessing(data=standardize))
    context_map = Standardize(torch.zeros(1), 2 * torch.ones(1))
    assert model.set_preprocessing(Preprocessing(context=context_map)) is model
