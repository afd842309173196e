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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution
from pushforward.fewstep.average_velocity import (
    adaptive_weighted_loss,
    meanflow_target,
    sample_interval_times,
)
from pushforward.matching.coupled import (
    SOLVERS,
    CoupledVelocityModel,
    broadcast_rows,
    final_state,
    zero_interval_velocity_and_divergence,
)
from pushforward.matching.couplings import BatchCoupling
from pushforward.matching.options import (
    DEFAULT_TWO_TIME_NETWORK,
    LikelihoodOptions,
    TwoTimeNetworkOptions,
)
from pushforward.ode import FIXED_STEP_METHODS, ODESolution
from pushforward.ode.likelihood import DIVERGENCES
from pushforward.ode.options import ODELogProbOptions, StepSampleOptions
from pushforward.ode.solvers import State
from pushforward.option_groups import grouped_options, option
from pushforward.options import (
    choice,
    finite,
    fraction,
    non_negative,
    positive_float,
    positive_int,
    sizes,
)
from pushforward.paired import PairedBatch
from pushforward.registry import register

LIKELIHOOD_SOLVERS: tuple[str, ...] = SOLVERS
"""ODE methods ``MeanFlow.log_prob`` accepts."""


class MeanFlow(CoupledVelocityModel):
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
    sample_options = StepSampleOptions

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        context_features: int = 0,
        *,
        coupling: str | BatchCoupling = "ot",
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
        super().__init__(network, base, context_features, coupling)
        self.time_mean = finite("time_mean", time_mean)
        self.time_std = positive_float("time_std", time_std)
        self.equal_time_fraction = fraction("equal_time_fraction", equal_time_fraction)
        self.adaptive_p = non_negative("adaptive_p", adaptive_p)
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

    def velocity_and_divergence(
        self, z: Tensor, t: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""The instantaneous velocity :math:`u_\theta(z, t, t)` and its exact divergence in
        :math:`z`, by the network's own Jacobian trace (a two-time network's
        ``velocity_and_divergence``); ``(batch, *event)`` and ``(batch,)``."""
        return zero_interval_velocity_and_divergence(self.network, z, t, context)

    # -- training ---------------------------------------------------------------

    def matching_loss(self, source: Tensor, data: Tensor, context: Tensor | None = None) -> Tensor:
        """The MeanFlow loss for given source points ``source`` and data ``data`` (both
        ``(batch, *event)``); the coupling pairs them first."""
        return self.regression_loss(self.coupling(source, data, context))

    def _pairs_loss(self, pairs: PairedBatch) -> Tensor:
        return self.regression_loss(pairs)

    def regression_loss(self, pairs: PairedBatch) -> Tensor:
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
        z = broadcast_rows(s, x1) * x1 + (1.0 - broadcast_rows(s, x1)) * x0
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

    def _rsample_and_log_prob(
        self,
        n: int,
        context: Tensor | None,
        options: StepSampleOptions,
        log_prob_options: ODELogProbOptions | None,
    ) -> tuple[Tensor, Tensor | None]:
        """Base samples carried by ``options.steps`` jumps (default: the model's ``steps``)."""
        state = final_state(self.solve(self.base.rsample(n), context, steps=options.steps))
        if log_prob_options is None:
            return state, None
        return state, self._log_prob(state, context, log_prob_options)

    def _likelihood_steps(self, method: str, steps: int | None) -> int | None:
        if method not in FIXED_STEP_METHODS:
            return None
        return positive_int("steps", steps or self.likelihood_steps)


class _BoundAverageVelocity:
    """``(z, s, t) -> u_theta(z, s, t, context)`` with the context fixed, for ``jvp``."""

    def __init__(self, model: MeanFlow, context: Tensor | None) -> None:
        self.model = model
        self.context = context

    def __call__(self, z: Tensor, s: Tensor, t: Tensor) -> Tensor:
        return self.model.average_velocity(z, s, t, self.context)


@dataclass(frozen=True)
class MeanFlowLikelihoodOptions(LikelihoodOptions):
    """:class:`~pushforward.matching.options.LikelihoodOptions` with the steps of a
    fixed-step solver: MeanFlow samples by jumps, so it has no sampling ODE whose
    steps ``log_prob`` could take."""

    likelihood_steps: int = option(20, "steps of a fixed-step ``likelihood_solver``.")

    @classmethod
    def option_order(cls) -> tuple[str, ...]:
        """The likelihood options with ``likelihood_steps`` after ``likelihood_solver``."""
        names = [name for name in super().option_order() if name != "likelihood_steps"]
        names.insert(names.index("likelihood_solver") + 1, "likelihood_steps")
        return tuple(names)

    def model_options(self, features: int) -> dict[str, Any]:
        """The options checked, as keyword arguments of :class:`MeanFlow`."""
        steps = positive_int("likelihood_steps", self.likelihood_steps)
        return super().model_options(features) | {"likelihood_steps": steps}


DEFAULT_MEANFLOW_LIKELIHOOD = MeanFlowLikelihoodOptions()
"""The likelihood options of ``meanflow`` called with none given."""


MEANFLOW_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 5e-3}
"""The peak learning rate ``pushforward train`` uses for ``meanflow``: on moons with the
default network and independent pairs, 1e-3 left the one-step energy distance 30%
higher at 1000 steps, and 2e-3 40% higher at 2000 steps, than 5e-3 (``fm``'s rate)."""


@register("meanflow", train=MEANFLOW_TRAIN_DEFAULTS)
@grouped_options(network=TwoTimeNetworkOptions, likelihood=MeanFlowLikelihoodOptions)
def meanflow(
    features: int,
    context: int = 0,
    coupling: str = "ot",
    network: TwoTimeNetworkOptions = DEFAULT_TWO_TIME_NETWORK,
    time_mean: float = 0.4,
    time_std: float = 2.0,
    equal_time_fraction: float = 0.5,
    adaptive_p: float = 0.0,
    adaptive_c: float = 1e-3,
    steps: int = 1,
    likelihood: MeanFlowLikelihoodOptions = DEFAULT_MEANFLOW_LIKELIHOOD,
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
        coupling: ``independent``, ``ot`` (exact minibatch OT) or ``sinkhorn``.
        time_mean, time_std: the logit-normal of the training times, in this library's
            time (noise at 0): the paper's lognorm(-0.4, 1.0) with noise at 1 is
            ``time_mean=0.4``.
        equal_time_fraction: fraction of rows trained with ``s = t`` (plain flow
            matching); the paper's 25% of ``r != t`` is 0.75.
        adaptive_p, adaptive_c: the adaptive loss weight ``1 / (|delta|^2 + c)^p``
            (``adaptive_p=0`` is the plain squared error).
        steps: default number of sampling steps (1: one-step generation).
    """
    features, context = sizes(features, context)
    return MeanFlow(
        network.build_network(features, context),
        network.source(network.event_shape(features)),
        context,
        coupling=coupling,
        time_mean=time_mean,
        time_std=time_std,
        equal_time_fraction=equal_time_fraction,
        adaptive_p=adaptive_p,
        adaptive_c=adaptive_c,
        steps=steps,
        **likelihood.model_options(features),
    )
