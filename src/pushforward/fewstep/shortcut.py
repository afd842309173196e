"""Shortcut models: a flow map learned by self-consistency, sampled in any number of steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution
from pushforward.fewstep.self_consistency import (
    ShortcutSteps,
    continuous_steps,
    dyadic_levels,
    dyadic_steps,
    self_consistency_target,
)
from pushforward.fewstep.target import TargetNetwork
from pushforward.matching.coupled import (
    SOLVERS,
    CoupledVelocityModel,
    broadcast_rows,
    final_state,
    row_mse,
    zero_interval_velocity_and_divergence,
)
from pushforward.matching.couplings import BatchCoupling
from pushforward.matching.options import (
    DEFAULT_LIKELIHOOD,
    DEFAULT_TWO_TIME_NETWORK,
    LikelihoodOptions,
    TwoTimeNetworkOptions,
)
from pushforward.ode import FIXED_STEP_METHODS, solve_ode
from pushforward.ode.options import ODELogProbOptions, StepSampleOptions
from pushforward.option_groups import grouped_options
from pushforward.options import choice, positive_int, sizes, unit_interval
from pushforward.paired import PairedBatch
from pushforward.registry import register

STEP_SIZES: tuple[str, ...] = ("dyadic", "continuous")
"""How the self-consistency rows draw their step sizes (see :class:`ShortcutModel`)."""


@dataclass
class ShortcutLoss:
    """The parts of the shortcut loss on one batch.

    Attributes:
        total: the training objective: the squared errors of all rows averaged
            (flow-matching and self-consistency rows weigh the same).
        flow_matching: mean squared error of the flow-matching rows (0 if none).
        self_consistency: mean squared error of the self-consistency rows (0 if none).
    """

    total: Tensor
    flow_matching: Tensor
    self_consistency: Tensor


class ShortcutModel(CoupledVelocityModel):
    r"""A shortcut model: a network :math:`s_\theta(x_t, t, d)` that jumps a step :math:`d`.

    One step of size :math:`d` is :math:`x_{t+d} = x_t + d\, s_\theta(x_t, t, d)`,
    so :math:`x \mapsto x + d\, s_\theta(x, t, d)` is a learned flow map from time
    :math:`t` to :math:`t + d` (:math:`t = 0` the source, 1 the data). A
    ``consistency_fraction`` of each batch (the paper: 1/4; its code: 1/8) trains the
    self-consistency of the map, the rest is flow matching on the linear path
    :math:`x_t = t x_1 + (1 - t) x_0` at :math:`d = 0`:

    .. math:: \mathcal L = \mathbb E \lVert s_\theta(x_t, t, 0) - (x_1 - x_0)\rVert^2
              + \mathbb E \lVert s_\theta(x_t, t, 2d) - \mathrm{sg}[s_{target}]\rVert^2,

    :math:`s_{target}` from :func:`self_consistency_target` on a stop-gradient
    (``target_ema = 0``) or moving-average copy of the network. Flow-matching
    times are uniform on :math:`[0, 1]`. Step sizes of the consistency rows
    (``step_sizes``):

    * ``dyadic`` (the paper): :math:`2d = 2^{-k}`, :math:`k` uniform in
      :math:`\{0..\log_2 M - 1\}`, times on the :math:`2d` grid, half steps of the
      finest level :math:`1/M` read as :math:`d = 0` (:func:`dyadic_steps`);
    * ``continuous`` (a flow map of any step): :math:`2d \sim U(0, 1]`,
      :math:`t \sim U[0, 1 - 2d]` (:func:`continuous_steps`).

    Sampling with ``steps`` :math:`N` takes :math:`N` jumps of :math:`d = 1/N`
    (step sizes at or below the finest dyadic level use :math:`d = 0`, the
    flow-matching velocity, i.e. Euler steps): :math:`N` network evaluations. Any
    :math:`N \ge 1` works; dyadic training covers the powers of two up to
    :math:`M` best.

    ``log_prob`` is the density of the :math:`d \to 0` flow, the ODE
    :math:`\dot x = s_\theta(x, t, 0)`, by the instantaneous change of variables
    (as for flow matching),

    .. math:: \log p_1(x) = \log p_0(x_0) - \int_0^1 \nabla \cdot s_\theta(x_t, t, 0)\, dt;

    it is exact for samples of that ODE and approximate
    for the few-step sampler, whose distribution matches it only as far as the
    shortcuts are self-consistent. ``sample_and_log_prob`` therefore draws by
    solving that ODE (with the likelihood solver), not by jumping.

    The paper's code also clips targets to ``[-4, 4]`` (for image latents); this
    model does not.

    References:
        Frans et al. (2025), One Step Diffusion via Shortcut Models;
        Sabour et al. (2025), Align Your Flow: Scaling Continuous-Time Flow Map
        Distillation;
        Lipman et al. (2023), Flow Matching for Generative Modeling;
        Chen et al. (2018), Neural Ordinary Differential Equations.

    Args:
        network: the shortcut network ``network(x, t, d, context) -> like x``.
        base: the source distribution.
        context_features: size of the context (0 for unconditional).
        coupling: how source and data points are paired (``independent``, ``ot``,
            ``sinkhorn``).
        step_sizes: ``dyadic`` or ``continuous``.
        max_steps: :math:`M`, the finest dyadic step is :math:`1/M` (a power of two).
        consistency_fraction: the fraction of each batch given self-consistency targets.
        target_ema: moving-average rate of the target network; 0 uses the online
            network without gradients.
        steps: default number of sampling steps.
        likelihood_solver, atol, rtol: ODE solver and tolerances of ``log_prob`` (a
            fixed-step solver needs the ``steps`` of ``log_prob``).
        divergence: ``exact`` or ``hutchinson`` for ``log_prob``.
        probes: Hutchinson probes per point.
    """

    sample_options = StepSampleOptions

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        context_features: int = 0,
        *,
        coupling: str | BatchCoupling = "independent",
        step_sizes: str = "dyadic",
        max_steps: int = 128,
        consistency_fraction: float = 0.25,
        target_ema: float = 0.0,
        steps: int = 1,
        likelihood_solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        divergence: str = "exact",
        probes: int = 1,
    ) -> None:
        super().__init__(network, base, context_features, coupling)
        self.step_sizes = choice("step_sizes", step_sizes, STEP_SIZES)
        self.max_steps = positive_int("max_steps", max_steps, minimum=2)
        dyadic_levels(self.max_steps)
        self.consistency_fraction = unit_interval("consistency_fraction", consistency_fraction)
        self.target_ema = unit_interval("target_ema", target_ema)
        self.steps = positive_int("steps", steps)
        self._set_likelihood_options(likelihood_solver, atol, rtol, divergence, probes)
        self.target = TargetNetwork(network, self.target_ema) if self.target_ema > 0 else None

    # -- the fields -------------------------------------------------------------

    @property
    def finest_step(self) -> float:
        """Half steps at or below this are read as ``d = 0``: ``1/M`` (dyadic) or 0."""
        return 1.0 / self.max_steps if self.step_sizes == "dyadic" else 0.0

    def shortcut(self, x: Tensor, t: Tensor, d: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The shortcut :math:`s_\theta(x, t, d, c)`: ``x: (batch, *event)``, ``t`` and
        ``d`` ``(batch,)`` or 0-dim; returns ``(batch, *event)``."""
        output: Tensor = self.network(x, t, d, context)
        return output

    def velocity(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The instantaneous velocity :math:`s_\theta(x, t, 0, c)`, ``(batch, *event)``;
        ``t`` is ``(batch,)`` or a 0-dim time for all rows."""
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return self.shortcut(x, t, torch.zeros_like(t), context)

    def velocity_and_divergence(
        self, x: Tensor, t: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""The instantaneous velocity :math:`s_\theta(x, t, 0, c)` and its exact divergence
        in :math:`x`, by the two-time network's own Jacobian trace; ``(batch, *event)``
        and ``(batch,)``."""
        return zero_interval_velocity_and_divergence(self.network, x, t, context)

    def target_shortcut(
        self, x: Tensor, t: Tensor, d: Tensor, context: Tensor | None = None
    ) -> Tensor:
        r"""The target's shortcut :math:`s_{\theta^-}(x, t, d, c)`, without gradients."""
        if self.target is not None:
            return self.target(x, t, d, context)
        with torch.no_grad():
            return self.shortcut(x, t, d, context)

    # -- training ----------------------------------------------------------------

    def _pairs_loss(self, pairs: PairedBatch) -> Tensor:
        return self.loss_terms(pairs).total

    def after_step(self) -> None:
        """Moves the moving-average target one step towards the online network (the
        training engine calls this after every optimizer step)."""
        if self.target is not None:
            self.target.update(self.network)

    def consistency_rows(self, n: int) -> int:
        """How many of ``n`` rows get self-consistency targets (the last ones)."""
        return round(n * self.consistency_fraction)

    def draw_steps(self, n: int, like: Tensor) -> ShortcutSteps:
        """Step sizes and times of ``n`` self-consistency rows (``like`` gives dtype, device)."""
        if self.step_sizes == "dyadic":
            return dyadic_steps(n, self.max_steps, dtype=like.dtype, device=like.device)
        return continuous_steps(n, dtype=like.dtype, device=like.device)

    def loss_terms(
        self,
        pairs: PairedBatch,
        flow_times: Tensor | None = None,
        steps: ShortcutSteps | None = None,
    ) -> ShortcutLoss:
        """The loss and its parts on coupled points ``pairs``.

        The first rows get flow-matching targets at ``flow_times`` (drawn uniformly
        first, when not given), the last :meth:`consistency_rows` rows
        self-consistency targets at ``steps`` (drawn by :meth:`draw_steps`). The
        target network does not move here.
        """
        x0, x1, context = pairs.x0, pairs.x1, pairs.context
        n = x1.shape[0]
        n_consistency = self.consistency_rows(n)
        n_flow = n - n_consistency
        if flow_times is None:
            flow_times = torch.rand(n_flow, dtype=x1.dtype, device=x1.device)
        if steps is None:
            steps = self.draw_steps(n_consistency, x1)
        if flow_times.shape != (n_flow,) or steps.t.shape != (n_consistency,):
            raise ValueError(
                f"a batch of {n} rows has {n_flow} flow-matching and {n_consistency} "
                f"self-consistency rows; got {tuple(flow_times.shape)} times and "
                f"{tuple(steps.t.shape)} steps"
            )
        zero = x1.new_zeros(())
        per_row = []
        flow_matching = self_consistency = zero
        if n_flow:
            t = flow_times
            a0, a1 = x0[:n_flow], x1[:n_flow]
            x_t = broadcast_rows(t, a1) * a1 + broadcast_rows(1.0 - t, a1) * a0
            rows = row_mse(self.velocity(x_t, t, _head(context, n_flow)) - (a1 - a0))
            per_row.append(rows)
            flow_matching = rows.mean()
        if n_consistency:
            b0, b1 = x0[n_flow:], x1[n_flow:]
            tail = _tail(context, n_flow)
            x_t = broadcast_rows(steps.t, b1) * b1 + broadcast_rows(1.0 - steps.t, b1) * b0
            target = self_consistency_target(
                self.target_shortcut, x_t, steps.t, steps.half, steps.query, tail
            )
            rows = row_mse(self.shortcut(x_t, steps.t, steps.step, tail) - target)
            per_row.append(rows)
            self_consistency = rows.mean()
        return ShortcutLoss(
            total=torch.cat(per_row).mean(),
            flow_matching=flow_matching,
            self_consistency=self_consistency,
        )

    # -- sampling -----------------------------------------------------------------

    def generate(
        self, source: Tensor, context: Tensor | None = None, *, steps: int | None = None
    ) -> Tensor:
        r"""Carries source points ``source: (n, *event)`` to data in ``steps`` jumps.

        :math:`x \leftarrow x + d\, s_\theta(x, i d, d)` for :math:`i = 0..N-1`,
        :math:`d = 1/N` (queried at 0 at or below the finest dyadic level); ``N``
        network evaluations. Gradients flow when enabled.
        """
        count = self.steps if steps is None else positive_int("steps", steps)
        d = 1.0 / count
        query = source.new_tensor(0.0 if d <= self.finest_step else d)
        x = source
        for i in range(count):
            x = x + d * self.shortcut(x, source.new_tensor(i * d), query, context)
        return x

    def _rsample_and_log_prob(
        self,
        n: int,
        context: Tensor | None,
        options: StepSampleOptions,
        log_prob_options: ODELogProbOptions | None,
    ) -> tuple[Tensor, Tensor | None]:
        """``options.steps`` jumps of size ``1/steps`` (default: the model's ``steps``).

        With log-densities the samples come from the :math:`d \\to 0` flow's ODE
        (solved as ``log_prob_options`` say), whose density that is.
        """
        source = self.base.rsample(n)
        if log_prob_options is None:
            count = self.steps if options.steps is None else options.steps
            return self.generate(source, context, steps=count), None
        x = self.solve(
            source, context, solver=log_prob_options.solver, steps=log_prob_options.steps
        )
        return x, self._log_prob(x, context, log_prob_options)

    def solve(
        self,
        source: Tensor,
        context: Tensor | None = None,
        *,
        solver: str | None = None,
        steps: int | None = None,
    ) -> Tensor:
        r"""Integrates the :math:`d \to 0` flow :math:`\dot x = s_\theta(x, t, 0)` from
        ``source: (n, *event)`` at :math:`t = 0` to 1 (default: the likelihood solver)."""
        method = choice("solver", solver or self.likelihood_solver, SOLVERS)
        if method in FIXED_STEP_METHODS and steps is None:
            raise ValueError(f"the fixed-step solver {method!r} needs steps")

        def field(t: Tensor, x: Any) -> Any:
            return self.velocity(x, t, context)

        solution = solve_ode(
            field, source, (0.0, 1.0), method, steps=steps, atol=self.atol, rtol=self.rtol
        )
        return final_state(solution)

    def _likelihood_steps(self, method: str, steps: int | None) -> int | None:
        if method not in FIXED_STEP_METHODS:
            return None
        if steps is None:
            raise ValueError(f"the fixed-step solver {method!r} needs steps")
        return steps


def _head(context: Tensor | None, n: int) -> Tensor | None:
    return None if context is None else context[:n]


def _tail(context: Tensor | None, n: int) -> Tensor | None:
    return None if context is None else context[n:]


SHORTCUT_TRAIN_DEFAULTS = {"lr": 5e-3}
"""The peak learning rate ``pushforward train`` uses for ``shortcut`` (see :func:`shortcut`)."""


@register("shortcut", train=SHORTCUT_TRAIN_DEFAULTS)
@grouped_options(network=TwoTimeNetworkOptions, likelihood=LikelihoodOptions)
def shortcut(
    features: int,
    context: int = 0,
    coupling: str = "ot",
    network: TwoTimeNetworkOptions = DEFAULT_TWO_TIME_NETWORK,
    step_sizes: str = "dyadic",
    max_steps: int = 128,
    consistency_fraction: float = 0.25,
    target_ema: float = 0.0,
    steps: int = 1,
    likelihood: LikelihoodOptions = DEFAULT_LIKELIHOOD,
) -> ShortcutModel:
    """A shortcut model with a two-time MLP network (Frans et al. 2025).

    The defaults were picked on moons (2000 steps, batch 512, the residual 4x256
    network, energy distance of 10,000 samples to 10,000 held-out points, whose
    noise is about 3e-4): with minibatch OT pairs 1, 2 and 4 steps were at that
    noise, as were 100 Euler steps of ``fm``; independent pairs left 1 step at
    8e-4; targets from a moving average (0.999, as the paper's code takes them)
    lagged the network and ended 35x worse than the stop-gradient target; a peak
    learning rate of 5e-3 beat 1e-3 by 4x.

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        coupling: ``independent``, ``ot`` (exact minibatch OT) or ``sinkhorn``.
        step_sizes: ``dyadic`` (the paper's powers of two) or ``continuous``.
        max_steps: the finest dyadic step is ``1/max_steps`` (a power of two).
        consistency_fraction: the fraction of each batch with self-consistency targets.
        target_ema: moving-average rate of the target network (0: stop-gradient copy).
        steps: default number of sampling steps.
    """
    features, context = sizes(features, context)
    return ShortcutModel(
        network.build_network(features, context),
        network.source(network.event_shape(features)),
        context,
        coupling=coupling,
        step_sizes=step_sizes,
        max_steps=max_steps,
        consistency_fraction=consistency_fraction,
        target_ema=target_ema,
        steps=steps,
        **likelihood.model_options(features),
    )
