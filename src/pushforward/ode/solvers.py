"""ODE solvers: fixed-step Runge-Kutta methods on one loop, adaptive ones from torchdiffeq."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchdiffeq
from torch import Tensor

from pushforward.options import closest

#: A state is one tensor or a tuple of tensors (the augmented state of a likelihood solve).
State = Tensor | tuple[Tensor, ...]
#: A vector field ``f(t, state) -> d state / dt`` with ``t`` a 0-dim tensor.
VectorField = Callable[[Tensor, State], State]
#: Called after each fixed step as ``hook(t, state) -> state`` (projection, reflection, ...).
StepHook = Callable[[Tensor, State], State]
Advance = Callable[[State, State], State]
"""``advance(state, increment) -> state``: how a Runge-Kutta stage moves from a state."""
TupleAdvance = Callable[[tuple[Tensor, ...], tuple[Tensor, ...]], tuple[Tensor, ...]]
""":data:`Advance` on the tuple states of :func:`runge_kutta_step`."""


@dataclass(frozen=True)
class ButcherTableau:
    r"""The coefficients of an explicit Runge-Kutta method.

    One step from :math:`(t, y)` with step :math:`h` is

    .. math::
        k_i = f\big(t + c_i h,\; y + h \sum_{j<i} a_{ij} k_j\big), \qquad
        y' = y + h \sum_i b_i k_i.

    References: Butcher (2016), Numerical Methods for Ordinary Differential Equations.

    Attributes:
        c: the nodes :math:`c_i`, one per stage.
        a: the rows :math:`(a_{i1}, \dots, a_{i,i-1})`, one per stage (the first is empty).
        b: the weights :math:`b_i`, one per stage.
        order: the global order of accuracy.
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int


TABLEAUS: dict[str, ButcherTableau] = {
    "euler": ButcherTableau(c=(0.0,), a=((),), b=(1.0,), order=1),
    "midpoint": ButcherTableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2),
    # Heun's method is the explicit trapezoidal rule: Euler predictor, trapezoid corrector.
    "heun": ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2),
    "rk4": ButcherTableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
        order=4,
    ),
}

FIXED_STEP_METHODS: tuple[str, ...] = ("euler", "midpoint", "heun", "rk4")
ADAPTIVE_METHODS: tuple[str, ...] = ("dopri5", "dopri8", "bosh3", "adaptive_heun")


@dataclass
class ODESolution:
    """The result of :func:`solve_ode`.

    Attributes:
        state: the state at the last output time, shaped like the initial state.
        times: the output times, 1-D, in the dtype and device of the state.
        path: the states at every output time (the first included) when
            ``return_path=True``, else ``None``.
        nfe: the number of evaluations of the vector field.
    """

    state: State
    times: Tensor
    path: list[State] | None
    nfe: int


class _CountedField:
    """Calls a vector field on tuple states and counts the calls (the solver's NFE)."""

    def __init__(self, field: VectorField, tensor_state: bool, shapes: list[torch.Size]) -> None:
        self.field = field
        self.tensor_state = tensor_state
        self.shapes = shapes
        self.calls = 0

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.calls += 1
        derivative = self.field(t, state[0] if self.tensor_state else state)
        parts = (derivative,) if isinstance(derivative, Tensor) else tuple(derivative)
        if self.calls == 1:
            got = [tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in parts]
            if got != [tuple(s) for s in self.shapes]:
                raise ValueError(
                    f"the vector field returned shapes {got}, "
                    f"the state has shapes {[tuple(s) for s in self.shapes]}"
                )
        return parts


def runge_kutta_step(
    field: Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]],
    t: Tensor,
    dt: Tensor,
    state: tuple[Tensor, ...],
    tableau: ButcherTableau,
    advance: TupleAdvance | None = None,
) -> tuple[Tensor, ...]:
    r"""One explicit Runge-Kutta step :math:`y' = y + h \sum_i b_i k_i` (:class:`ButcherTableau`).

    With ``advance`` every stage and the step are ``advance(y, h \sum_j a_{ij} k_j)``
    instead of the sum: a step along a manifold's exponential map from ``y``, as in the
    Runge-Kutta-Munthe-Kaas methods with the slopes taken in the tangent space at ``y``.

    References: Butcher (2016), Numerical Methods for Ordinary Differential Equations;
    Munthe-Kaas (1998), Runge-Kutta Methods on Lie Groups.

    Args:
        field: ``field(t, state) -> derivative`` on tuple states.
        t: the current time, 0-dim.
        dt: the signed step :math:`h`, 0-dim (negative when integrating backward).
        state: the current state, a tuple of tensors.
        tableau: the method's coefficients.
        advance: ``advance(state, increment) -> state`` on tuple states; ``None`` adds.

    Returns:
        The state at ``t + dt``, a tuple shaped like ``state``.
    """
    if advance is not None:
        return _advanced_step(field, t, dt, state, tableau, advance)
    slopes: list[tuple[Tensor, ...]] = []
    for c_i, a_i in zip(tableau.c, tableau.a, strict=True):
        stage = state
        for a_ij, k_j in zip(a_i, slopes, strict=False):
            # Zero coefficients are skipped: they cost a pass over the state for nothing.
            if a_ij != 0.0:
                stage = tuple(s + (a_ij * dt) * k for s, k in zip(stage, k_j, strict=True))
        slopes.append(field(t + c_i * dt, stage))
    new_state = state
    for b_i, k_i in zip(tableau.b, slopes, strict=True):
        if b_i != 0.0:
            new_state = tuple(s + (b_i * dt) * k for s, k in zip(new_state, k_i, strict=True))
    return new_state


def _advanced_step(
    field: Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]],
    t: Tensor,
    dt: Tensor,
    state: tuple[Tensor, ...],
    tableau: ButcherTableau,
    advance: TupleAdvance,
) -> tuple[Tensor, ...]:
    """:func:`runge_kutta_step` with each stage reached by ``advance`` from ``state``."""

    def combined(weights: Sequence[float], slopes: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        total = tuple(torch.zeros_like(s) for s in state)
        for weight, k in zip(weights, slopes, strict=False):
            if weight != 0.0:
                total = tuple(a + (weight * dt) * b for a, b in zip(total, k, strict=True))
        return total

    slopes: list[tuple[Tensor, ...]] = []
    for c_i, a_i in zip(tableau.c, tableau.a, strict=True):
        stage = state if not slopes else advance(state, combined(a_i, slopes))
        slopes.append(field(t + c_i * dt, stage))
    return advance(state, combined(tableau.b, slopes))


def _as_tuple(state: State, name: str) -> tuple[Tensor, ...]:
    parts = (state,) if isinstance(state, Tensor) else tuple(state)
    if not parts or not all(isinstance(p, Tensor) for p in parts):
        raise TypeError(f"{name} must be a tensor or a non-empty tuple of tensors")
    first = parts[0]
    for part in parts:
        if not part.is_floating_point():
            raise TypeError(f"{name} must hold floating-point tensors, got {part.dtype}")
        if part.dtype != first.dtype or part.device != first.device:
            raise TypeError(
                f"all tensors of {name} must share one dtype and device, got "
                f"{first.dtype} on {first.device} and {part.dtype} on {part.device}"
            )
    return parts


def _output_times(time_grid: Tensor | Sequence[float], steps: int | None, like: Tensor) -> Tensor:
    grid = torch.as_tensor(time_grid, dtype=like.dtype, device=like.device)
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(
            f"time_grid must be 1-D with at least 2 times, got shape {tuple(grid.shape)}"
        )
    if not bool(torch.isfinite(grid).all()):
        raise ValueError("time_grid holds a NaN or infinite time")
    gaps = grid[1:] - grid[:-1]
    if not (bool((gaps > 0).all()) or bool((gaps < 0).all())):
        raise ValueError(
            f"time_grid must be strictly increasing or strictly decreasing, got {grid.tolist()}"
        )
    if steps is None:
        return grid
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return torch.linspace(grid[0], grid[-1], steps + 1, dtype=like.dtype, device=like.device)


def _check_method(method: str) -> None:
    valid = list(FIXED_STEP_METHODS + ADAPTIVE_METHODS)
    if method not in valid:
        raise ValueError(
            f"unknown ODE method {method!r}{closest(str(method), valid)}; "
            f"valid methods: {', '.join(valid)}"
        )


def solve_ode(
    f: VectorField,
    x0: State,
    time_grid: Tensor | Sequence[float],
    method: str = "rk4",
    *,
    steps: int | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    return_path: bool = False,
    step_hook: StepHook | None = None,
    advance: Advance | None = None,
) -> ODESolution:
    r"""Solves :math:`dx/dt = f(t, x)`, :math:`x(t_0) = x_0`, over a time grid.

    Fixed-step methods (``euler``, ``midpoint``, ``heun``, ``rk4``) share one
    Runge-Kutta loop over :data:`TABLEAUS` and step along the grid (or along
    ``steps`` uniform steps of ``[grid[0], grid[-1]]``). Adaptive methods
    (``dopri5``, ``dopri8``, ``bosh3``, ``adaptive_heun``) call
    ``torchdiffeq.odeint``, which controls the local error to about
    ``atol + rtol * |x|``; the grid then only gives the output times. A
    decreasing grid integrates backward in time. Gradients flow through the
    steps to ``x0`` and to any parameters ``f`` uses.

    References: Butcher (2016), Numerical Methods for Ordinary Differential
    Equations; Dormand and Prince (1980), A family of embedded Runge-Kutta
    formulae; Chen et al. (2018), Neural Ordinary Differential Equations.

    Args:
        f: the vector field ``f(t, x)``; ``t`` is a 0-dim tensor in the dtype and
            device of the state, ``x`` is shaped like ``x0`` (a tensor
            ``(batch, *event)`` or a tuple of tensors) and so is the result.
        x0: the initial state at ``time_grid[0]``.
        time_grid: 1-D, at least 2 strictly monotone times.
        method: one of :data:`FIXED_STEP_METHODS` or :data:`ADAPTIVE_METHODS`.
        steps: when given, ``N`` uniform steps replace the grid (for adaptive
            methods, the ``N + 1`` uniform times are the output times).
        atol: absolute tolerance of adaptive methods.
        rtol: relative tolerance of adaptive methods.
        return_path: also return the state at every output time.
        step_hook: ``hook(t, state) -> state`` applied after each fixed step
            (to project onto a manifold or reflect into a domain); fixed-step
            methods only.
        advance: ``advance(state, increment) -> state`` replacing the sum in every
            stage and step of a fixed-step method (e.g. a manifold's exponential map,
            see :func:`runge_kutta_step`); fixed-step methods only.

    Returns:
        An :class:`ODESolution`: the final state (shaped like ``x0``), the output
        times ``(n_times,)``, the path when asked, and the exact number of
        evaluations of ``f``.
    """
    _check_method(method)
    if not callable(f):
        raise TypeError(f"the vector field f must be callable, got {type(f).__name__}")
    tensor_state = isinstance(x0, Tensor)
    parts = _as_tuple(x0, "x0")
    times = _output_times(time_grid, steps, parts[0])
    field = _CountedField(f, tensor_state, [p.shape for p in parts])

    def user_form(state: tuple[Tensor, ...]) -> State:
        return state[0] if tensor_state else state

    stepper = None
    if advance is not None:

        def stepper(state: tuple[Tensor, ...], increment: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            moved = advance(user_form(state), user_form(increment))
            return _as_tuple(moved, "the advance result")

    if method in ADAPTIVE_METHODS:
        if advance is not None:
            raise ValueError(
                f"advance needs a fixed-step method ({', '.join(FIXED_STEP_METHODS)}); "
                f"{method!r} chooses its own steps"
            )
        if step_hook is not None:
            raise ValueError(
                f"step_hook needs a fixed-step method ({', '.join(FIXED_STEP_METHODS)}); "
                f"{method!r} chooses its own steps"
            )
        # step_t makes the solver land on every output time: otherwise torchdiffeq
        # steps past it and reads a low-order interpolant there, which for dopri8
        # and bosh3 misses the tolerance by two orders of magnitude.
        trajectory = torchdiffeq.odeint(
            field,
            parts,
            times,
            method=method,
            atol=atol,
            rtol=rtol,
            options={"step_t": times},
        )
        path = [tuple(part[k] for part in trajectory) for k in range(times.numel())]
    else:
        tableau = TABLEAUS[method]
        state = parts
        path = [state]
        for k in range(times.numel() - 1):
            t, t_next = times[k], times[k + 1]
            state = runge_kutta_step(field, t, t_next - t, state, tableau, stepper)
            if step_hook is not None:
                state = _as_tuple(step_hook(t_next, user_form(state)), "the step_hook result")
            if return_path:
                path.append(state)
        if not return_path:
            path = [state]
    return ODESolution(
        state=user_form(path[-1]),
        times=times,
        path=[user_form(s) for s in path] if return_path else None,
        nfe=field.calls,
    )
