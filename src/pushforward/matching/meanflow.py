"""MeanFlow: a network of the average velocity over an interval, sampled in one step.

Time convention (the library's, the reverse of the paper's): :math:`t = 0` is the
source noise, :math:`t = 1` the data, and the linear path is
:math:`z_\\tau = \\tau x_1 + (1 - \\tau) x_0` with conditional velocity
:math:`v = x_1 - x_0`. Geng et al. put noise at :math:`t = 1`; their interval
:math:`(r, t)` with :math:`r \\le t` is our :math:`(s, t) = (1 - t_{paper}, 1 - r_{paper})`,
their velocity and average velocity are minus ours, and a logit-normal time of
location :math:`m` in their time is one of location :math:`-m` in ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution, make_base
from pushforward.flows.options import choice, hidden_widths, positive_float, positive_int, sizes
from pushforward.matching.couplings import COUPLINGS, Coupling, make_coupling, sinkhorn_coupling
from pushforward.model import Model
from pushforward.nn.two_time import TwoTimeVelocityMLP
from pushforward.ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, ODESolution
from pushforward.ode.likelihood import DIVERGENCES, log_likelihood
from pushforward.ode.solvers import State
from pushforward.registry import register

LIKELIHOOD_SOLVERS: tuple[str, ...] = tuple(FIXED_STEP_METHODS) + tuple(ADAPTIVE_METHODS)
"""ODE methods ``MeanFlow.log_prob`` accepts."""

AverageVelocity = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class IntervalTimes:
    """Training intervals :math:`[s, t]` of a MeanFlow batch, one per row.

    Attributes:
        start: ``(batch,)`` start times :math:`s` (the noisier end).
        end: ``(batch,)`` end times :math:`t \\ge s`.
    """

    start: Tensor
    end: Tensor


@dataclass
class MeanFlowTarget:
    """The network's average velocity and its MeanFlow regression target.

    Attributes:
        average_velocity: :math:`u_\\theta(z_s, s, t)`, ``(batch, *event)``, with gradients.
        target: :math:`v + (t - s)\\, \\frac{d}{ds} u_\\theta`, ``(batch, *event)``, detached.
        derivative: :math:`\\frac{d}{ds} u_\\theta(z_s, s, t)` along the path, detached.
    """

    average_velocity: Tensor
    target: Tensor
    derivative: Tensor


def _per_row(values: Tensor, like: Tensor) -> Tensor:
    """``(batch,)`` values shaped to broadcast against ``like: (batch, *event)``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def sample_interval_times(
    n: int,
    *,
    mean: float = 0.4,
    std: float = 1.0,
    equal_fraction: float = 0.75,
    dtype: torch.dtype,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> IntervalTimes:
    r"""Draws MeanFlow's training intervals :math:`s \le t` in :math:`[0, 1]`.

    Two times :math:`a, b = \mathrm{sigmoid}(m + \sigma \epsilon)`,
    :math:`\epsilon \sim N(0, 1)`, are drawn independently and ordered,
    :math:`s = \min(a, b)`, :math:`t = \max(a, b)`; then ``round(equal_fraction * n)``
    rows, chosen at random, get :math:`t = s`, so the loss there is plain flow
    matching of the instantaneous velocity. As in the paper's code the equal
    rows keep the noisier time :math:`s` (the paper's larger :math:`t`).

    The paper's ImageNet defaults are a logit-normal of location -0.4 and scale
    1.0 in its time, noise at 1, which is location +0.4 here, and 25% of rows
    with :math:`r \ne t` (``equal_fraction = 0.75``).

    References:
        Geng et al. (2025), Mean Flows for One-step Generative Modeling;
        Esser et al. (2024), Scaling Rectified Flow Transformers for
        High-Resolution Image Synthesis.

    Args:
        n: number of intervals.
        mean: location :math:`m` of the logit-normal, in this library's time.
        std: scale :math:`\sigma > 0` of the logit-normal.
        equal_fraction: fraction of rows with :math:`s = t`, in :math:`[0, 1]`.
        dtype: floating dtype of the result.
        device: device of the result.
        generator: random generator (on ``device``).

    Returns:
        :class:`IntervalTimes` with ``start`` and ``end`` of shape ``(n,)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of intervals n must be a non-negative integer, got {n!r}")
    if not math.isfinite(mean):
        raise ValueError(f"the logit-normal time mean must be finite, got {mean!r}")
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"the logit-normal time std must be positive, got {std!r}")
    if not 0.0 <= equal_fraction <= 1.0:
        raise ValueError(f"equal_time_fraction must be in [0, 1], got {equal_fraction!r}")
    draws = torch.sigmoid(
        mean + std * torch.randn(2, n, generator=generator, dtype=dtype, device=device)
    )
    start, end = draws.min(dim=0).values, draws.max(dim=0).values
    equal = round(equal_fraction * n)
    if equal:
        rows = torch.randperm(n, generator=generator, device=device)[:equal]
        end = end.index_copy(0, rows, start[rows])
    return IntervalTimes(start=start, end=end)


def meanflow_target(
    average_velocity: AverageVelocity, z: Tensor, s: Tensor, t: Tensor, velocity: Tensor
) -> MeanFlowTarget:
    r"""The MeanFlow identity's regression target, by one forward-mode Jacobian-vector product.

    The average velocity over :math:`[s, t]` of the flow :math:`dz/d\tau = v(z, \tau)`
    is :math:`u(z_s, s, t) = \frac{1}{t - s} \int_s^t v(z_\tau, \tau)\, d\tau`, so
    that :math:`z_t = z_s + (t - s)\, u(z_s, s, t)`. Differentiating
    :math:`(t - s)\, u(z_s, s, t) = \int_s^t v\, d\tau` in :math:`s`, with :math:`z_s`
    moving along the flow, gives :math:`-u + (t - s) \frac{d}{ds} u = -v(z_s, s)`:

    .. math:: u(z_s, s, t) = v(z_s, s) + (t - s)\, \frac{d}{ds} u(z_s, s, t),
        \qquad \frac{d}{ds} u = v \cdot \partial_z u + \partial_s u,

    the total derivative being the JVP of :math:`u` along the tangent
    :math:`(v, 1, 0)` in :math:`(z, s, t)`. The target is the right-hand side with
    the network in place of :math:`u` and the whole target detached,
    :math:`u_{tgt} = v + (t - s)\, \mathrm{sg}(\frac{d}{ds} u_\theta)`. With
    :math:`v = x_1 - x_0` the conditional velocity of the linear path, the loss
    :math:`\lVert u_\theta - u_{tgt} \rVert^2` is minimised by the true average
    velocity, as flow matching's is by the true velocity. (In the paper's time,
    noise at 1, this is :math:`u_{tgt} = v - (t - r)\, \frac{d}{dt} u`: each of
    :math:`u`, :math:`v` and :math:`d/dt` changes sign.)

    References:
        Geng et al. (2025), Mean Flows for One-step Generative Modeling.

    Args:
        average_velocity: ``u(z, s, t) -> (batch, *event)``, row-wise and smooth,
            with ``z: (batch, *event)`` and ``s, t: (batch,)``.
        z: ``(batch, *event)`` points :math:`z_s` on the path.
        s: ``(batch,)`` start times.
        t: ``(batch,)`` end times, :math:`t \ge s`.
        velocity: ``(batch, *event)`` the velocity :math:`v` at :math:`(z_s, s)`, the
            tangent of the path.

    Returns:
        :class:`MeanFlowTarget`: ``u_theta`` (with gradients), the detached target and
        the detached total derivative.
    """
    if velocity.shape != z.shape:
        raise ValueError(
            f"velocity has shape {tuple(velocity.shape)} but z has shape {tuple(z.shape)}"
        )
    if s.shape != (z.shape[0],) or t.shape != (z.shape[0],):
        raise ValueError(
            f"s and t must have shape ({z.shape[0]},), got {tuple(s.shape)} and {tuple(t.shape)}"
        )
    value, derivative = torch.func.jvp(  # type: ignore[misc]
        average_velocity, (z, s, t), (velocity, torch.ones_like(s), torch.zeros_like(t))
    )
    derivative = derivative.detach()
    target = velocity.detach() + _per_row(t - s, z).detach() * derivative
    return MeanFlowTarget(average_velocity=value, target=target, derivative=derivative)


def adaptive_weighted_loss(error: Tensor, power: float = 1.0, constant: float = 1e-3) -> Tensor:
    r"""Squared errors with MeanFlow's adaptive weights, per row.

    .. math:: \ell = \mathrm{sg}(w)\, \lVert \Delta \rVert^2, \qquad
        w = \frac{1}{(\lVert \Delta \rVert^2 + c)^p},

    where :math:`\lVert\Delta\rVert^2` sums over the event. :math:`p = 0` is the plain
    squared error; :math:`p = 1` gives the gradient of :math:`\log(\lVert\Delta\rVert^2 + c)`,
    which down-weights rows with large errors (a robust loss).

    References:
        Geng et al. (2025), Mean Flows for One-step Generative Modeling;
        Geng et al. (2024), Consistency Models Made Easy.

    Args:
        error: ``(batch, *event)`` residuals :math:`\Delta`.
        power: the exponent :math:`p \ge 0`.
        constant: :math:`c > 0`.

    Returns:
        ``(batch,)`` weighted squared errors (differentiable through :math:`\Delta` only).
    """
    squared = error.reshape(error.shape[0], -1).square().sum(dim=1)
    if power == 0:
        return squared
    weight = (squared.detach() + constant).pow(-power)
    return weight * squared


class MeanFlow(Model):
    r"""MeanFlow: one-step generation from a network of the average velocity.

    A network :math:`u_\theta(z, s, t, c)` predicts the average velocity of the
    marginal flow over :math:`[s, t]` (see :func:`meanflow_target`), trained by

    .. math:: \mathcal L(\theta) = \mathbb E\, \mathrm{sg}(w)\,
        \lVert u_\theta(z_s, s, t) - u_{tgt} \rVert^2, \quad
        u_{tgt} = v + (t - s)\, \mathrm{sg}\big(v \cdot \partial_z u_\theta
        + \partial_s u_\theta\big),

    with :math:`z_s = s x_1 + (1 - s) x_0`, :math:`v = x_1 - x_0`, the pairs
    :math:`(x_0, x_1)` from a ``coupling``, intervals from
    :func:`sample_interval_times` and the adaptive weight of
    :func:`adaptive_weighted_loss`. Rows with :math:`s = t` are flow matching.

    The network sees the start time and the interval's length,
    :math:`u_\theta(z, s, t) = f_\theta(z, s, t - s, c)` for a
    :class:`~pushforward.nn.two_time.TwoTimeVelocityMLP` :math:`f_\theta` (the
    paper's default :math:`(t, t - r)`): the first time is where
    :math:`z` lies, as in flow matching, and the length is exactly 0 on the
    flow-matching rows, so :math:`f_\theta(z, \tau, 0, c)` is the instantaneous
    velocity :math:`v_\theta(z, \tau)`.

    Sampling steps along a grid :math:`0 = t_0 < \dots < t_K = 1`,
    :math:`z_{k+1} = z_k + (t_{k+1} - t_k)\, u_\theta(z_k, t_k, t_{k+1})` (one
    network evaluation per step; ``steps=1`` is one-step generation).

    ``log_prob`` is the density of the flow of :math:`v_\theta(z, \tau) =
    u_\theta(z, \tau, \tau)` by the instantaneous change of variables,
    :math:`\log p_1(x) = \log p_0(z_0) - \int_0^1 \nabla \cdot v_\theta(z_\tau, \tau)\,
    d\tau`: the density that the many-step sampler approaches (the one-step map
    pushes the base to it only as far as :math:`u_\theta` is consistent with
    :math:`v_\theta`). ``sample_and_log_prob`` returns the sampler's points with
    their log-density under that flow.

    References:
        Geng et al. (2025), Mean Flows for One-step Generative Modeling;
        Lipman et al. (2023), Flow Matching for Generative Modeling;
        Tong et al. (2024), Improving and Generalizing Flow-Based Generative
        Models with Minibatch Optimal Transport;
        Chen et al. (2018), Neural Ordinary Differential Equations.

    Args:
        network: ``network(z, s, length, context) -> like z``, for instance a
            :class:`~pushforward.nn.two_time.TwoTimeVelocityMLP`.
        base: the source distribution :math:`p_0`.
        context_features: size of the context (0 for unconditional).
        coupling: ``independent``, ``ot`` or ``sinkhorn``.
        time_mean, time_std: the logit-normal of the training times (this library's time).
        equal_time_fraction: fraction of training rows with :math:`s = t`.
        adaptive_p, adaptive_c: the adaptive weight's power and constant.
        steps: default number of sampling steps.
        likelihood_solver, likelihood_steps, atol, rtol: defaults of ``log_prob``
            (``likelihood_steps`` for a fixed-step solver).
        divergence: ``exact`` or ``hutchinson`` for ``log_prob``.
        probes: Hutchinson probes per point.
    """

    has_rsample = False

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        context_features: int = 0,
        *,
        coupling: str = "ot",
        time_mean: float = 0.4,
        time_std: float = 2.0,
        equal_time_fraction: float = 0.5,
        adaptive_p: float = 0.0,
        adaptive_c: float = 1e-3,
        steps: int = 1,
        likelihood_solver: str = "dopri5",
        likelihood_steps: int = 20,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        divergence: str = "exact",
        probes: int = 1,
    ) -> None:
        super().__init__()
        self.network = network
        self.base = base
        self.event_shape = tuple(base.event_shape)
        self.context_features = int(context_features)
        self.coupling = choice("coupling", coupling, tuple(COUPLINGS))
        self.time_mean = _finite("time_mean", time_mean)
        self.time_std = positive_float("time_std", time_std)
        self.equal_time_fraction = _fraction("equal_time_fraction", equal_time_fraction)
        self.adaptive_p = _non_negative("adaptive_p", adaptive_p)
        self.adaptive_c = positive_float("adaptive_c", adaptive_c)
        self.steps = positive_int("steps", steps)
        self.likelihood_solver = choice("likelihood_solver", likelihood_solver, LIKELIHOOD_SOLVERS)
        self.likelihood_steps = positive_int("likelihood_steps", likelihood_steps)
        self.atol = positive_float("atol", atol)
        self.rtol = positive_float("rtol", rtol)
        self.divergence = choice("divergence", divergence, DIVERGENCES)
        self.probes = positive_int("probes", probes)

    # -- the fields -------------------------------------------------------------

    def average_velocity(
        self, z: Tensor, s: Tensor, t: Tensor, context: Tensor | None = None
    ) -> Tensor:
        r"""The average velocity :math:`u_\theta(z, s, t, c)` over :math:`[s, t]`.

        Args:
            z: ``(batch, *event)`` points at time :math:`s`.
            s: ``(batch,)`` start times, or a 0-dim time for all rows.
            t: ``(batch,)`` end times (:math:`t \ge s`), or a 0-dim time.
            context: ``(batch, context)`` or ``None``.

        Returns:
            ``(batch, *event)``; :math:`z + (t - s)\, u` is the point at time :math:`t`.
        """
        batch = z.shape[0]
        s = s.expand(batch) if s.ndim == 0 else s
        t = t.expand(batch) if t.ndim == 0 else t
        return self.network(z, s, t - s, context)

    def velocity(self, z: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The instantaneous velocity :math:`v_\theta(z, t) = u_\theta(z, t, t)`.

        Args:
            z: ``(batch, *event)`` states.
            t: ``(batch,)`` times, or a 0-dim time for all rows.
            context: ``(batch, context)`` or ``None``.

        Returns:
            ``(batch, *event)``.
        """
        return self.average_velocity(z, t, t, context)

    # -- training ---------------------------------------------------------------

    def loss(  # type: ignore[override]
        self, x: Tensor, context: Tensor | None = None, prepared: Coupling | None = None
    ) -> Tensor:
        """The MeanFlow loss on a batch of data ``x: (batch, *event)``.

        ``prepared`` is the batch's coupling made ahead by :meth:`prepare_batch`
        (the training engine passes it); without it the source points are drawn
        and coupled here.
        """
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        if prepared is None:
            return self.matching_loss(self.base.sample(x.shape[0]).to(x), x, context)
        if prepared.x1.shape != x.shape:
            raise ValueError(
                f"the prepared coupling holds data of shape {tuple(prepared.x1.shape)}, "
                f"the batch has shape {tuple(x.shape)}"
            )
        return self.regression_loss(prepared)

    def prepare_batch(self, x: Tensor, context: Tensor | None, seed: int) -> Coupling | None:
        """Draws source points and solves the coupling for a batch, ahead of its step.

        Only couplings that cost something (``ot``, ``sinkhorn``) and sources
        without parameters are prepared; otherwise ``None`` (the loss draws them).
        """
        if self.coupling == "independent" or any(True for _ in self.base.parameters()):
            return None
        generator = torch.Generator(device=x.device).manual_seed(seed)
        try:
            source = self.base.sample(x.shape[0], generator).to(x)
        except ValueError:  # a base that cannot draw from a given generator
            return None
        with torch.no_grad():
            return self._couple(source, x.detach(), context, generator)

    def _couple(
        self,
        source: Tensor,
        data: Tensor,
        context: Tensor | None,
        generator: torch.Generator | None = None,
    ) -> Coupling:
        if self.coupling == "sinkhorn":
            return sinkhorn_coupling(source, data, context, generator=generator)
        return make_coupling(self.coupling)(source, data, context)

    def matching_loss(self, source: Tensor, data: Tensor, context: Tensor | None = None) -> Tensor:
        """The MeanFlow loss for given source points ``source`` and data ``data`` (both
        ``(batch, *event)``); the coupling pairs them first."""
        with torch.no_grad():
            pairs = self._couple(source, data, context)
        return self.regression_loss(pairs)

    def regression_loss(self, pairs: Coupling) -> Tensor:
        r"""The MeanFlow loss on coupled points ``pairs`` (``x0`` source, ``x1`` data).

        Rows with :math:`s = t` have the target :math:`v` whatever the derivative, so
        only the other rows go through the Jacobian-vector product; the equal rows take
        a plain forward pass.
        """
        x0, x1 = pairs.x0, pairs.x1
        n = x1.shape[0]
        times = sample_interval_times(
            n,
            mean=self.time_mean,
            std=self.time_std,
            equal_fraction=self.equal_time_fraction,
            dtype=x1.dtype,
            device=x1.device,
        )
        s, t = times.start, times.end
        z = _per_row(s, x1) * x1 + (1.0 - _per_row(s, x1)) * x0
        v = x1 - x0
        context = pairs.context
        if context is not None and context.shape[0] == 1 and n != 1:
            context = context.expand(n, -1)
        jump = t > s
        errors = []
        if bool((~jump).any()):
            flat = ~jump
            rows = None if context is None else context[flat]
            errors.append(self.velocity(z[flat], s[flat], rows) - v[flat])
        if bool(jump.any()):
            rows = None if context is None else context[jump]
            field = _BoundAverageVelocity(self, rows)
            result = meanflow_target(field, z[jump], s[jump], t[jump], v[jump])
            errors.append(result.average_velocity - result.target)
        per_row = adaptive_weighted_loss(torch.cat(errors), self.adaptive_p, self.adaptive_c)
        return per_row.mean()

    # -- sampling ---------------------------------------------------------------

    def solve(
        self,
        x0: Tensor,
        context: Tensor | None = None,
        *,
        steps: int | None = None,
        time_grid: Sequence[float] | Tensor | None = None,
        return_path: bool = False,
    ) -> ODESolution:
        r"""Carries source points ``x0: (n, *event)`` to data by average-velocity jumps.

        :math:`z_{k+1} = z_k + (t_{k+1} - t_k)\, u_\theta(z_k, t_k, t_{k+1})` on the
        uniform grid of ``steps`` steps over :math:`[0, 1]`, or on an increasing
        ``time_grid`` in :math:`[0, 1]`.

        Args:
            x0: ``(n, *event)`` points at the grid's first time.
            context: ``(n, context)`` or ``None``.
            steps: number of uniform steps (default: the model's ``steps``).
            time_grid: increasing times in :math:`[0, 1]` instead of a uniform grid.
            return_path: also return the state at every grid time.

        Returns:
            An :class:`~pushforward.ode.ODESolution` with the final state, the grid,
            the path when asked and ``nfe`` (one network evaluation a step).
        """
        if time_grid is None:
            count = positive_int("steps", self.steps if steps is None else steps)
            times = torch.linspace(0.0, 1.0, count + 1, dtype=x0.dtype, device=x0.device)
        else:
            if steps is not None:
                raise ValueError("pass either steps or time_grid, not both")
            times = torch.as_tensor(time_grid, dtype=x0.dtype, device=x0.device).reshape(-1)
            if times.numel() < 2 or not bool((times.diff() > 0).all()):
                raise ValueError("time_grid must hold at least 2 strictly increasing times")
            if float(times[0]) < 0.0 or float(times[-1]) > 1.0:
                raise ValueError("time_grid must lie in [0, 1] (0 is the source, 1 the data)")
        state = x0
        path: list[State] | None = [state] if return_path else None
        for k in range(times.numel() - 1):
            start, end = times[k], times[k + 1]
            state = state + (end - start) * self.average_velocity(state, start, end, context)
            if path is not None:
                path.append(state)
        return ODESolution(state=state, times=times, path=path, nfe=times.numel() - 1)

    def sample(  # type: ignore[override]
        self, n: int, context: Tensor | None = None, *, steps: int | None = None
    ) -> Tensor:
        """Draws ``n`` samples ``(n, *event)``: base samples carried by ``steps`` jumps.

        Args:
            n: number of samples.
            context: ``(n, context)`` or one row for all, or ``None``.
            steps: number of uniform steps (default: the model's ``steps``, 1).
        """
        n, context = self._sampling_args(n, context)
        with torch.no_grad():
            x0 = self.base.sample(n)
            return _tensor_state(self.solve(x0, context, steps=steps))

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        state = _tensor_state(self.solve(self.base.rsample(n), context))
        if not with_log_prob:
            return state, None
        return state, self._log_prob(state, context)

    # -- likelihood -------------------------------------------------------------

    def log_prob(  # type: ignore[override]
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        solver: str | None = None,
        steps: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        divergence: str | None = None,
        probes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Log-density of ``x: (batch, *event)`` under the flow of :math:`u_\theta(\cdot, t, t)`.

        Args:
            x: data points.
            context: ``(batch, context)``, one row, or ``None``.
            solver: ODE method (default ``likelihood_solver``).
            steps: steps of a fixed-step solver (default ``likelihood_steps``).
            atol, rtol: tolerances of an adaptive solver.
            divergence: ``"exact"`` or ``"hutchinson"``.
            probes: Hutchinson probes per point.
            generator: random generator of the Hutchinson probes.

        Returns:
            ``(batch,)``, differentiable with respect to ``x`` and the parameters.
        """
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        return self._log_prob(x, context, solver, steps, atol, rtol, divergence, probes, generator)

    def _log_prob(  # type: ignore[override]
        self,
        x: Tensor,
        context: Tensor | None,
        solver: str | None = None,
        steps: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        divergence: str | None = None,
        probes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        method = choice("solver", solver or self.likelihood_solver, LIKELIHOOD_SOLVERS)
        kind = choice("divergence", divergence or self.divergence, DIVERGENCES)
        fixed = method in FIXED_STEP_METHODS
        # The network's own Jacobian trace (hand-pushed tangents) beats the generic
        # forward-mode trace; other networks take the generic path.
        fast = kind == "exact" and callable(getattr(self.network, "velocity_and_divergence", None))
        result = log_likelihood(
            _BoundVelocity(self, context),
            x,
            self.base.log_prob,
            method=method,
            steps=positive_int("steps", steps or self.likelihood_steps) if fixed else None,
            atol=self.atol if atol is None else atol,
            rtol=self.rtol if rtol is None else rtol,
            divergence=kind,
            probes=probes or self.probes,
            generator=generator,
            velocity_and_divergence=_BoundVelocityAndDivergence(self, context) if fast else None,
        )
        return result.log_prob


class _BoundAverageVelocity:
    """``(z, s, t) -> u_theta(z, s, t, context)`` with the context fixed, for ``jvp``."""

    def __init__(self, model: MeanFlow, context: Tensor | None) -> None:
        self.model = model
        self.context = context

    def __call__(self, z: Tensor, s: Tensor, t: Tensor) -> Tensor:
        return self.model.average_velocity(z, s, t, self.context)


class _BoundVelocity:
    """``(t, z) -> v_theta(z, t, context)``, the field ``log_likelihood`` integrates."""

    def __init__(self, model: MeanFlow, context: Tensor | None) -> None:
        self.model = model
        self.context = context

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        return self.model.velocity(z, t, self.context)


class _BoundVelocityAndDivergence:
    """``(t, z) -> (u_theta(z, t, t, c), div_z u_theta(z, t, t, c))`` with the context fixed."""

    def __init__(self, model: MeanFlow, context: Tensor | None) -> None:
        self.model = model
        self.context = context

    def __call__(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        t = t.expand(z.shape[0]) if t.ndim == 0 else t
        result: tuple[Tensor, Tensor] = self.model.network.velocity_and_divergence(  # type: ignore[operator]
            z, t, torch.zeros_like(t), self.context
        )
        return result


def _tensor_state(solution: ODESolution) -> Tensor:
    if not isinstance(solution.state, Tensor):
        raise TypeError("expected a single-tensor state")
    return solution.state


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"option {name!r} must be a finite number, got {value!r}")
    return float(value)


def _non_negative(name: str, value: object) -> float:
    number = _finite(name, value)
    if number < 0:
        raise ValueError(f"option {name!r} must be >= 0, got {value!r}")
    return number


def _fraction(name: str, value: object) -> float:
    number = _finite(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"option {name!r} must be a fraction in [0, 1], got {value!r}")
    return number


MEANFLOW_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 5e-3}
"""The peak learning rate ``pushforward train`` uses for ``meanflow``: on moons with the
default network and independent pairs, 1e-3 left the one-step energy distance 30%
higher at 1000 steps, and 2e-3 40% higher at 2000 steps, than 5e-3 (``fm``'s rate)."""


@register("meanflow", train=MEANFLOW_TRAIN_DEFAULTS)
def meanflow(
    features: int,
    context: int = 0,
    hidden: Sequence[int] = (256, 256, 256, 256),
    shape: Sequence[int] | None = None,
    base: str = "normal",
    coupling: str = "ot",
    residual: bool = True,
    time_embedding: int = 32,
    time_scale: float = 10.0,
    activation: str = "silu",
    time_mean: float = 0.4,
    time_std: float = 2.0,
    equal_time_fraction: float = 0.5,
    adaptive_p: float = 0.0,
    adaptive_c: float = 1e-3,
    steps: int = 1,
    likelihood_solver: str = "dopri5",
    likelihood_steps: int = 20,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    divergence: str | None = None,
    probes: int = 1,
) -> MeanFlow:
    """MeanFlow with a two-time MLP of the average velocity (Geng et al. 2025).

    Four defaults differ from the paper's ImageNet settings, each measured on
    standardised moons and 8gaussians (2000 steps, batch 512, lr 5e-3, EMA 0.999;
    energy distance of 10,000 one-step samples to 10,000 held-out points, whose own
    noise is about 3e-4 a draw):

    * ``coupling="ot"``: with independent pairs the one-step distance stayed at
      1.1e-3 (moons) and 3.5e-3 (8gaussians); with minibatch OT the paths are nearly
      straight and it fell to the level of ``fm``'s 100-step Euler solve.
    * ``adaptive_p=0``: the paper's ``p = 1`` is a robust loss, and where the
      conditional velocity ``x1 - x0`` is spread widely about its mean (independent
      pairs in 2-D) it learns something other than the mean: the field
      ``u(z, t, t)`` integrated in 100 steps scored 0.034 against 2.3e-3 with ``p = 0``
      (moons, 1000 steps). With OT pairs ``p = 1`` trains, but the paper's settings
      (``p = 1``, scale 1, a quarter of ``s != t``) ended 2x worse on moons (8.4e-4).
    * ``time_std=2.0``: with the paper's scale 1, intervals close to ``[0, 1]``
      (the one-step jump) are rarely drawn, and the one-step distance on moons was
      0.068 (no better than the base) against 1.8e-3 with scale 2 (independent
      pairs, 1000 steps).
    * ``equal_time_fraction=0.5``: half the rows with ``s != t`` beat the paper's
      quarter in all three paired comparisons (moons, two seeds, and 8gaussians).

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        hidden: widths of the network's hidden layers.
        shape: event shape, e.g. ``[1, 8, 8]`` (default ``[features]``).
        base: source distribution name.
        coupling: ``independent``, ``ot`` (exact minibatch OT) or ``sinkhorn``.
        residual: residual blocks in the network.
        time_embedding: width of each sinusoidal time embedding (at least 2).
        time_scale: times are multiplied by this before the sinusoids.
        activation: nonlinearity of the network.
        time_mean, time_std: the logit-normal of the training times, in this library's
            time (noise at 0): the paper's lognorm(-0.4, 1.0) with noise at 1 is
            ``time_mean=0.4``.
        equal_time_fraction: fraction of rows trained with ``s = t`` (plain flow
            matching); the paper's 25% of ``r != t`` is 0.75.
        adaptive_p, adaptive_c: the adaptive loss weight ``1 / (|delta|^2 + c)^p``
            (``adaptive_p=0`` is the plain squared error).
        steps: default number of sampling steps (1: one-step generation).
        likelihood_solver, likelihood_steps, atol, rtol: defaults of ``log_prob``.
        divergence: ``exact`` or ``hutchinson`` (default: exact up to 64 features).
        probes: Hutchinson probes per point.
    """
    features, context = sizes(features, context)
    event_shape = (features,) if shape is None else tuple(positive_int("shape", d) for d in shape)
    if math.prod(event_shape) != features:
        raise ValueError(
            f"option 'shape' {list(event_shape)} holds {math.prod(event_shape)} values, "
            f"but features is {features}"
        )
    network = TwoTimeVelocityMLP(
        features,
        context=context,
        hidden=hidden_widths(hidden),
        time_embedding=positive_int("time_embedding", time_embedding, minimum=2),
        activation=activation,
        residual=bool(residual),
        time_scale=positive_float("time_scale", time_scale),
    )
    if divergence is None:
        divergence = "exact" if features <= 64 else "hutchinson"
    return MeanFlow(
        network,
        make_base(base, event_shape),
        context,
        coupling=coupling,
        time_mean=time_mean,
        time_std=time_std,
        equal_time_fraction=equal_time_fraction,
        adaptive_p=adaptive_p,
        adaptive_c=adaptive_c,
        steps=steps,
        likelihood_solver=likelihood_solver,
        likelihood_steps=likelihood_steps,
        atol=atol,
        rtol=rtol,
        divergence=divergence,
        probes=probes,
    )
