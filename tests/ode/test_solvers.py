"""ODE solvers against closed-form solutions: orders, tolerances, directions, NFE, hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pushforward.ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, TABLEAUS, solve_ode

ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
F64 = torch.float64
# A damped rotation: non-normal enough that no error cancels by symmetry.
A = torch.tensor([[-0.5, 2.0], [-1.5, 0.3]], dtype=F64)
X0 = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-1.2, 0.1]], dtype=F64)


def linear_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x @ A.T


def linear_solution(t: float, x0: torch.Tensor = X0) -> torch.Tensor:
    return x0 @ torch.linalg.matrix_exp(t * A).T


def riccati_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x**2


def riccati_solution(t: float, x0: torch.Tensor) -> torch.Tensor:
    return x0 / (1 - t * x0)


def logistic_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return 3.0 * x * (1 - x)


def logistic_solution(t: float, x0: torch.Tensor) -> torch.Tensor:
    return x0 / (x0 + (1 - x0) * math.exp(-3.0 * t))


def observed_order(method: str, field, solution, x0: torch.Tensor) -> float:
    step_counts = [8, 16, 32, 64]
    errors = []
    for n in step_counts:
        state = solve_ode(field, x0, [0.0, 1.0], method, steps=n).state
        errors.append((state - solution(1.0, x0)).abs().max().item())
    slope = np.polyfit(np.log([1 / n for n in step_counts]), np.log(errors), 1)[0]
    return float(slope)


def test_tableaus_are_consistent() -> None:
    for name, tableau in TABLEAUS.items():
        assert sum(tableau.b) == pytest.approx(1.0), name
        for c_i, a_i in zip(tableau.c, tableau.a, strict=True):
            assert sum(a_i) == pytest.approx(c_i), name
    assert set(TABLEAUS) == set(FIXED_STEP_METHODS)


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_order_on_linear_ode(method: str) -> None:
    slope = observed_order(method, linear_field, linear_solution, X0)
    assert abs(slope - ORDERS[method]) < 0.2


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
@pytest.mark.parametrize(
    ("field", "solution", "x0"),
    [
        (riccati_field, riccati_solution, [[0.2], [0.5], [-0.7]]),
        (logistic_field, logistic_solution, [[0.1], [0.4], [0.9]]),
    ],
    ids=["riccati", "logistic"],
)
def test_order_on_nonlinear_ode(method: str, field, solution, x0) -> None:
    slope = observed_order(method, field, solution, torch.tensor(x0, dtype=F64))
    assert abs(slope - ORDERS[method]) < 0.2


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_adaptive_meets_tolerance(method: str) -> None:
    atol = rtol = 1e-6
    exact = linear_solution(1.0)
    result = solve_ode(linear_field, X0, [0.0, 1.0], method, atol=atol, rtol=rtol)
    assert ((result.state - exact).abs() <= 10 * (atol + rtol * exact.abs())).all()
    x0 = torch.tensor([[0.2], [0.5], [-0.7]], dtype=F64)
    exact = riccati_solution(1.0, x0)
    state = solve_ode(riccati_field, x0, [0.0, 1.0], method, atol=atol, rtol=rtol).state
    assert ((state - exact).abs() <= 10 * (atol + rtol * exact.abs())).all()


@pytest.mark.parametrize("method", ["rk4", "heun", "dopri5"])
def test_backward_integration_returns_to_start(method: str) -> None:
    steps = 64 if method != "dopri5" else None
    kwargs = {"atol": 1e-9, "rtol": 1e-9}
    forward = solve_ode(linear_field, X0, [0.0, 1.0], method, steps=steps, **kwargs)
    backward = solve_ode(linear_field, forward.state, [1.0, 0.0], method, steps=steps, **kwargs)
    tolerance = 1e-7 if method != "heun" else 1e-3
    assert torch.allclose(backward.state, X0, atol=tolerance)
    assert backward.times[0] == 1.0 and backward.times[-1] == 0.0
    # Backward alone also matches the closed form x(-1) = exp(-A) x(0).
    alone = solve_ode(linear_field, X0, [0.0, -1.0], method, steps=steps, **kwargs).state
    assert torch.allclose(alone, linear_solution(-1.0), atol=tolerance)


def tuple_field(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
    x, _ = state
    return x @ A.T, x


@pytest.mark.parametrize(("method", "steps"), [("rk4", 64), ("dopri5", None)])
def test_tuple_state(method: str, steps: int | None) -> None:
    # (x, y) with dy/dt = x: y(1) = A^{-1} (exp(A) - I) x0.
    y0 = torch.zeros_like(X0)
    result = solve_ode(tuple_field, (X0, y0), [0.0, 1.0], method, steps=steps, atol=1e-9, rtol=1e-9)
    x1, y1 = result.state
    expected_y = torch.linalg.solve(A, torch.linalg.matrix_exp(A) - torch.eye(2, dtype=F64))
    assert isinstance(result.state, tuple)
    assert torch.allclose(x1, linear_solution(1.0), atol=1e-7)
    assert torch.allclose(y1, X0 @ expected_y.T, atol=1e-7)


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_fixed_step_nfe_is_exact(method: str) -> None:
    calls = []

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return linear_field(t, x)

    result = solve_ode(field, X0, [0.0, 1.0], method, steps=7)
    assert result.nfe == len(calls) == 7 * STAGES[method]
    on_grid = solve_ode(field, X0, [0.0, 0.1, 0.5, 1.0], method)
    assert on_grid.nfe == 3 * STAGES[method]


def test_adaptive_nfe_is_exact_and_time_follows_state() -> None:
    calls = []

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return -x

    x0 = torch.randn(3, 2)
    result = solve_ode(field, x0, [0.0, 1.0], "dopri5")
    assert result.nfe == len(calls) > 6
    assert all(t.dim() == 0 and t.dtype == torch.float32 for t in calls)
    assert result.state.dtype == torch.float32 and result.times.dtype == torch.float32


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_return_path_gives_states_at_grid(method: str) -> None:
    grid = [0.0, 0.25, 0.6, 1.0]
    result = solve_ode(linear_field, X0, grid, method, return_path=True, atol=1e-9, rtol=1e-9)
    assert result.path is not None and len(result.path) == len(grid)
    assert torch.equal(result.path[0], X0)
    assert torch.equal(result.times, torch.tensor(grid, dtype=F64))
    assert torch.equal(result.path[-1], result.state)
    if method == "dopri5":
        for t, state in zip(grid, result.path, strict=True):
            assert torch.allclose(state, linear_solution(t), atol=1e-7)
    stepped = solve_ode(linear_field, X0, [0.0, 1.0], method, steps=4, return_path=True)
    assert len(stepped.path) == 5
    assert torch.allclose(stepped.times, torch.linspace(0, 1, 5, dtype=F64))
    assert solve_ode(linear_field, X0, grid, method).path is None


def test_fixed_steps_along_a_grid_equal_manual_steps() -> None:
    grid = [0.0, 0.3, 1.0]
    state = solve_ode(linear_field, X0, grid, "euler").state
    manual = X0 + 0.3 * linear_field(None, X0)
    manual = manual + 0.7 * linear_field(None, manual)
    assert torch.allclose(state, manual, atol=1e-15)


def test_step_hook_is_applied_after_each_step() -> None:
    # Euler on a rotation with re-projection onto the circle turns by exactly
    # atan(h) per step, so after N steps the angle is N atan(1 / N).
    def rotation(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([-x[:, 1], x[:, 0]], dim=-1)

    times = []

    def project(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        times.append(float(t))
        return x / x.norm(dim=-1, keepdim=True)

    x0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    n = 10
    result = solve_ode(rotation, x0, [0.0, 1.0], "euler", steps=n, step_hook=project)
    angle = n * math.atan(1 / n)
    expected = torch.tensor([[math.cos(angle), math.sin(angle)]], dtype=F64)
    assert torch.allclose(result.state, expected, atol=1e-12)
    assert times == pytest.approx([k / n for k in range(1, n + 1)])
    free = solve_ode(rotation, x0, [0.0, 1.0], "euler", steps=n).state
    assert free.norm() > 1.01


def test_gradients_flow_to_initial_state_and_parameters() -> None:
    rate = torch.tensor(0.7, dtype=F64, requires_grad=True)
    x0 = torch.tensor([[1.5], [-0.5]], dtype=F64, requires_grad=True)

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return rate * x

    for method, steps in [("rk4", 32), ("dopri5", None)]:
        state = solve_ode(field, x0, [0.0, 1.0], method, steps=steps, atol=1e-10, rtol=1e-10)
        grad_rate, grad_x0 = torch.autograd.grad(state.state.sum(), (rate, x0))
        # x(1) = x0 e^a: d/da = x0 e^a, d/dx0 = e^a.
        assert grad_rate.item() == pytest.approx(x0.sum().item() * math.exp(0.7), rel=1e-7)
        assert torch.allclose(grad_x0, torch.full_like(x0, math.exp(0.7)), rtol=1e-7)


def test_image_state_and_float32() -> None:
    x0 = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))

    def decay(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -x

    for method in ("rk4", "dopri5"):
        steps = 16 if method == "rk4" else None
        result = solve_ode(decay, x0, torch.tensor([0.0, 1.0], dtype=F64), method, steps=steps)
        assert result.state.shape == x0.shape and result.state.dtype == torch.float32
        assert torch.allclose(result.state, x0 * math.exp(-1), atol=3e-5)


def test_unknown_method_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'rk4'.*valid methods: euler"):
        solve_ode(linear_field, X0, [0.0, 1.0], "rk5")


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ([0.0], "at least 2"),
        ([[0.0, 1.0]], "1-D"),
        ([0.0, 0.5, 0.5, 1.0], "strictly"),
        ([0.0, 0.7, 0.3], "strictly"),
        ([0.0, float("nan")], "NaN"),
    ],
)
def test_bad_grid_is_an_error(grid, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve_ode(linear_field, X0, grid, "rk4")


def test_other_bad_inputs_are_errors() -> None:
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        solve_ode(linear_field, X0, [0.0, 1.0], "rk4", steps=0)
    with pytest.raises(ValueError, match="step_hook needs a fixed-step method"):
        solve_ode(linear_field, X0, [0.0, 1.0], "dopri5", step_hook=lambda t, x: x)
    with pytest.raises(TypeError, match="floating-point"):
        solve_ode(linear_field, torch.ones(2, 2, dtype=torch.long), [0.0, 1.0])
    with pytest.raises(ValueError, match="returned shapes"):
        solve_ode(lambda t, x: x[:, :1], X0, [0.0, 1.0], "euler", steps=2)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_an_additive_advance_reproduces_the_plain_runge_kutta_steps(method):
    # advance(y, increment) = y + increment is the plain method, summed in another order.
    x0 = torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=torch.float64)

    def field(t, x):
        return torch.stack([-x[:, 1] * (1 + t), x[:, 0]], dim=1)

    plain = solve_ode(field, x0, [0.0, 1.0], method, steps=17).state
    added = solve_ode(field, x0, [0.0, 1.0], method, steps=17,
                      advance=lambda y, increment: y + increment).state  # fmt: skip
    torch.testing.assert_close(added, plain, atol=1e-13, rtol=0)
    with pytest.raises(ValueError, match="advance needs a fixed-step method"):
        solve_ode(field, x0, [0.0, 1.0], "dopri5", advance=lambda y, increment: y + increment)
