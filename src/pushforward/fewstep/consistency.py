"""Consistency flow matching: straight flows by velocity consistency, sampled in K steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution
from pushforward.fewstep.target import TargetNetwork
from pushforward.inference import NoOptions
from pushforward.matching.coupled import (
    CoupledModel,
    broadcast_rows,
    row_mse,
)
from pushforward.matching.couplings import BatchCoupling
from pushforward.matching.options import DEFAULT_NETWORK, NetworkOptions
from pushforward.ode.options import StepSampleOptions
from pushforward.option_groups import grouped_options
from pushforward.options import positive_int, sizes, unit_interval
from pushforward.paired import PairedBatch
from pushforward.registry import register

# Training times start this far above 0, as in the paper's code (its ``eps``);
# the sampler evaluates the field on the same shifted grid.
TIME_FLOOR = 1e-3

# The velocity term is dropped where t + delta_t reaches past the segment's end
# (the two velocities then belong to different segments); the paper's code uses
# this margin of 1.01 delta_t.
_SEGMENT_MARGIN = 1.01


def segment_ends(t: Tensor, segments: int) -> Tensor:
    r"""The end of the segment each time belongs to: :math:`e(t) = \lceil K t \rceil / K`.

    The segments are :math:`(i/K, (i+1)/K]`; a time on a boundary belongs to the
    segment it closes (the paper's code: ``searchsorted(..., side="left")``), and
    :math:`t = 0` to the first one.

    Args:
        t: ``(batch,)`` times in ``[0, 1]``.
        segments: the number of segments :math:`K`.

    Returns:
        ``(batch,)`` segment ends in ``{1/K, ..., 1}``.
    """
    return (torch.ceil(t * segments).clamp(1, segments)) / segments


def consistency_function(x: Tensor, t: Tensor, velocity: Tensor, end: Tensor) -> Tensor:
    r"""The straight-flow end point :math:`f(x_t, t) = x_t + (e - t)\, v(x_t, t)`.

    Args:
        x: ``(batch, *event)`` states at time ``t``.
        t: ``(batch,)`` times.
        velocity: ``(batch, *event)`` velocities at ``(x, t)``.
        end: ``(batch,)`` end times :math:`e` of the segments.

    Returns:
        ``(batch, *event)``.
    """
    return x + broadcast_rows(end - t, x) * velocity


@dataclass
class ConsistencyLoss:
    """The parts of the consistency flow-matching loss on one batch.

    Attributes:
        total: the training objective, ``endpoint + alpha * velocity`` averaged over rows.
        endpoint: mean of :math:`\\lVert f_\\theta - f_{\\theta^-} \\rVert^2` (per feature).
        velocity: mean of the masked :math:`\\lVert v_\\theta - v_{\\theta^-} \\rVert^2`.
    """

    total: Tensor
    endpoint: Tensor
    velocity: Tensor


class ConsistencyFlowMatching(CoupledModel):
    r"""Consistency flow matching: a velocity field whose straight extrapolations agree.

    A network :math:`v_\theta(x, t, c)` defines, on each of :math:`K` time segments
    :math:`(i/K, (i+1)/K]`, the straight-flow end point
    :math:`f_\theta(x_t, t) = x_t + (e(t) - t)\, v_\theta(x_t, t)` with :math:`e(t)`
    the segment's end (:func:`segment_ends`; :math:`t = 0` is the source, 1 the
    data). Points :math:`x_t = t x_1 + (1 - t) x_0` and
    :math:`x_r`, :math:`r = \min(t + \Delta t, 1)`, of one coupled pair must
    extrapolate to the same end, and their velocities must agree:

    .. math:: \mathcal L = \mathbb E\, \lVert f_\theta(x_t, t) - f_{\theta^-}(x_r, r)\rVert^2
              + \alpha\, \lVert v_\theta(x_t, t) - v_{\theta^-}(x_r, r)\rVert^2,

    where :math:`f_{\theta^-}(x_r, r)` keeps the end :math:`e(t)` of ``t``'s
    segment, and :math:`\theta^-` is a stop-gradient copy of :math:`\theta`
    (``target_ema = 0``, as in the paper's code) or an exponential moving average
    (:class:`TargetNetwork`). The velocity term is dropped where :math:`r` passes
    the segment's end. With ``boundary < 1``, a target time :math:`r \ge`
    ``boundary`` is replaced by the pair's own point at the segment end,
    :math:`e x_1 + (1 - e) x_0`, and the velocity term is dropped for
    :math:`t \ge` ``boundary`` (the paper's code; 1 turns it off). Squared errors
    are averaged over features, then rows. Training times are
    :math:`t \sim U[10^{-3}, 1]`.

    Sampling takes one Euler step of :math:`v_\theta` per segment,
    :math:`x \leftarrow x + v_\theta(x, t_i)/K` (``steps`` a multiple of
    :math:`K` splits each segment evenly), on the paper code's grid
    :math:`t_i = 10^{-3} + (1 - 10^{-3})\, i / N`, which puts every step just
    inside the segment it crosses. More steps than segments are Euler steps of an
    average velocity: they do not approach the flow as they grow (on moons, 4
    steps of a 2-segment model sampled worse than 2 unless the flow was straight).

    No ``log_prob``: :math:`v_\theta` is trained as the *average* velocity to the
    segment's end, not as the instantaneous velocity of the flow the sampler
    follows, so integrating its divergence would give the density of a different
    distribution from the one ``sample`` draws (the two agree only for perfectly
    straight flows).

    References:
        Yang et al. (2024), Consistency Flow Matching: Defining Straight Flows
        with Velocity Consistency;
        Song et al. (2023), Consistency Models.

    Args:
        network: the velocity network ``network(x, t, context) -> like x``.
        base: the source distribution.
        context_features: size of the context (0 for unconditional).
        coupling: how source and data points are paired (``independent``, ``ot``,
            ``sinkhorn``).
        segments: the number of segments :math:`K` (and of sampling steps).
        delta_t: the time gap :math:`\Delta t` of the consistency pairs.
        alpha: the weight :math:`\alpha` of the velocity term.
        boundary: target times at or above it are the pair's segment end point.
        target_ema: the rate of the target network's moving average; 0 uses the
            online network without gradients.
        steps: default number of sampling steps, a multiple of ``segments``
            (default ``segments``).
    """

    has_log_prob = False
    sample_options = StepSampleOptions

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        context_features: int = 0,
        *,
        coupling: str | BatchCoupling = "independent",
        segments: int = 2,
        delta_t: float = 1e-3,
        alpha: float = 1e-5,
        boundary: float = 1.0,
        target_ema: float = 0.0,
        steps: int | None = None,
    ) -> None:
        super().__init__(network, base, context_features, coupling)
        self.segments = positive_int("segments", segments)
        if isinstance(delta_t, bool) or not isinstance(delta_t, int | float):
            raise ValueError(f"option 'delta_t' must be a number, got {delta_t!r}")
        if not 0.0 < float(delta_t) < 1.0 / self.segments:
            raise ValueError(
                f"option 'delta_t' must be in (0, 1/segments) = (0, {1.0 / self.segments:g}), "
                f"got {delta_t!r}"
            )
        self.delta_t = float(delta_t)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 0:
            raise ValueError(f"option 'alpha' must be a number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.boundary = unit_interval("boundary", boundary, closed_right=True)
        self.target_ema = unit_interval("target_ema", target_ema)
        self.steps = self._check_steps(self.segments if steps is None else steps)
        self.target = TargetNetwork(network, self.target_ema) if self.target_ema > 0 else None

    def _check_steps(self, steps: object) -> int:
        steps = positive_int("steps", steps)
        if steps % self.segments:
            multiples = ", ".join(str(self.segments * k) for k in (1, 2, 3))
            raise ValueError(
                f"steps={steps} is not a multiple of the model's {self.segments} segments; "
                f"use {multiples}, ..."
            )
        return steps

    # -- the fields -------------------------------------------------------------

    def velocity(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The network's velocity :math:`v_\theta(x, t, c)`: ``x: (batch, *event)``,
        ``t: (batch,)`` or 0-dim; returns ``(batch, *event)``."""
        output: Tensor = self.network(x, t, context)
        return output

    def target_velocity(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The target's velocity :math:`v_{\theta^-}(x, t, c)`, without gradients."""
        if self.target is not None:
            return self.target(x, t, context)
        with torch.no_grad():
            return self.velocity(x, t, context)

    # -- training ----------------------------------------------------------------

    def _pairs_loss(self, pairs: PairedBatch) -> Tensor:
        return self.loss_terms(pairs).total

    def after_step(self) -> None:
        """Moves the moving-average target one step towards the online network (the
        training engine calls this after every optimizer step)."""
        if self.target is not None:
            self.target.update(self.network)

    def sample_times(self, n: int, like: Tensor) -> Tensor:
        r"""Training times :math:`t \sim U[10^{-3}, 1]`, ``(n,)`` in ``like``'s dtype and device."""
        u = torch.rand(n, dtype=like.dtype, device=like.device)
        return TIME_FLOOR + (1.0 - TIME_FLOOR) * u

    def loss_terms(self, pairs: PairedBatch, t: Tensor | None = None) -> ConsistencyLoss:
        """The loss and its parts on coupled points ``pairs`` at times ``t: (batch,)``
        (drawn by :meth:`sample_times` when not given). The target does not move here."""
        x0, x1 = pairs.x0, pairs.x1
        if t is None:
            t = self.sample_times(x1.shape[0], x1)
        r = (t + self.delta_t).clamp(max=1.0)
        end = segment_ends(t, self.segments)
        x_t = broadcast_rows(t, x1) * x1 + broadcast_rows(1.0 - t, x1) * x0
        x_r = broadcast_rows(r, x1) * x1 + broadcast_rows(1.0 - r, x1) * x0
        velocity = self.velocity(x_t, t, pairs.context)
        target_velocity = self.target_velocity(x_r, r, pairs.context)
        endpoint = consistency_function(x_t, t, velocity, end)
        target = consistency_function(x_r, r, target_velocity, end)
        if self.boundary < 1.0:
            at_end = broadcast_rows(end, x1) * x1 + broadcast_rows(1.0 - end, x1) * x0
            target = torch.where(broadcast_rows(r >= self.boundary, x1), at_end, target)
        endpoint_rows = row_mse(endpoint - target)
        keep = (t < self.boundary) & (end - t > _SEGMENT_MARGIN * self.delta_t)
        velocity_rows = row_mse(velocity - target_velocity) * keep.to(x1.dtype)
        return ConsistencyLoss(
            total=(endpoint_rows + self.alpha * velocity_rows).mean(),
            endpoint=endpoint_rows.mean(),
            velocity=velocity_rows.mean(),
        )

    # -- sampling -----------------------------------------------------------------

    def generate(
        self, source: Tensor, context: Tensor | None = None, *, steps: int | None = None
    ) -> Tensor:
        r"""Carries source points ``source: (n, *event)`` to data in ``steps`` Euler steps.

        :math:`x \leftarrow x + v_\theta(x, t_i) / N` with
        :math:`t_i = 10^{-3} + (1 - 10^{-3})\, i/N`, ``steps`` :math:`N` a multiple
        of the segments (default: the model's ``steps``); ``N`` network evaluations.
        Gradients flow when enabled.
        """
        count = self.steps if steps is None else self._check_steps(steps)
        x = source
        for i in range(count):
            t = x.new_tensor(TIME_FLOOR + (1.0 - TIME_FLOOR) * i / count)
            x = x + self.velocity(x, t, context) / count
        return x

    def _rsample_and_log_prob(
        self,
        n: int,
        context: Tensor | None,
        options: StepSampleOptions,
        log_prob_options: NoOptions | None,
    ) -> tuple[Tensor, Tensor | None]:
        """``options.steps`` network evaluations, a multiple of the segments (default:
        the model's ``steps``, one per segment unless set otherwise)."""
        count = self.steps if options.steps is None else self._check_steps(options.steps)
        return self.generate(self.base.rsample(n), context, steps=count), None


CONSISTENCY_FM_TRAIN_DEFAULTS = {"lr": 1e-3}
"""The peak learning rate ``pushforward train`` uses for ``consistency-fm``
(see :func:`consistency_flow_matching`)."""


@register("consistency-fm", train=CONSISTENCY_FM_TRAIN_DEFAULTS)
@grouped_options(network=NetworkOptions)
def consistency_flow_matching(
    features: int,
    context: int = 0,
    coupling: str = "ot",
    network: NetworkOptions = DEFAULT_NETWORK,
    segments: int = 2,
    delta_t: float = 1e-3,
    alpha: float = 1e-5,
    boundary: float = 1.0,
    target_ema: float = 0.0,
    steps: int | None = None,
) -> ConsistencyFlowMatching:
    """Consistency flow matching with an MLP velocity network (Yang et al. 2024).

    ``delta_t = 1e-3``, ``alpha = 1e-5``, two segments and a stop-gradient
    target are the paper code's settings for CIFAR-10 (its config also names a
    ``boundary`` of 0.9, which the code does not read: it uses 1). On moons
    (2000 steps, batch 512, the residual 4x256 network, energy distance of 10,000
    samples to 10,000 held-out points, whose noise is about 3e-4) minibatch OT
    pairs brought 2-step samples to that noise (independent pairs: 1.3e-3); a
    moving-average target (0.999) ended 80x worse; a peak learning rate of 5e-3
    ended 2x worse than 1e-3; one segment gave 1-step samples at 9e-4. More steps
    than segments do not help (Euler steps of an average velocity leave the flow
    where it bends).

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        coupling: ``independent``, ``ot`` (exact minibatch OT) or ``sinkhorn``.
        segments: the number of time segments, each with its own end point.
        delta_t: time gap of the consistency pairs.
        alpha: weight of the velocity-consistency term.
        boundary: target times at or above it are the pair's segment end point
            (1: never).
        target_ema: moving-average rate of the target network (0: stop-gradient copy).
        steps: default sampling steps, a multiple of ``segments`` (default ``segments``).
    """
    features, context = sizes(features, context)
    return ConsistencyFlowMatching(
        network.build_network(features, context),
        network.source(network.event_shape(features)),
        context,
        coupling=coupling,
        segments=segments,
        delta_t=delta_t,
        alpha=alpha,
        boundary=boundary,
        target_ema=target_ema,
        steps=steps,
    )
