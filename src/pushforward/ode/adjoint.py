"""Solving an ODE with gradients by the adjoint method (torchdiffeq's ``odeint_adjoint``)."""

from __future__ import annotations

from collections.abc import Sequence

import torchdiffeq
from torch import Tensor, nn

from pushforward.ode.solvers import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    ODESolution,
    State,
    VectorField,
    _as_tuple,
    _check_method,
    _CountedField,
    _output_times,
)

_TORCHDIFFEQ_FIXED = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "rk4": "rk4"}
"""Our fixed-step methods by their torchdiffeq names (its ``rk4`` is Kutta's 3/8 rule, of
the same order as the classical tableau)."""


def solve_ode_adjoint(
    f: VectorField,
    x0: State,
    time_grid: Tensor | Sequence[float],
    method: str,
    parameters: Sequence[nn.Parameter],
    *,
    steps: int | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> ODESolution:
    r"""Solves :math:`dx/dt = f(t, x)` and back-propagates by the adjoint ODE.

    The forward solve keeps no graph: the gradient of a loss :math:`L(x(t_1))` comes
    from integrating the adjoint :math:`a(t) = \partial L / \partial x(t)` backwards,

    .. math::
        \dot a = -a^\top \partial f / \partial x, \qquad
        \frac{dL}{d\theta} = \int_{t_1}^{t_0} -a^\top \partial f / \partial \theta \, dt,

    together with :math:`x(t)` itself, so memory does not grow with the number of
    function evaluations (it is that of one evaluation of ``f``). The gradients
    agree with back-propagation through the solver up to the solver's error.
    Gradients reach ``x0`` and ``parameters`` only: a tensor ``f`` closes over that
    needs a gradient (a context computed by a network) must be part of the state,
    with a zero derivative.

    References: Pontryagin et al. (1962), The Mathematical Theory of Optimal Processes;
    Chen et al. (2018), Neural Ordinary Differential Equations.

    Args:
        f: the vector field ``f(t, x)`` (see :func:`~pushforward.ode.solvers.solve_ode`).
        x0: the initial state at ``time_grid[0]``, a tensor or a tuple of tensors.
        time_grid: 1-D, at least 2 strictly monotone times; the state at the last one
            is returned.
        method: one of :data:`~pushforward.ode.solvers.FIXED_STEP_METHODS` (``steps``
            uniform steps) or :data:`~pushforward.ode.solvers.ADAPTIVE_METHODS`; the
            adjoint solve uses the same method and tolerances.
        parameters: the parameters ``f`` uses that need gradients.
        steps: steps of a fixed-step method (required for those).
        atol: absolute tolerance of adaptive methods.
        rtol: relative tolerance of adaptive methods.

    Returns:
        An :class:`~pushforward.ode.solvers.ODESolution`: the final state and the
        evaluations of ``f`` of the forward solve.
    """
    _check_method(method)
    tensor_state = isinstance(x0, Tensor)
    parts = _as_tuple(x0, "x0")
    times = _output_times(time_grid, None, parts[0])
    field = _CountedField(f, tensor_state, [p.shape for p in parts])
    options: dict[str, object] = {}
    if method in FIXED_STEP_METHODS:
        if steps is None:
            raise ValueError(f"the fixed-step method {method!r} needs steps= (a positive integer)")
        options["step_size"] = float(abs(times[-1] - times[0])) / int(steps)
        name = _TORCHDIFFEQ_FIXED[method]
    else:
        assert method in ADAPTIVE_METHODS
        name = method
    trajectory = torchdiffeq.odeint_adjoint(
        field,
        parts,
        times[[0, -1]],
        method=name,
        atol=atol,
        rtol=rtol,
        options=options,
        adjoint_params=tuple(parameters),
    )
    final = tuple(part[-1] for part in trajectory)
    state: State = final[0] if tensor_state else final
    return ODESolution(state=state, times=times[[0, -1]], path=None, nfe=field.calls)


__all__ = ["solve_ode_adjoint"]
