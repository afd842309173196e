"""Affine probability paths: x_t = alpha_t x1 + sigma_t x0 and its conditional velocity."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pushforward.matching.schedulers import Scheduler, SchedulerCoefficients


@dataclass
class PathSample:
    r"""A point on a conditional probability path and its velocity.

    Attributes:
        x0: ``(batch, *event)`` source points (:math:`t = 0`).
        x1: ``(batch, *event)`` data points (:math:`t = 1`).
        t: ``(batch,)`` times.
        x_t: ``(batch, *event)``, :math:`\alpha_t x_1 + \sigma_t x_0`.
        dx_t: ``(batch, *event)``, :math:`\dot\alpha_t x_1 + \dot\sigma_t x_0`,
            the conditional velocity (the flow-matching regression target).
    """

    x0: Tensor
    x1: Tensor
    t: Tensor
    x_t: Tensor
    dx_t: Tensor


class AffinePath:
    r"""The affine conditional probability path of a scheduler.

    .. math:: x_t = \alpha_t x_1 + \sigma_t x_0, \qquad
              \dot x_t = \dot\alpha_t x_1 + \dot\sigma_t x_0.

    Given a pair :math:`(x_0, x_1)` the path is deterministic; marginalising over
    pairs drawn from a coupling gives the probability path whose velocity field a
    flow-matching model regresses.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling;
        Liu et al. (2023), Flow Straight and Fast: Learning to Generate and
        Transfer Data with Rectified Flow;
        Albergo & Vanden-Eijnden (2023), Building Normalizing Flows with
        Stochastic Interpolants.

    Args:
        scheduler: the coefficients :math:`(\alpha_t, \sigma_t)`.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        if not isinstance(scheduler, Scheduler):
            raise TypeError(
                f"AffinePath needs a Scheduler (see make_scheduler), got {type(scheduler).__name__}"
            )
        self.scheduler = scheduler

    def __repr__(self) -> str:
        return f"AffinePath({self.scheduler!r})"

    def coefficients(self, t: Tensor, like: Tensor) -> SchedulerCoefficients:
        """The scheduler's coefficients at ``t: (batch,)``, broadcast against ``like``.

        Args:
            t: ``(batch,)`` times.
            like: ``(batch, *event)``; its dtype is used for the coefficients.

        Returns:
            coefficients of shape ``(batch, 1, ..., 1)``.
        """
        return self.scheduler(t.to(dtype=like.dtype)).broadcast_like(like)

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
        r"""The point :math:`x_t` between ``x0`` and ``x1`` at times ``t`` and its velocity.

        Args:
            x0: ``(batch, *event)`` source points.
            x1: ``(batch, *event)`` data points, paired row by row with ``x0``.
            t: ``(batch,)`` times in ``[0, 1]``.

        Returns:
            a :class:`PathSample`; ``t`` is returned in the dtype of ``x1``.
        """
        _check_pair(x0, x1, t)
        t = t.to(dtype=x1.dtype)
        c = self.scheduler(t).broadcast_like(x1)
        x_t = c.alpha * x1 + c.sigma * x0
        dx_t = c.d_alpha * x1 + c.d_sigma * x0
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, dx_t=dx_t)


def _check_pair(x0: Tensor, x1: Tensor, t: Tensor) -> None:
    for name, value in (("x0", x0), ("x1", x1), ("t", t)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if x0.shape != x1.shape:
        raise ValueError(
            f"source x0 has shape {tuple(x0.shape)} but data x1 has shape {tuple(x1.shape)}; "
            "they must match"
        )
    if x1.ndim == 0:
        raise ValueError("x0 and x1 need a batch dimension: shape (batch, *event)")
    if x0.dtype != x1.dtype:
        raise TypeError(f"source x0 is {x0.dtype} but data x1 is {x1.dtype}; they must match")
    if not x1.is_floating_point():
        raise TypeError(f"x0 and x1 must be floating-point tensors, got {x1.dtype}")
    if t.ndim != 1 or t.shape[0] != x1.shape[0]:
        raise ValueError(
            f"times t must have shape (batch,) = ({x1.shape[0]},), got {tuple(t.shape)}"
        )
    if not t.is_floating_point():
        raise TypeError(f"times t must be a floating-point tensor, got dtype {t.dtype}")
