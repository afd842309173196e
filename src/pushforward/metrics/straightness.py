"""How straight the trajectories of a flow are (Liu et al. 2023, "Flow Straight and Fast")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def stack_states(states: Sequence[Tensor] | Tensor, name: str) -> Tensor:
    """Stack a trajectory into ``(K + 1, n, d)``, the events flattened.

    Args:
        states: a tensor ``(K + 1, n, *event)`` or a sequence of ``K + 1`` tensors
            ``(n, *event)``.
        name: what the states are, for error messages.

    Returns:
        ``(K + 1, n, d)``.
    """
    if isinstance(states, Tensor):
        stacked = states
    else:
        states = list(states)
        if not states:
            raise ValueError(f"{name} is empty")
        shapes = {tuple(s.shape) for s in states}
        if len(shapes) != 1:
            raise ValueError(f"all {name} must have the same shape, got {sorted(shapes)}")
        stacked = torch.stack(states)
    if stacked.dim() < 3:
        raise ValueError(
            f"{name} must be (steps, n, *event) or a list of (n, *event) tensors, "
            f"got shape {tuple(stacked.shape)}"
        )
    return stacked.reshape(stacked.shape[0], stacked.shape[1], -1)


def time_grid(times: Sequence[float] | Tensor, steps: int, like: Tensor) -> Tensor:
    """Check a strictly monotone time grid of ``steps`` points; ``(steps,)`` like ``like``."""
    grid = torch.as_tensor(times, dtype=like.dtype, device=like.device).reshape(-1)
    if grid.numel() != steps:
        raise ValueError(f"got {grid.numel()} times for {steps} states")
    if steps < 2:
        raise ValueError("a trajectory needs at least 2 states")
    increments = grid.diff()
    if not (bool((increments > 0).all()) or bool((increments < 0).all())):
        raise ValueError("times must be strictly increasing or strictly decreasing")
    return grid


@torch.no_grad()
def straightness(path: Sequence[Tensor] | Tensor, times: Sequence[float] | Tensor) -> float:
    r"""The straightness of ODE trajectories from their states on a time grid.

    Liu et al. define, for a flow on :math:`t \in [0, 1]`,

    .. math:: S = \int_0^1 E\,\lVert (x_1 - x_0) - v_t \rVert^2\, dt,

    zero exactly when every trajectory is a straight line run at constant speed.
    Here :math:`v_t` on :math:`[t_k, t_{k+1}]` is the finite difference
    :math:`(x_{k+1} - x_k) / (t_{k+1} - t_k)` and the integral the sum weighted by
    :math:`|t_{k+1} - t_k|`. A grid from :math:`t_0` to :math:`t_K` other than
    :math:`[0, 1]` is first mapped to :math:`s = (t - t_0) / T \in [0, 1]`,
    :math:`T = t_K - t_0` (either sign), so a time-reversed or rescaled solve of the
    same trajectories gives the same value:

    .. math:: S = \sum_{k} |\Delta s_k|\; \frac{1}{n}\sum_{i}
        \Big\lVert (x^i_K - x^i_0) - \frac{x^i_{k+1} - x^i_k}{\Delta s_k}\Big\rVert^2

    The norm sums over the (flattened) event, the mean runs over trajectories. Only
    straight lines run at constant speed give 0: a straight line with varying speed
    does not.

    References:
        Liu et al. (2023), Flow Straight and Fast: Learning to Generate and Transfer
        Data with Rectified Flow.

    Args:
        path: ``(K + 1, n, *event)`` or ``K + 1`` tensors ``(n, *event)``, the states
            at ``times`` (as returned by a solver asked for the path).
        times: ``(K + 1,)``, strictly monotone.

    Returns:
        :math:`S` as a Python float.
    """
    states = stack_states(path, "path")
    if not states.is_floating_point():
        states = states.to(torch.get_default_dtype())
    grid = time_grid(times, states.shape[0], states)
    steps = grid.diff() / (grid[-1] - grid[0])
    chord = states[-1] - states[0]
    velocities = states.diff(dim=0) / steps[:, None, None]
    deviation = (chord[None] - velocities).square().sum(dim=-1).mean(dim=-1)
    return float((steps * deviation).sum())


@torch.no_grad()
def velocity_straightness(
    x0: Tensor,
    x1: Tensor,
    velocities: Sequence[Tensor] | Tensor,
    times: Sequence[float] | Tensor,
) -> float:
    r"""The straightness of a flow from its velocities evaluated along the trajectories.

    .. math:: S = \int_0^1 E\,\lVert (x_1 - x_0) - T\, v_{t(s)} \rVert^2\, ds,
        \quad t(s) = t_0 + s T, \quad T = t_K - t_0,

    which for :math:`t \in [0, 1]` is Liu et al.'s
    :math:`\int_0^1 E\lVert (x_1 - x_0) - v_t\rVert^2 dt` (other grids are mapped to
    :math:`[0, 1]` as in :func:`straightness`, so both functions agree). The velocities
    :math:`v_{t_k}(x_{t_k})` are given at the grid times and the integral is the
    trapezoidal rule, so the error is :math:`O(\Delta t^2)`. Use this when the
    velocity field was evaluated along the solve, :func:`straightness` when only the
    states are known.

    References:
        Liu et al. (2023), Flow Straight and Fast: Learning to Generate and Transfer
        Data with Rectified Flow.

    Args:
        x0: ``(n, *event)``, the states at ``times[0]``.
        x1: ``(n, *event)``, the states at ``times[-1]``.
        velocities: ``(K + 1, n, *event)`` or ``K + 1`` tensors ``(n, *event)``.
        times: ``(K + 1,)``, strictly monotone.

    Returns:
        :math:`S` as a Python float.
    """
    fields = stack_states(velocities, "velocities")
    if not fields.is_floating_point():
        fields = fields.to(torch.get_default_dtype())
    start = x0.reshape(x0.shape[0], -1).to(fields.dtype)
    end = x1.reshape(x1.shape[0], -1).to(fields.dtype)
    if start.shape != fields.shape[1:] or end.shape != fields.shape[1:]:
        raise ValueError(
            f"x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} must match the shape of one "
            f"velocity ({tuple(fields.shape[1:])} after flattening)"
        )
    grid = time_grid(times, fields.shape[0], fields)
    duration = grid[-1] - grid[0]
    steps = grid.diff() / duration
    deviation = ((end - start)[None] - duration * fields).square().sum(dim=-1).mean(dim=-1)
    return float((steps * (deviation[1:] + deviation[:-1]) / 2).sum())
