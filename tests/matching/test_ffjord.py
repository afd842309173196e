"""``ffjord``: the likelihood of a training solve, its estimators, gradients and memory."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import pushforward
from pushforward.distributions import StandardNormal
from pushforward.matching.ffjord import FFJORD
from pushforward.metrics.memory import saved_tensor_bytes
from tests.contract import grid_integral_2d, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


class LinearField(nn.Module):
    """``v(x, t) = A x``: the flow is ``exp(t A)`` and ``div v = tr A`` everywhere."""

    def __init__(self, matrix: Tensor) -> None:
        super().__init__()
        self.matrix = nn.Parameter(matrix.clone())

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        return x @ self.matrix.T


def small(**options: object) -> FFJORD:
    torch.manual_seed(0)
    model = pushforward.build("ffjord", features=2, hidden=[16, 16], time_embedding=8, **options)
    assert isinstance(model, FFJORD)
    return model.double()


def points(n: int, seed: int = 3) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_linear_field_changes_log_density_by_minus_t_trace() -> None:
    matrix = torch.tensor([[0.3, -0.7], [0.2, -0.5]], dtype=torch.float64)
    for end_time in (1.0, 2.5):
        model = FFJORD(
            LinearField(matrix),
            StandardNormal((2,)),
            training_solver="dopri5",
            training_atol=1e-10,
            training_rtol=1e-10,
            end_time=end_time,
        ).double()
        x = points(5)
        terms = model.likelihood_terms(x)
        change = terms.log_prob - model.base.log_prob(terms.base_point)
        expected = torch.full((5,), -end_time * float(torch.trace(matrix)), dtype=torch.float64)
        torch.testing.assert_close(change, expected, atol=1e-8, rtol=0)
        # The base point is exp(-T A) x.
        torch.testing.assert_close(
            terms.base_point, x @ torch.linalg.matrix_exp(-end_time * matrix).T, atol=1e-8, rtol=0
        )


def test_linear_field_with_hutchinson_is_exact_for_rademacher_probes_of_a_diagonal_field() -> None:
    # eps^T A eps = tr A exactly for a diagonal A and eps in {-1, 1}^D.
    matrix = torch.diag(torch.tensor([0.4, -0.9], dtype=torch.float64))
    model = FFJORD(
        LinearField(matrix),
        StandardNormal((2,)),
        training_solver="rk4",
        training_steps=20,
        training_divergence="hutchinson",
    ).double()
    terms = model.likelihood_terms(points(6))
    change = terms.log_prob - model.base.log_prob(terms.base_point)
    torch.testing.assert_close(change, torch.full((6,), 0.5, dtype=torch.float64))


def test_exact_trace_equals_hutchinson_average_within_its_standard_error() -> None:
    exact = small(training_solver="rk4", training_steps=6)
    hutchinson = small(training_solver="rk4", training_steps=6, training_divergence="hutchinson")
    hutchinson.load_state_dict(exact.state_dict())
    x = points(4)
    with torch.no_grad():
        truth = exact.likelihood_terms(x).log_prob
        draws = 4000
        repeated = x.repeat(draws, 1)
        generator = torch.Generator().manual_seed(11)
        estimates = hutchinson.likelihood_terms(repeated, generator=generator).log_prob
    estimates = estimates.reshape(draws, 4)
    mean, error = estimates.mean(0), estimates.std(0) / math.sqrt(draws)
    assert bool((error > 0).all())
    z = (mean - truth).abs() / error
    assert bool((z < 4).all()), (mean, truth, error)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_frobenius_regulariser_is_unbiased(noise: str) -> None:
    # For v = A x, the integrand ||J eps||^2 has mean ||A||_F^2 at every time.
    matrix = torch.tensor([[0.3, -0.7], [0.2, -0.5]], dtype=torch.float64)
    model = FFJORD(
        LinearField(matrix),
        StandardNormal((2,)),
        training_solver="rk4",
        training_steps=4,
        jacobian=1.0,
        kinetic=1.0,
        noise=noise,
    ).double()
    draws = 20000
    x = points(1).repeat(draws, 1)
    with torch.no_grad():
        terms = model.likelihood_terms(
            x, kinetic=True, jacobian=True, generator=torch.Generator().manual_seed(5)
        )
    frobenius = float(matrix.square().sum())
    error = float(terms.jacobian.std()) / math.sqrt(draws)
    assert abs(float(terms.jacobian.mean()) - frobenius) < 4 * error
    # Kinetic energy of the exact flow x_t = exp(-(1 - t) A) x over [0, 1].
    grid = torch.linspace(0, 1, 2001, dtype=torch.float64)
    path = torch.stack([torch.linalg.matrix_exp(-(1 - t) * matrix) @ x[0] for t in grid])
    speed = (path @ matrix.T).square().sum(1)
    kinetic = float(torch.trapezoid(speed, grid))
    assert float(terms.kinetic[0]) == pytest.approx(kinetic, rel=1e-4)


def test_adjoint_and_direct_backpropagation_give_the_same_gradients() -> None:
    tight = {"training_atol": 1e-10, "training_rtol": 1e-10}
    direct = small(kinetic=0.1, jacobian=0.1, learn_end_time=True, **tight)
    adjoint = small(kinetic=0.1, jacobian=0.1, learn_end_time=True, adjoint=True, **tight)
    adjoint.load_state_dict(direct.state_dict())
    x = points(8)
    gradients = []
    for model in (direct, adjoint):
        model.train()
        torch.manual_seed(7)  # the same Hutchinson probe for the Frobenius term
        model.zero_grad()
        model.loss(x).backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert gradients[0].keys() == gradients[1].keys()
    assert "log_end_time" in gradients[0]
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-5, rtol=1e-5)


def test_adjoint_carries_the_gradient_of_a_context_embedding() -> None:
    torch.manual_seed(0)
    options = {"hidden": [8], "time_embedding": 4, "embedding": "mlp", "embedding_features": 3}
    models = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        models.append(
            pushforward.build(
                "ffjord",
                features=2,
                context=4,
                adjoint=adjoint,
                training_atol=1e-9,
                training_rtol=1e-9,
                embedding_hidden=[8],
                **options,
            ).double()
        )
    randomize_(models[0], 0.3, torch.Generator().manual_seed(1))
    models[1].load_state_dict(models[0].state_dict())
    x, c = points(6), points(6, seed=4).repeat(1, 2)
    grads = []
    for model in models:
        model.loss(x, c).backward()
        embedding = model.context_embedding
        assert embedding is not None
        grads.append([p.grad for p in embedding.parameters()])
    for direct, adjoint in zip(*grads, strict=True):
        assert direct is not None and adjoint is not None and float(direct.abs().sum()) > 0
        torch.testing.assert_close(adjoint, direct, atol=1e-6, rtol=1e-5)


def _saved_bytes(model: FFJORD, x: Tensor) -> int:
    with saved_tensor_bytes() as saved:
        loss = model.loss(x)
    loss.backward()
    return saved.total


def test_adjoint_memory_does_not_grow_with_the_number_of_steps() -> None:
    x = points(64)
    direct = [_saved_bytes(small(training_solver="rk4", training_steps=n), x) for n in (4, 16)]
    adjoint = [
        _saved_bytes(small(training_solver="rk4", training_steps=n, adjoint=True), x)
        for n in (4, 16)
    ]
    assert direct[1] > 3 * direct[0]  # back-propagation through the solver keeps every stage
    assert adjoint[1] == adjoint[0]  # the adjoint keeps the end state only
    assert adjoint[0] < direct[0] / 4


def test_trained_density_integrates_to_one() -> None:
    data = pushforward.data.load_dataset("builtin:moons", n=500, seed=0).values.double()
    data = (data - data.mean(0)) / data.std(0)
    model = small(training_solver="rk4", training_steps=4, solver="rk4")
    history = pushforward.fit(
        model, data, steps=60, batch_size=128, lr=1e-2, log_every=10, quiet=True
    )
    assert history.loss[-1] < history.loss[0]
    model.eval()
    integral = grid_integral_2d(
        lambda grid: model.log_prob(grid, solver="rk4", steps=8), -4.5, 4.5, 80
    )
    assert integral == pytest.approx(1.0, abs=0.02)


@settings(max_examples=15, deadline=None)
@given(st.floats(0.2, 3.0), st.integers(1, 6))
def test_end_time_scales_the_field(end_time: float, rows: int) -> None:
    base = small()
    scaled = small(end_time=end_time)
    x = points(rows)
    t = torch.full((rows,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(scaled.velocity(x, t), end_time * base.velocity(x, t))
    _, divergence = base.velocity_and_divergence(x, t)
    _, scaled_divergence = scaled.velocity_and_divergence(x, t)
    torch.testing.assert_close(scaled_divergence, end_time * divergence)


def test_regularisers_enter_the_training_loss_only() -> None:
    plain, regularised = small(), small(kinetic=0.5, jacobian=0.5)
    x = points(16)
    regularised.eval()
    torch.testing.assert_close(regularised.loss(x), plain.loss(x))
    regularised.train()
    assert float(regularised.loss(x)) > float(plain.loss(x))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"training_solver": "rk4"}, "training_steps"),
        ({"training_steps": 5}, "fixed-step"),
        ({"noise": "gaussian"}, "noise"),
        ({"noise": "sobol"}, "noise"),
        ({"adjoint": "yes"}, "adjoint"),
        ({"kinetic": -1.0}, "kinetic"),
        ({"end_time": 0.0}, "end_time"),
        ({"training_divergence": "trace"}, "training_divergence"),
        ({"base": "empirical"}, "empirical"),
    ],
)
def test_bad_options_name_the_problem(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pushforward.build("ffjord", features=2, **options)


@pytest.mark.parametrize("parameterization", ["velocity", "data"])
def test_hutchinson_log_prob_by_the_networks_own_jvp_equals_forward_mode(
    parameterization: str,
) -> None:
    torch.manual_seed(0)
    model = pushforward.build(
        "fm", features=2, hidden=[16, 16], time_embedding=8, parameterization=parameterization
    ).double()
    randomize_(model, 0.3, torch.Generator().manual_seed(2))
    assert model.has_own_jvp()
    x = points(8)
    options = {"solver": "rk4", "steps": 6, "divergence": "hutchinson", "probes": 3}
    fast = model.log_prob(x, generator=torch.Generator().manual_seed(4), **options)
    model.has_own_jvp = lambda: False  # type: ignore[method-assign]
    generic = model.log_prob(x, generator=torch.Generator().manual_seed(4), **options)
    torch.testing.assert_close(fast, generic)
