"""The flow-matching model: a velocity field trained by regression, sampled and scored by ODEs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution, Empirical, make_base
from pushforward.flows.options import choice, hidden_widths, positive_int, sizes
from pushforward.matching.couplings import COUPLINGS, Coupling, make_coupling, sinkhorn_coupling
from pushforward.matching.parameterization import PARAMETERIZATIONS, convert, regression_target
from pushforward.matching.path import AffinePath
from pushforward.matching.schedulers import (
    SCHEDULERS,
    CondOTScheduler,
    Scheduler,
    make_scheduler,
)
from pushforward.matching.time_sampling import TIME_SAMPLERS, sample_times, time_density
from pushforward.model import Model
from pushforward.nn.velocity import VelocityMLP
from pushforward.ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, ODESolution, solve_ode
from pushforward.ode.likelihood import log_likelihood
from pushforward.registry import register

SOLVERS: tuple[str, ...] = tuple(FIXED_STEP_METHODS) + tuple(ADAPTIVE_METHODS)
"""Solver names ``sample`` and ``log_prob`` accept."""

LOSSES: tuple[str, ...] = ("mse", "pseudo-huber")
"""Regression losses: squared error, or the pseudo-Huber loss of Song & Dhariwal (2024)."""

LOSS_WEIGHTINGS: tuple[str, ...] = ("none", "uniform-time")
"""``uniform-time`` divides by the time density, so a non-uniform time sampler
changes the variance of the loss estimate but not the objective."""

DIVERGENCES: tuple[str, ...] = ("exact", "hutchinson")

# Where a data or noise prediction is turned into a velocity, the conversion
# divides by sigma_t (or alpha_t), which vanishes at an end of [0, 1]; the
# velocity is read this far inside the interval instead.
_CONVERSION_MARGIN = 1e-3


class FlowMatching(Model):
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
        coupling: name of the coupling of source and data points.
        parameterization: what the network predicts: velocity, data or noise.
        time_sampling: how training times are drawn.
        loss: ``"mse"`` or ``"pseudo-huber"``.
        loss_weighting: ``"none"`` or ``"uniform-time"``.
        context_dropout: probability of dropping the context in training (guidance).
        solver, steps: default ODE solver and number of steps for sampling.
        likelihood_solver, atol, rtol: default solver and tolerances for ``log_prob``.
        divergence: ``"exact"`` or ``"hutchinson"`` for ``log_prob``.
        probes: Hutchinson probes per point.
    """

    has_rsample = True

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        scheduler: Scheduler,
        context_features: int = 0,
        *,
        coupling: str = "independent",
        parameterization: str = "velocity",
        time_sampling: str = "uniform",
        loss: str = "mse",
        loss_weighting: str = "none",
        context_dropout: float = 0.0,
        solver: str = "rk4",
        steps: int = 20,
        likelihood_solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        divergence: str = "exact",
        probes: int = 1,
    ) -> None:
        super().__init__()
        self.network = network
        self.base = base
        self.scheduler = scheduler
        self.path = AffinePath(scheduler)
        self.event_shape = tuple(base.event_shape)
        self.context_features = int(context_features)
        self.coupling = choice("coupling", coupling, tuple(COUPLINGS))
        self.parameterization = choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.time_sampling = choice("time_sampling", time_sampling, TIME_SAMPLERS)
        self.loss_kind = choice("loss", loss, LOSSES)
        self.loss_weighting = choice("loss_weighting", loss_weighting, LOSS_WEIGHTINGS)
        if not 0.0 <= float(context_dropout) < 1.0:
            raise ValueError(f"option 'context_dropout' must be in [0, 1), got {context_dropout}")
        if context_dropout and not self.context_features:
            raise ValueError("option 'context_dropout' needs a conditional model (context > 0)")
        self.context_dropout = float(context_dropout)
        self.solver = choice("solver", solver, SOLVERS)
        self.steps = positive_int("steps", steps)
        self.likelihood_solver = choice("likelihood_solver", likelihood_solver, SOLVERS)
        self.atol = float(atol)
        self.rtol = float(rtol)
        self.divergence = choice("divergence", divergence, DIVERGENCES)
        self.probes = positive_int("probes", probes)
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
        if context is None or not self.guided:
            return context
        if keep is None:
            keep = torch.ones(context.shape[0], 1, dtype=context.dtype, device=context.device)
        return torch.cat([context * keep, keep], dim=1)

    def prediction(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """The raw network output at ``x: (batch, *event)`` and times ``t: (batch,)``."""
        return self.network(x, t, self._network_context(context, None))

    def _velocity_of(self, x: Tensor, t: Tensor, network_context: Tensor | None) -> Tensor:
        raw = self.network(x, t, network_context)
        if self.parameterization == "velocity":
            return raw
        t_safe = t.clamp(_CONVERSION_MARGIN, 1 - _CONVERSION_MARGIN)
        return convert(raw, self.parameterization, "velocity", x, self.scheduler(t_safe))

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
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if context is None or not self.guided or guidance == 1.0:
            return self._velocity_of(x, t, self._network_context(context, None))
        ones = torch.ones(context.shape[0], 1, dtype=context.dtype, device=context.device)
        conditional = self._velocity_of(x, t, self._network_context(context, ones))
        unconditional = self._velocity_of(
            x, t, self._network_context(context, torch.zeros_like(ones))
        )
        return unconditional + guidance * (conditional - unconditional)

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
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if context is None or not self.guided or guidance == 1.0:
            return self._velocity_and_divergence_of(x, t, self._network_context(context, None))
        ones = torch.ones(context.shape[0], 1, dtype=context.dtype, device=context.device)
        conditional, conditional_divergence = self._velocity_and_divergence_of(
            x, t, self._network_context(context, ones)
        )
        unconditional, unconditional_divergence = self._velocity_and_divergence_of(
            x, t, self._network_context(context, torch.zeros_like(ones))
        )
        return (
            unconditional + guidance * (conditional - unconditional),
            unconditional_divergence
            + guidance * (conditional_divergence - unconditional_divergence),
        )

    # -- the protocol -----------------------------------------------------------

    def loss(  # type: ignore[override]
        self, x: Tensor, context: Tensor | None = None, prepared: Coupling | None = None
    ) -> Tensor:
        """The flow-matching regression loss on a batch of data ``x: (batch, *event)``.

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
        """The regression loss for given source points ``source`` and data ``data`` (both
        ``(batch, *event)``); the coupling pairs them first. Used by reflow, where the
        pairs come from a trained model."""
        with torch.no_grad():
            pairs = self._couple(source, data, context)
        return self.regression_loss(pairs)

    def regression_loss(self, pairs: Coupling) -> Tensor:
        """The regression loss on coupled points ``pairs`` (``x0`` source, ``x1`` data)."""
        data = pairs.x1
        n = data.shape[0]
        t = sample_times(n, self.time_sampling, dtype=data.dtype, device=data.device)
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
        keep = None
        if self.guided and pairs.context is not None:
            drop = torch.rand(n, 1, dtype=data.dtype, device=data.device) < self.context_dropout
            keep = (~drop).to(data.dtype)
        prediction = self.network(x_t, t, self._network_context(pairs.context, keep))
        error = (prediction - target).reshape(n, -1)
        if self.loss_kind == "mse" and self.loss_weighting != "uniform-time":
            # Every row has as many entries, so the mean of the row means is the
            # mean of all entries: one reduction instead of two.
            return error.square().mean()
        if self.loss_kind == "mse":
            per_row = error.square().mean(dim=1)
        else:
            # Lee et al. (2024) pick c = 0.00054 sqrt(d) for d-dimensional data.
            c = 0.00054 * math.sqrt(error.shape[1])
            per_row = (torch.sqrt(error.square().sum(dim=1) + c * c) - c) / error.shape[1]
        if self.loss_weighting == "uniform-time":
            per_row = per_row / time_density(t, self.time_sampling)
        return per_row.mean()

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
    ) -> ODESolution:
        """Integrates the velocity field from source points ``x0: (n, *event)``.

        By default from :math:`t = 0` to 1 with this model's sampling solver; a
        decreasing ``time_grid`` runs data back to the source. Returns the
        :class:`~pushforward.ode.ODESolution` (final state, path when asked, and
        the number of network evaluations).
        """
        method = choice("solver", solver or self.solver, SOLVERS)
        grid = (0.0, 1.0) if time_grid is None else time_grid

        def field(t: Tensor, x: Any) -> Any:
            return self.velocity(x, t, context, guidance)

        fixed = method in FIXED_STEP_METHODS
        return solve_ode(
            field,
            x0,
            grid,
            method,
            steps=(steps or self.steps) if fixed and time_grid is None else steps,
            atol=self.atol if atol is None else atol,
            rtol=self.rtol if rtol is None else rtol,
            return_path=return_path,
        )

    def sample(  # type: ignore[override]
        self,
        n: int,
        context: Tensor | None = None,
        *,
        solver: str | None = None,
        steps: int | None = None,
        guidance: float = 1.0,
    ) -> Tensor:
        """Draws ``n`` samples ``(n, *event)`` by solving the ODE from base samples.

        Args:
            n: number of samples.
            context: ``(n, context)`` or one row for all, or ``None``.
            solver: ODE method (default: the model's ``solver``).
            steps: fixed steps (default: the model's ``steps``).
            guidance: classifier-free guidance scale (models trained with
                ``context_dropout``).
        """
        n, context = self._sampling_args(n, context)
        with torch.no_grad():
            x0 = self.base.sample(n)
            solution = self.solve(x0, context, solver=solver, steps=steps, guidance=guidance)
            return _tensor_state(solution)

    def transport(
        self,
        x0: Tensor,
        context: Tensor | None = None,
        *,
        solver: str | None = None,
        steps: int | None = None,
        guidance: float = 1.0,
    ) -> Tensor:
        r"""Pushes given source points ``x0`` through the flow, from t = 0 to t = 1.

        .. math:: x_1 = x_0 + \int_0^1 v_\theta(x_t, t, c)\,dt

        With an empirical source this is the learned map from the source data set
        onto the data (a straight, close-to-Monge map when trained with the ``ot``
        coupling); with a Gaussian base it maps given base points. Differentiable in
        ``x0`` and the parameters; wrap in ``torch.no_grad()`` for inference.

        References: Liu et al. (2023), Flow Straight and Fast: Learning to Generate
        and Transfer Data with Rectified Flow.

        Args:
            x0: ``(n, *event)`` source points, in the units the model was trained in.
            context: ``(n, context)`` or one row for all, or ``None``.
            solver: ODE method (default: the model's ``solver``).
            steps: fixed steps (default: the model's ``steps``).
            guidance: classifier-free guidance scale (models trained with
                ``context_dropout``).

        Returns:
            ``(n, *event)`` the transported points.
        """
        x0 = self.check_input(x0)
        context = self.check_context(context, x0.shape[0])
        return _tensor_state(self.solve(x0, context, solver=solver, steps=steps, guidance=guidance))

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        x0 = self.base.rsample(n)
        x = _tensor_state(self.solve(x0, context))
        if not with_log_prob:
            return x, None
        return x, self._log_prob(x, context)

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
        """Log-density of ``x: (batch, *event)`` by the instantaneous change of variables.

        Args:
            x: data points.
            context: ``(batch, context)``, one row, or ``None``.
            solver: ODE method (default ``likelihood_solver``, adaptive Dormand-Prince).
            steps: steps of a fixed-step solver.
            atol, rtol: tolerances of an adaptive solver.
            divergence: ``"exact"`` or ``"hutchinson"``.
            probes: Hutchinson probes per point.
            generator: random generator of the Hutchinson probes.

        Returns:
            ``(batch,)``, differentiable with respect to ``x`` and the parameters.
        """
        self._require("log_prob", self.has_log_prob)
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
        self._require("log_prob", self.has_log_prob)
        method = choice("solver", solver or self.likelihood_solver, SOLVERS)
        kind = choice("divergence", divergence or self.divergence, DIVERGENCES)

        def field(t: Tensor, state: Tensor) -> Tensor:
            return self.velocity(state, t, context)

        def field_and_divergence(t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
            return self.velocity_and_divergence(state, t, context)

        # A network that traces its own Jacobian (VelocityMLP) beats the generic
        # forward-mode trace; other networks take the generic path.
        fast = kind == "exact" and callable(getattr(self.network, "velocity_and_divergence", None))
        result = log_likelihood(
            field,
            x,
            self.base.log_prob,
            method=method,
            steps=(steps or self.steps) if method in FIXED_STEP_METHODS else None,
            atol=self.atol if atol is None else atol,
            rtol=self.rtol if rtol is None else rtol,
            divergence=kind,
            probes=probes or self.probes,
            generator=generator,
            velocity_and_divergence=field_and_divergence if fast else None,
        )
        return result.log_prob


def _tensor_state(solution: ODESolution) -> Tensor:
    """The final state of a solve whose state is one tensor."""
    if not isinstance(solution.state, Tensor):
        raise TypeError("expected a single-tensor ODE state")
    return solution.state


FM_TRAIN_DEFAULTS = {"lr": 5e-3}
"""The peak learning rate ``pushforward train`` uses for ``fm``: with the residual
4x256 network, 1e-3 left the KL 2-20x higher at 2000 steps and 1e-2 diverged in one
of twelve runs (``bench/fm_quality.py``)."""


@register("fm", train=FM_TRAIN_DEFAULTS)
def flow_matching(
    features: int,
    context: int = 0,
    hidden: Sequence[int] = (256, 256, 256, 256),
    shape: Sequence[int] | None = None,
    base: str = "normal",
    path: str = "cond-ot",
    sigma_min: float = 0.0,
    coupling: str = "ot",
    parameterization: str = "velocity",
    time_sampling: str = "uniform",
    loss: str = "mse",
    loss_weighting: str = "none",
    residual: bool = True,
    time_embedding: int = 32,
    time_scale: float = 10.0,
    activation: str = "silu",
    context_dropout: float = 0.0,
    solver: str = "rk4",
    steps: int = 20,
    likelihood_solver: str = "dopri5",
    atol: float = 1e-5,
    rtol: float = 1e-5,
    divergence: str | None = None,
    probes: int = 1,
    source_rows: int = 0,
) -> FlowMatching:
    """Flow matching with an MLP velocity network (Lipman et al. 2023).

    The defaults (a residual 4x256 network, exact minibatch OT coupling, and a
    peak learning rate of 5e-3 for ``pushforward train``) are those that matched
    or beat NSF's KL on the built-in toys at the same 2000-step budget in
    ``bench/fm_quality.py``; the plain 3x256 MLP with independent coupling and
    lr 1e-3 (torchcfm's examples) ended 10-60x worse. Minibatch OT costs an
    assignment per batch (about 25 ms for 512 points on one CPU core), prepared
    one step ahead in a thread; ``coupling="independent"`` trains about 4x
    faster on a CPU and fits less well on checkerboard-like data.

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        hidden: widths of the velocity network's hidden layers.
        shape: event shape, e.g. ``[1, 8, 8]`` for images (default ``[features]``).
        base: source distribution name, or ``empirical`` for the rows of a source
            data set (transport between two data sets; no ``log_prob``).
        path: scheduler of the affine path: ``cond-ot`` (linear), ``cosine``, ``vp``,
            ``polynomial``.
        sigma_min: the linear path's noise at ``t = 1`` (``cond-ot`` only).
        coupling: ``ot`` (exact minibatch OT, Tong et al. 2024), ``independent``,
            ``sinkhorn``.
        parameterization: ``velocity``, ``data`` or ``noise``.
        time_sampling: ``uniform``, ``logit-normal`` or ``u-shaped``.
        loss: ``mse`` or ``pseudo-huber``.
        loss_weighting: ``none`` or ``uniform-time``.
        residual: residual blocks in the velocity network.
        time_embedding: width of the sinusoidal time embedding (0: time is one raw input).
        time_scale: times are multiplied by this before the sinusoids; it sets the highest
            frequency in time, and so how fast the field may vary along a solve. The
            diffusion convention (1000) made a 2-D field need about 10x more adaptive
            steps (518 against 50 function evaluations on moons) for no better fit.
        activation: nonlinearity of the network.
        context_dropout: probability of dropping the context in training
            (classifier-free guidance; 0 disables it).
        solver, steps: default sampling solver and steps.
        likelihood_solver, atol, rtol: default solver and tolerances of ``log_prob``.
        divergence: ``exact`` or ``hutchinson`` (default: exact up to 64 features).
        probes: Hutchinson probes per point.
        source_rows: number of stored source rows of the ``empirical`` base (0
            otherwise); the model is built with zero rows, filled by loading saved
            weights or by ``model.base.assign_rows(rows)``.
    """
    features, context = sizes(features, context)
    event_shape = (features,) if shape is None else tuple(positive_int("shape", d) for d in shape)
    if math.prod(event_shape) != features:
        raise ValueError(
            f"option 'shape' {list(event_shape)} holds {math.prod(event_shape)} values, "
            f"but features is {features}"
        )
    scheduler_options: dict[str, Any] = {}
    choice("path", path, tuple(SCHEDULERS))
    if sigma_min:
        if path not in ("cond-ot", "linear"):
            raise ValueError(f"option 'sigma_min' applies to the 'cond-ot' path, not {path!r}")
        scheduler_options["sigma_min"] = float(sigma_min)
    scheduler = make_scheduler(path, **scheduler_options)
    guided = float(context_dropout) > 0
    network = VelocityMLP(
        features,
        context=context + (1 if guided and context else 0),
        hidden=hidden_widths(hidden),
        time_embedding=positive_int("time_embedding", time_embedding, minimum=0),
        time_scale=float(time_scale),
        activation=activation,
        residual=bool(residual),
    )
    if divergence is None:
        divergence = "exact" if features <= 64 else "hutchinson"
    return FlowMatching(
        network,
        _source(base, event_shape, source_rows),
        scheduler,
        context,
        coupling=coupling,
        parameterization=parameterization,
        time_sampling=time_sampling,
        loss=loss,
        loss_weighting=loss_weighting,
        context_dropout=context_dropout,
        solver=solver,
        steps=steps,
        likelihood_solver=likelihood_solver,
        atol=atol,
        rtol=rtol,
        divergence=divergence,
        probes=probes,
    )


def _source(base: str, event_shape: tuple[int, ...], source_rows: int) -> Distribution:
    """The source distribution of ``fm``: a named base, or an empirical one of stored rows."""
    rows = positive_int("source_rows", source_rows, minimum=0)
    if base == "empirical":
        if rows == 0:
            raise ValueError(
                "base 'empirical' needs source_rows, the number of stored source rows "
                "(pushforward train sets it from --source FILE)"
            )
        return Empirical.zeros(rows, event_shape)
    if rows:
        raise ValueError(
            f"option 'source_rows' applies to base 'empirical', not {base!r}; "
            'set base = "empirical" (pushforward train: pass --source FILE)'
        )
    return make_base(base, event_shape)
