"""The MeanFlow identity: average velocities over intervals, their targets and weights.

Pure functions of tensors behind :class:`~pushforward.fewstep.meanflow.MeanFlow`,
in this library's time (:math:`t = 0` the source noise, :math:`t = 1` the data; see
:mod:`pushforward.fewstep.meanflow` for the paper's convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pushforward.matching.coupled import broadcast_rows

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
    target = velocity.detach() + broadcast_rows(t - s, z).detach() * derivative
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
