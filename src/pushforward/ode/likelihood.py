"""Log-likelihood of a continuous flow by the instantaneous change of variables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from pushforward.ode.divergence import (
    PROBE_KINDS,
    exact_divergence,
    hutchinson_divergence,
    make_probes,
)
from pushforward.ode.solvers import FIXED_STEP_METHODS, State, StepHook, solve_ode
from pushforward.options import closest

#: The divergence estimators :func:`log_likelihood` accepts.
DIVERGENCES: tuple[str, ...] = ("exact", "hutchinson")

Velocity = Callable[[Tensor, Tensor], Tensor]
VelocityAndDivergence = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
VelocityAndJvp = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(t, x, direction) -> (v, J v . direction)``: a field with its own Jacobian-vector product."""


@dataclass
class LikelihoodResult:
    """The result of :func:`log_likelihood`.

    Attributes:
        log_prob: :math:`\\log p(x)` at the data time, ``(batch,)``.
        base_point: the point the flow carries ``x`` to at the base time, ``(batch, *event)``.
        nfe: evaluations of the augmented dynamics (each one forward pass of the
            velocity vectorised over the divergence directions or probes).
    """

    log_prob: Tensor
    base_point: Tensor
    nfe: int


class AugmentedDynamics:
    r"""The joint dynamics :math:`d(x, \ell)/dt = (v(t, x), \nabla \cdot v(t, x))`.

    Holds the velocity and the estimator settings so that one object serves as
    the vector field of :func:`~pushforward.ode.solvers.solve_ode`. Hutchinson
    probes are fixed at construction and reused at every time (FFJORD), so the
    integrand is a smooth function of time that an adaptive solver can follow.

    References: Chen et al. (2018), Neural Ordinary Differential Equations;
    Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models.

    Args:
        velocity: ``velocity(t, x) -> (batch, *event)``, row-wise in ``x``.
        noise: Hutchinson probes ``(probes, batch, *event)``, or ``None`` for the
            exact divergence.
        chunk_size: directions per pass of the exact divergence.
        velocity_and_divergence: ``(t, x) -> (v: (batch, *event), div: (batch,))``, a
            field that gives its exact divergence itself (such as
            :meth:`~pushforward.nn.velocity.VelocityMLP.velocity_and_divergence`);
            used instead of :func:`~pushforward.ode.divergence.exact_divergence` when
            ``noise`` is ``None``.
        velocity_and_jvp: ``(t, x, direction) -> (v, J direction)``, a field that gives
            its own Jacobian-vector products (such as
            :meth:`~pushforward.nn.velocity.VelocityMLP.velocity_and_jvp`); used for
            Hutchinson's estimate instead of ``torch.func.jvp`` of ``velocity``.
    """

    def __init__(
        self,
        velocity: Velocity,
        noise: Tensor | None = None,
        chunk_size: int | None = None,
        velocity_and_divergence: VelocityAndDivergence | None = None,
        velocity_and_jvp: VelocityAndJvp | None = None,
    ) -> None:
        self.velocity = velocity
        self.noise = noise
        self.chunk_size = chunk_size
        self.velocity_and_divergence = velocity_and_divergence
        self.velocity_and_jvp = velocity_and_jvp

    def __call__(self, t: Tensor, state: State) -> tuple[Tensor, Tensor]:
        """The derivatives ``(dx/dt: (batch, *event), dl/dt: (batch,))`` at time ``t``."""
        x = state[0] if isinstance(state, tuple) else state
        if self.noise is None and self.velocity_and_divergence is not None:
            value, divergence = self.velocity_and_divergence(t, x)
            if value.shape != x.shape or divergence.shape != (x.shape[0],):
                raise ValueError(
                    f"velocity_and_divergence must return shapes {tuple(x.shape)} and "
                    f"({x.shape[0]},), got {tuple(value.shape)} and {tuple(divergence.shape)}"
                )
            return value, divergence
        field = partial(self.velocity, t)
        if self.noise is None:
            return exact_divergence(field, x, chunk_size=self.chunk_size)
        if self.velocity_and_jvp is not None:
            value, estimate = x, x.new_zeros(x.shape[0])
            for probe in self.noise:
                value, tangent = self.velocity_and_jvp(t, x, probe)
                estimate = estimate + (tangent * probe).reshape(x.shape[0], -1).sum(-1)
            return value, estimate / self.noise.shape[0]
        return hutchinson_divergence(field, x, self.noise)


def _choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(
            f"unknown {name} {value!r}{closest(str(value), list(valid))}; valid: {', '.join(valid)}"
        )
    return value


def _hook_points(hook: StepHook, t: Tensor, state: State) -> State:
    """``hook`` applied to the points of an augmented state ``(x, l)``, ``l`` left as it is."""
    if not isinstance(state, tuple):
        raise TypeError("expected the augmented state (points, log-density change)")
    points = hook(t, state[0])
    if not isinstance(points, Tensor) or points.shape != state[0].shape:
        raise ValueError(f"step_hook must return points of shape {tuple(state[0].shape)}")
    return (points, *state[1:])


def log_likelihood(
    velocity: Velocity,
    x: Tensor,
    base_log_prob: Callable[[Tensor], Tensor],
    *,
    method: str = "dopri5",
    steps: int | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    divergence: str = "exact",
    probes: int = 1,
    noise: str = "rademacher",
    generator: torch.Generator | None = None,
    t_data: float = 1.0,
    t_base: float = 0.0,
    chunk_size: int | None = None,
    velocity_and_divergence: VelocityAndDivergence | None = None,
    step_hook: StepHook | None = None,
    velocity_and_jvp: VelocityAndJvp | None = None,
) -> LikelihoodResult:
    r"""Log-density of ``x`` under the pushforward of a base distribution by a velocity field.

    With :math:`dx/dt = v(t, x)` the density obeys
    :math:`d \log p_t(x_t)/dt = -\nabla \cdot v(t, x_t)`. Integrating the
    augmented state :math:`(x, \ell)` from ``t_data`` to ``t_base`` with
    :math:`d\ell/dt = \nabla \cdot v`, :math:`\ell(t_{data}) = 0` gives

    .. math::
        \log p_{t_{data}}(x) = \log p_{base}(x(t_{base})) + \ell(t_{base}).

    The divergence is exact by default, or Hutchinson's estimate with probes
    drawn once per call and kept along the trajectory; the log-density is then
    linear in the estimates and so unbiased (exactly with fixed steps; adaptive
    step sizes depend weakly on the probes). Nothing is
    detached: the result is differentiable with respect to ``x`` and to the
    velocity's parameters.

    References: Chen et al. (2018), Neural Ordinary Differential Equations;
    Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models; Lipman et al. (2023), Flow Matching for
    Generative Modeling.

    Args:
        velocity: ``velocity(t, x)`` with ``t`` 0-dim and ``x: (batch, *event)``,
            returning ``(batch, *event)``, row-wise in ``x``.
        x: the data points, ``(batch, *event)``.
        base_log_prob: ``base_log_prob(z) -> (batch,)``, the base log-density at ``t_base``.
        method: ODE method (see :func:`~pushforward.ode.solvers.solve_ode`).
        steps: steps of a fixed-step method (required for those).
        atol: absolute tolerance of adaptive methods.
        rtol: relative tolerance of adaptive methods.
        divergence: ``"exact"`` or ``"hutchinson"``.
        probes: Hutchinson probes per point.
        noise: Hutchinson probe kind, ``"rademacher"`` or ``"gaussian"``.
        generator: random generator of the probes.
        t_data: the time of the data.
        t_base: the time of the base distribution.
        chunk_size: directions per pass of the exact divergence (bounds memory).
        velocity_and_divergence: ``velocity_and_divergence(t, x) -> (v, div)`` with
            ``v: (batch, *event)`` and ``div: (batch,)`` the exact divergence, for a
            field that computes it faster than the generic forward-mode trace (such
            as :meth:`~pushforward.nn.velocity.VelocityMLP.velocity_and_divergence`);
            it must agree with ``velocity``. Used for ``divergence="exact"`` in place
            of :func:`~pushforward.ode.divergence.exact_divergence` (``chunk_size``
            then does not apply); Hutchinson's estimator keeps using ``velocity``.
        step_hook: ``hook(t, x) -> x`` applied to the points (not to the accumulated
            divergence) after each fixed step, such as the reflection of a reflected
            flow into its domain; it must preserve volume (an isometry), since
            nothing enters the log-density for it. Fixed-step methods only.
        velocity_and_jvp: ``velocity_and_jvp(t, x, direction) -> (v, J direction)``, the
            field's own Jacobian-vector product (it must agree with ``velocity``), used by
            Hutchinson's estimator in place of ``torch.func.jvp`` of ``velocity``.

    Returns:
        A :class:`LikelihoodResult` with ``log_prob: (batch,)``, the base point
        ``(batch, *event)`` and the number of dynamics evaluations.
    """
    _choice("divergence", divergence, DIVERGENCES)
    _choice("noise", noise, PROBE_KINDS)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must be shaped (batch, *event), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if float(t_data) == float(t_base):
        raise ValueError(f"t_data and t_base must differ, both are {t_data}")
    if method in FIXED_STEP_METHODS and steps is None:
        raise ValueError(f"the fixed-step method {method!r} needs steps= (a positive integer)")
    if velocity_and_divergence is not None and not callable(velocity_and_divergence):
        raise TypeError(
            "velocity_and_divergence must be a callable (t, x) -> (velocity, divergence), "
            f"got {type(velocity_and_divergence).__name__}"
        )
    probe_noise = make_probes(x, probes, noise, generator) if divergence == "hutchinson" else None
    dynamics = AugmentedDynamics(
        velocity, probe_noise, chunk_size, velocity_and_divergence, velocity_and_jvp
    )
    start = (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
    solution = solve_ode(
        dynamics,
        start,
        [float(t_data), float(t_base)],
        method,
        steps=steps,
        atol=atol,
        rtol=rtol,
        step_hook=None if step_hook is None else partial(_hook_points, step_hook),
    )
    base_point, log_density_change = solution.state
    base = base_log_prob(base_point)
    if not isinstance(base, Tensor) or base.shape != (x.shape[0],):
        shape = tuple(base.shape) if isinstance(base, Tensor) else type(base).__name__
        raise ValueError(f"base_log_prob must return shape ({x.shape[0]},), got {shape}")
    return LikelihoodResult(
        log_prob=base + log_density_change, base_point=base_point, nfe=solution.nfe
    )
