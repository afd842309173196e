"""The flow-matching model: a velocity field trained by regression, sampled and scored by ODEs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution
from pushforward.inference import resolve_options
from pushforward.matching.coupled import CoupledVelocityModel, final_state, fold_step_hook
from pushforward.matching.couplings import BatchCoupling
from pushforward.matching.losses import (
    LOSS_WEIGHTINGS,
    LOSSES,
    LossWeighting,
    make_loss_weighting,
    row_regression_loss,
)
from pushforward.matching.parameterization import PARAMETERIZATIONS, convert, regression_target
from pushforward.matching.path import AffinePath
from pushforward.matching.schedulers import CondOTScheduler, Scheduler
from pushforward.matching.time_sampling import TIME_SAMPLERS, TimeSampler, make_time_sampler
from pushforward.nn.velocity import flagged_context
from pushforward.ode import FIXED_STEP_METHODS, ODESolution, solve_ode
from pushforward.ode.likelihood import DIVERGENCES as DIVERGENCES
from pushforward.ode.options import SOLVERS, ODELogProbOptions, ODESampleOptions
from pushforward.ode.solvers import Advance, State
from pushforward.options import choice, positive_int
from pushforward.paired import PairedBatch

# Where a data or noise prediction is turned into a velocity, the conversion
# divides by sigma_t (or alpha_t), which vanishes at an end of [0, 1]; the
# velocity is read this far inside the interval instead.
_CONVERSION_MARGIN = 1e-3

_FieldParts = Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, ...]]
"""``parts(x, t, network_context)``: a velocity (and its divergence) of the raw network."""


class FlowMatching(CoupledVelocityModel):
    r"""A continuous normalizing flow trained by (conditional) flow matching.

    A network predicts the velocity :math:`v_\theta(x_t, t, c)` (or, by the
    ``parameterization``, the data point or the noise) of the affine probability
    path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` between a source sample
    :math:`x_0 \sim p_0` (the base) at :math:`t = 0` and a data point :math:`x_1`
    at :math:`t = 1`, paired by a ``coupling`` (independent, minibatch optimal
    transport, Sinkhorn). The loss is the regression

    .. math:: \mathcal L(\theta) = \mathbb E_{t, (x_0, x_1)}
              \, w(t)\, \lVert f_\theta(x_t, t, c) - y_t \rVert^2

    with target :math:`y_t = \dot\alpha_t x_1 + \dot\sigma_t x_0` (velocity),
    :math:`x_1` (data) or :math:`x_0` (noise). Sampling solves
    :math:`\dot x = v_\theta(x, t)` from :math:`t = 0` to 1; ``log_prob``
    integrates the instantaneous change of variables from data to base,

    .. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\cdot v_\theta(x_t, t)\,dt,

    with the exact divergence (default for up to 64 features) or Hutchinson's
    estimator. The likelihood is differentiable in the inputs and parameters.

    Transport between two data sets: with an :class:`~pushforward.distributions.Empirical`
    base (the rows of a source data set) the flow maps that set onto the data
    (Liu et al. 2023: the source need not be Gaussian); :meth:`transport` pushes
    given source points. Such a source has no density, so neither has the flow:
    ``has_log_prob`` is ``False`` on the instance and ``log_prob`` raises.

    Classifier-free guidance: with ``context_dropout > 0`` the context is
    replaced by a learned-free null token (zeros and a presence flag of 0) on a
    fraction of training rows, and sampling with ``guidance=w`` follows
    :math:`v_\varnothing + w (v_c - v_\varnothing)`.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling;
        Liu et al. (2023), Flow Straight and Fast: Learning to Generate and
        Transfer Data with Rectified Flow;
        Albergo & Vanden-Eijnden (2023), Building Normalizing Flows with
        Stochastic Interpolants;
        Tong et al. (2023), Improving and Generalizing Flow-Based Generative
        Models with Minibatch Optimal Transport;
        Chen et al. (2018), Neural Ordinary Differential Equations;
        Grathwohl et al. (2019), FFJORD;
        Ho & Salimans (2022), Classifier-Free Diffusion Guidance.

    Args:
        network: the velocity network ``network(x, t, context) -> like x``.
        base: the source distribution :math:`p_0`.
        scheduler: the path's coefficients.
        context_features: size of the context (0 for unconditional).
        coupling: the coupling of source and data points: a name of
            :data:`~pushforward.matching.couplings.COUPLINGS` or a coupling object.
        parameterization: what the network predicts: velocity, data or noise.
        time_sampling: how training times are drawn: a name of
            :data:`~pushforward.matching.time_sampling.TIME_SAMPLERS` or a sampler.
        loss: ``"mse"`` or ``"pseudo-huber"``.
        loss_weighting: ``"none"`` or ``"uniform-time"``, or a loss weighting object.
        context_dropout: probability of dropping the context in training (guidance).
        solver, steps: default ODE solver and number of steps for sampling.
        likelihood_solver, atol, rtol: default solver and tolerances for ``log_prob``.
        divergence: ``"exact"`` or ``"hutchinson"`` for ``log_prob``.
        probes: Hutchinson probes per point.
    """

    has_rsample = True
    sample_options = ODESampleOptions

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        scheduler: Scheduler,
        context_features: int = 0,
        *,
        coupling: str | BatchCoupling = "independent",
        parameterization: str = "velocity",
        time_sampling: str | TimeSampler = "uniform",
        loss: str = "mse",
        loss_weighting: str | LossWeighting = "none",
        context_dropout: float = 0.0,
        solver: str = "rk4",
        steps: int = 20,
        likelihood_solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        divergence: str = "exact",
        probes: int = 1,
    ) -> None:
        super().__init__(network, base, context_features, coupling)
        self.scheduler = scheduler
        self.path = AffinePath(scheduler)
        self.parameterization = choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.time_sampler = (
            time_sampling
            if isinstance(time_sampling, TimeSampler)
            else make_time_sampler(choice("time_sampling", time_sampling, tuple(TIME_SAMPLERS)))
        )
        self.loss_kind = choice("loss", loss, LOSSES)
        self.loss_weighting = (
            loss_weighting
            if isinstance(loss_weighting, LossWeighting)
            else make_loss_weighting(
                choice("loss_weighting", loss_weighting, tuple(LOSS_WEIGHTINGS))
            )
        )
        if not 0.0 <= float(context_dropout) < 1.0:
            raise ValueError(f"option 'context_dropout' must be in [0, 1), got {context_dropout}")
        if context_dropout and not self.context_features:
            raise ValueError("option 'context_dropout' needs a conditional model (context > 0)")
        self.context_dropout = float(context_dropout)
        self.solver = choice("solver", solver, SOLVERS)
        self.steps = positive_int("steps", steps)
        self._set_likelihood_options(likelihood_solver, atol, rtol, divergence, probes)
        self._linear_velocity = (
            isinstance(scheduler, CondOTScheduler) and self.parameterization == "velocity"
        )
        if not getattr(base, "has_density", True):
            # The change of variables needs log p_0; an empirical source has none.
            self.has_log_prob = False  # type: ignore[misc]

    def _require(self, what: str, available: bool) -> None:
        if not available and not self.has_log_prob and "log_prob" in what:
            raise NotImplementedError(
                f"this flow transports an empirical source ({type(self.base).__name__} of "
                f"stored data rows), which has no density, so the model provides no {what}; "
                "use sample or transport"
            )
        super()._require(what, available)

    # -- the network in velocity terms -----------------------------------------

    @property
    def guided(self) -> bool:
        """Whether the network was trained with context dropout (classifier-free guidance)."""
        return self.context_dropout > 0

    def _network_context(self, context: Tensor | None, keep: Tensor | None) -> Tensor | None:
        """The context as the network sees it: with a presence flag when guidance is on."""
        return flagged_context(context, keep, self.guided)

    def prediction(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """The raw network output at ``x: (batch, *event)`` and times ``t: (batch,)``."""
        return self.network(x, t, self._network_context(context, None))

    def _guided(
        self, parts: _FieldParts, x: Tensor, t: Tensor, context: Tensor | None, guidance: float
    ) -> tuple[Tensor, ...]:
        """``parts(x, t, network context)``, each guided: :math:`f_\varnothing + w (f_c -
        f_\varnothing)` when the model was trained for guidance and ``w != 1``."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if context is None or not self.guided or guidance == 1.0:
            return parts(x, t, self._network_context(context, None))
        ones = torch.ones(context.shape[0], 1, dtype=context.dtype, device=context.device)
        conditional = parts(x, t, self._network_context(context, ones))
        unconditional = parts(x, t, self._network_context(context, torch.zeros_like(ones)))
        return tuple(
            u + guidance * (c - u) for c, u in zip(conditional, unconditional, strict=True)
        )

    def _velocity_of(self, x: Tensor, t: Tensor, network_context: Tensor | None) -> tuple[Tensor]:
        raw = self.network(x, t, network_context)
        if self.parameterization == "velocity":
            return (raw,)
        t_safe = t.clamp(_CONVERSION_MARGIN, 1 - _CONVERSION_MARGIN)
        return (convert(raw, self.parameterization, "velocity", x, self.scheduler(t_safe)),)

    def velocity(
        self, x: Tensor, t: Tensor, context: Tensor | None = None, guidance: float = 1.0
    ) -> Tensor:
        r"""The velocity :math:`v_\theta(x, t, c)`, guided by ``guidance`` when trained for it.

        Args:
            x: ``(batch, *event)`` states.
            t: ``(batch,)`` times, or a 0-dim time for all rows.
            context: ``(batch, context)`` or ``None``.
            guidance: classifier-free guidance scale ``w``; 1 is the plain conditional field.

        Returns:
            ``(batch, *event)``.
        """
        return self._guided(self._velocity_of, x, t, context, guidance)[0]

    def _velocity_and_divergence_of(
        self, x: Tensor, t: Tensor, network_context: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        trace = getattr(self.network, "velocity_and_divergence", None)
        if not callable(trace):
            raise TypeError(
                f"the network ({type(self.network).__name__}) has no velocity_and_divergence; "
                "use pushforward.ode.exact_divergence on velocity instead"
            )
        raw, raw_divergence = trace(x, t, network_context)
        if self.parameterization == "velocity":
            return raw, raw_divergence
        t_safe = t.clamp(_CONVERSION_MARGIN, 1 - _CONVERSION_MARGIN)
        coefficients = self.scheduler(t_safe)
        velocity = convert(raw, self.parameterization, "velocity", x, coefficients)
        # convert is linear in (prediction, x_t) jointly, v = A(t) raw + B(t) x, so
        # div v = A(t) div raw + B(t) D: the same conversion applied to (div raw, D).
        dims = torch.full_like(raw_divergence, float(math.prod(x.shape[1:])))[:, None]
        divergence = convert(
            raw_divergence[:, None], self.parameterization, "velocity", dims, coefficients
        )
        return velocity, divergence[:, 0]

    def velocity_and_divergence(
        self, x: Tensor, t: Tensor, context: Tensor | None = None, guidance: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        r"""The velocity and its exact divergence :math:`\nabla_x \cdot v_\theta(x, t, c)`.

        Needs a network with ``velocity_and_divergence`` (such as
        :class:`~pushforward.nn.velocity.VelocityMLP`). For a data or noise
        prediction the velocity is affine in the raw output, :math:`v = A(t)\,f +
        B(t)\,x` (see :func:`~pushforward.matching.parameterization.convert`), so
        :math:`\nabla \cdot v = A(t)\,\nabla \cdot f + B(t)\,D`; with guidance
        :math:`\nabla \cdot v = \nabla \cdot v_\varnothing + w (\nabla \cdot v_c -
        \nabla \cdot v_\varnothing)`.

        References: Lipman et al. (2024), Flow Matching Guide and Code;
        Ho & Salimans (2022), Classifier-Free Diffusion Guidance.

        Args:
            x: ``(batch, *event)`` states.
            t: ``(batch,)`` times, or a 0-dim time for all rows.
            context: ``(batch, context)`` or ``None``.
            guidance: classifier-free guidance scale ``w``; 1 is the plain conditional field.

        Returns:
            ``(velocity: (batch, *event), divergence: (batch,))``.
        """
        velocity, divergence = self._guided(
            self._velocity_and_divergence_of, x, t, context, guidance
        )
        return velocity, divergence

    def _velocity_and_jvp_of(
        self, x: Tensor, t: Tensor, network_context: Tensor | None, direction: Tensor
    ) -> tuple[Tensor, Tensor]:
        pushed = getattr(self.network, "velocity_and_jvp", None)
        if not callable(pushed):
            raise TypeError(
                f"the network ({type(self.network).__name__}) has no velocity_and_jvp; "
                "use torch.func.jvp on velocity instead"
            )
        raw, raw_tangent = pushed(x, t, network_context, direction)
        if self.parameterization == "velocity":
            return raw, raw_tangent
        t_safe = t.clamp(_CONVERSION_MARGIN, 1 - _CONVERSION_MARGIN)
        coefficients = self.scheduler(t_safe)
        # convert is linear in (prediction, x_t): the tangent converts with the direction.
        velocity = convert(raw, self.parameterization, "velocity", x, coefficients)
        tangent = convert(raw_tangent, self.parameterization, "velocity", direction, coefficients)
        return velocity, tangent

    def velocity_and_jvp(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor | None,
        direction: Tensor,
        guidance: float = 1.0,
    ) -> tuple[Tensor, Tensor]:
        r"""The velocity and :math:`J_x v_\theta \cdot \varepsilon` for a ``direction`` per row.

        Needs a network with ``velocity_and_jvp`` (such as
        :class:`~pushforward.nn.velocity.VelocityMLP`); Hutchinson's estimator of the
        divergence is :math:`\varepsilon^\top J \varepsilon`. Guided like
        :meth:`velocity`.

        Args:
            x: ``(batch, *event)`` states.
            t: ``(batch,)`` times, or a 0-dim time for all rows.
            context: ``(batch, context)`` or ``None``.
            direction: ``(batch, *event)``.
            guidance: classifier-free guidance scale ``w``.

        Returns:
            ``(velocity, jvp)``, both ``(batch, *event)``.
        """
        velocity, tangent = self._guided(
            partial(self._velocity_and_jvp_of, direction=direction), x, t, context, guidance
        )
        return velocity, tangent

    # -- training ---------------------------------------------------------------

    def matching_loss(self, source: Tensor, data: Tensor, context: Tensor | None = None) -> Tensor:
        """The regression loss for given source points ``source`` and data ``data`` (both
        ``(batch, *event)``); the coupling pairs them first. Used by reflow, where the
        pairs come from a trained model."""
        return self.regression_loss(self.coupling(source, data, context))

    def _pairs_loss(self, pairs: PairedBatch) -> Tensor:
        return self.regression_loss(pairs)

    def regression_loss(self, pairs: PairedBatch) -> Tensor:
        """The regression loss on coupled points ``pairs`` (``x0`` source, ``x1`` data)."""
        data = pairs.x1
        n = data.shape[0]
        t = self.time_sampler.sample(n, data)
        x_t, target = self._path_point_and_target(pairs, t)
        keep = None
        if self.guided and pairs.context is not None:
            drop = torch.rand(n, 1, dtype=data.dtype, device=data.device) < self.context_dropout
            keep = (~drop).to(data.dtype)
        prediction = self.network(x_t, t, self._network_context(pairs.context, keep))
        error = (prediction - target).reshape(n, -1)
        if self.loss_kind == "mse" and not self.loss_weighting.reweights:
            # Every row has as many entries, so the mean of the row means is the
            # mean of all entries: one reduction instead of two.
            return error.square().mean()
        per_row = row_regression_loss(error, self.loss_kind)
        return self.loss_weighting(per_row, t, self.time_sampler).mean()

    def _path_point_and_target(self, pairs: PairedBatch, t: Tensor) -> tuple[Tensor, Tensor]:
        """The path's point :math:`x_t` between ``pairs.x0`` and ``pairs.x1`` at times
        ``t: (batch,)`` and the network's regression target there."""
        data = pairs.x1
        n = data.shape[0]
        if self._linear_velocity:
            # The linear path's velocity target needs no scheduler call: the same
            # numbers with less per-step overhead (the step of a small network is short).
            # x_t = t x1 + (1 - slope t) x0 = x0 + t (x1 - slope x0), in two kernels.
            slope = 1.0 - self.scheduler.sigma_min  # type: ignore[attr-defined]
            tb = t.reshape(n, *([1] * (data.ndim - 1)))
            target = torch.sub(pairs.x1, pairs.x0, alpha=slope)
            x_t = torch.addcmul(pairs.x0, tb, target)
        else:
            sample = self.path.sample(pairs.x0, pairs.x1, t)
            x_t = sample.x_t
            target = regression_target(sample, self.parameterization)
        return x_t, target

    def solve(
        self,
        x0: Tensor,
        context: Tensor | None = None,
        *,
        solver: str | None = None,
        steps: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        guidance: float = 1.0,
        time_grid: Sequence[float] | Tensor | None = None,
        return_path: bool = False,
        advance: Advance | None = None,
    ) -> ODESolution:
        """Integrates the velocity field from source points ``x0: (n, *event)``.

        By default from :math:`t = 0` to 1 with this model's sampling solver; a
        decreasing ``time_grid`` runs data back to the source. ``advance`` replaces the
        sums of a fixed-step method's stages (see
        :func:`~pushforward.ode.solvers.runge_kutta_step`). Returns the
        :class:`~pushforward.ode.ODESolution` (final state, path when asked, and
        the number of network evaluations).
        """
        method = choice("solver", solver or self.solver, SOLVERS)
        grid = (0.0, 1.0) if time_grid is None else time_grid

        def field(t: Tensor, x: Any) -> Any:
            return self.velocity(x, t, context, guidance)

        fixed = method in FIXED_STEP_METHODS
        fold = self._domain_fold()
        solution = solve_ode(
            field,
            x0,
            grid,
            method,
            steps=(steps or self.steps) if fixed and time_grid is None else steps,
            atol=self.atol if atol is None else atol,
            rtol=self.rtol if rtol is None else rtol,
            return_path=return_path,
            step_hook=fold_step_hook(fold, method),
            advance=advance,
        )
        if fold is None:
            return solution
        # Folded after each fixed step already; an adaptive solve's states are folded here.
        path: list[State] | None = None
        if solution.path is not None:
            path = [fold(p) for p in solution.path if isinstance(p, Tensor)]
        return replace(solution, state=fold(final_state(solution)), path=path)

    def transport(self, x0: Tensor, context: Tensor | None = None, **options: Any) -> Tensor:
        r"""Pushes given source points ``x0`` through the flow, from t = 0 to t = 1.

        .. math:: x_1 = x_0 + \int_0^1 v_\theta(x_t, t, c)\,dt

        With an empirical source this is the learned map from the source data set
        onto the data (a straight, close-to-Monge map when trained with the ``ot``
        coupling); with a Gaussian base it maps given base points. ``x0``, the
        context and the result are in the data's units: the model's preprocessing
        maps them in and out. Differentiable in ``x0`` and the parameters; wrap in
        ``torch.no_grad()`` for inference.

        References: Liu et al. (2023), Flow Straight and Fast: Learning to Generate
        and Transfer Data with Rectified Flow.

        Args:
            x0: ``(n, *event)`` source points (of the source data set, or of the base).
            context: ``(n, context)`` or one row for all, or ``None``.
            **options: this model's ``sample_options`` (``solver``, ``steps``, ``guidance``).

        Returns:
            ``(n, *event)`` the transported points.
        """
        resolved = resolve_options(self.sample_options, options, self._method("transport"))
        x0 = self.check_input(x0)
        context = self.check_context(context, x0.shape[0])
        z0 = self.preprocessing.encode_source(x0)
        z1 = self._transport(z0, self.encode_context(context), resolved)
        return self.preprocessing.decode(z1)[0]

    def _transport(self, x0: Tensor, context: Tensor | None, options: ODESampleOptions) -> Tensor:
        """The flow's end points from source points, in the model's units."""
        solution = self.solve(
            x0, context, solver=options.solver, steps=options.steps, guidance=options.guidance
        )
        return final_state(solution)

    def _rsample_and_log_prob(
        self,
        n: int,
        context: Tensor | None,
        options: ODESampleOptions,
        log_prob_options: ODELogProbOptions | None,
    ) -> tuple[Tensor, Tensor | None]:
        x = self._transport(self.base.rsample(n), context, options)
        if log_prob_options is None:
            return x, None
        return x, self._log_prob(x, context, log_prob_options)

    def _likelihood_steps(self, method: str, steps: int | None) -> int | None:
        return (steps or self.steps) if method in FIXED_STEP_METHODS else None
