r"""Annealed importance sampling from a flow towards :math:`g = \tilde p^\alpha q^{1-\alpha}`.

With :math:`0 = \beta_0 < \beta_1 < \dots < \beta_{K+1} = 1` and
:math:`\pi_\beta = q^{1-\alpha\beta} \tilde p^{\alpha\beta}` (:mod:`.ais_transitions`),
AIS draws :math:`x_0 \sim q`, moves it by a kernel :math:`T_j` that leaves
:math:`\pi_{\beta_j}` invariant for :math:`j = 1, \dots, K` and weighs it by

.. math:: \log w = \sum_{j=0}^{K} \log \pi_{\beta_{j+1}}(x_j) - \log \pi_{\beta_j}(x_j),

so that :math:`\mathbb{E}[w] = Z_g = \int \tilde p^\alpha q^{1-\alpha}` and self-normalised
weights make expectations under :math:`g / Z_g` consistent (Neal 2001). :math:`K` is
``n_intermediate``; :math:`\alpha = 2` is FAB's target :math:`\tilde p^2 / q`.

References:
    Neal (2001), Annealed Importance Sampling; Midgley et al. (2023), Flow Annealed
    Importance Sampling Bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pushforward.options import choice, positive_float, positive_int
from pushforward.sampling.ais_transitions import (
    ADAPTATIONS,
    AnnealedPoints,
    AnnealingDensities,
    GeometricPath,
    HMCTransition,
    LogDensityFunction,
    MetropolisTransition,
    StepSizes,
    Transition,
)
from pushforward.sampling.importance import log_z_estimate, reverse_ess

SPACINGS = ("linear", "geometric")


def annealing_schedule(n_intermediate: int, spacing: str = "linear") -> list[float]:
    r"""The :math:`K + 2` inverse temperatures :math:`0 = \beta_0 < \dots < \beta_{K+1} = 1`.

    ``"linear"``: evenly spaced. ``"geometric"``: FAB's heuristic after Neal (2001), a
    quarter of the :math:`\beta` evenly in :math:`[0, 0.01]`, the rest geometrically
    spaced in :math:`[0.01, 1]`.
    """
    positive_int("n_intermediate", n_intermediate)
    choice("spacing", spacing, SPACINGS)
    if spacing == "linear":
        betas = np.linspace(0.0, 1.0, n_intermediate + 2)
    else:
        linear = n_intermediate // 4
        geometric = n_intermediate - linear - 1
        betas = np.concatenate(
            [np.linspace(0.0, 0.01, linear + 2)[:-1], np.geomspace(0.01, 1.0, geometric + 2)]
        )
    return [float(beta) for beta in betas]


@dataclass(frozen=True)
class AISResult:
    """The end of an AIS run.

    Attributes:
        x: ``(n, d)`` final points (detached).
        log_w: ``(n,)`` float64 AIS log-weights for the end density :math:`g`;
            ``-inf`` for chains dropped because a density was not finite at their start.
        log_q: ``(n,)`` :math:`\\log q` at the final points.
        log_p: ``(n,)`` :math:`\\log \\tilde p` at the final points.
        log_w_start: ``(n,)`` float64 plain importance log-weights of the start points for
            :math:`g`, :math:`\\log g(x_0) - \\log q(x_0)` (what AIS improves on).
        acceptance: the mean acceptance probability of each intermediate density's kernel.
        target_evaluations: rows the target was evaluated at (gradients included).
    """

    x: Tensor
    log_w: Tensor
    log_q: Tensor
    log_p: Tensor
    log_w_start: Tensor
    acceptance: tuple[float, ...]
    target_evaluations: int

    @property
    def kept(self) -> Tensor:
        """``(n,)`` bool: the chains with a finite log-weight."""
        return torch.isfinite(self.log_w)

    def ess(self) -> float:
        """Kish's effective sample size of the AIS weights, as a fraction of ``n``."""
        return reverse_ess(self.log_w)

    def log_z(self) -> tuple[float, float]:
        """:math:`\\log \\hat Z_g` (the log of the mean weight) and its standard error."""
        return log_z_estimate(self.log_w)


class AnnealedImportanceSampler:
    r"""AIS with HMC or Metropolis kernels from a flow to :math:`\tilde p^\alpha q^{1-\alpha}`.

    The step size of each intermediate density's kernel is tuned after every run towards
    ``target_acceptance`` (:class:`~pushforward.sampling.ais_transitions.StepSizes`); it
    is what the sampler carries from run to run (:meth:`state`).

    References:
        Neal (2001), Annealed Importance Sampling; Midgley et al. (2023), Flow Annealed
        Importance Sampling Bootstrap.

    Args:
        n_intermediate: :math:`K`, the intermediate densities (and kernel applications).
        transition: ``"hmc"`` or ``"metropolis"``.
        alpha: the end density's :math:`\alpha` (2: FAB; 1: the target).
        spacing: ``"linear"`` or ``"geometric"`` :math:`\beta` (:func:`annealing_schedule`).
        leapfrog_steps: HMC's leapfrog steps.
        transition_steps: kernel steps per intermediate density.
        step_size: the initial step size (HMC's :math:`\epsilon`, Metropolis' scale).
        adaptation: ``"fab"``, ``"dual-averaging"`` or ``"fixed"``.
        target_acceptance: the acceptance rate the tuning aims at.

    Example:
        >>> import torch
        >>> normal = torch.distributions.Normal(0.0, 1.0)
        >>> log_q = lambda x: normal.log_prob(x).sum(-1)
        >>> sampler = AnnealedImportanceSampler(n_intermediate=2, alpha=1.0)
        >>> x = torch.randn(64, 1)
        >>> result = sampler.run(x, log_q, lambda x: log_q(x) + 3.0)  # p = e^3 q
        >>> torch.allclose(result.log_w, torch.full((64,), 3.0, dtype=torch.float64))
        True
    """

    TRANSITIONS = ("hmc", "metropolis")

    def __init__(
        self,
        n_intermediate: int = 4,
        transition: str = "hmc",
        alpha: float = 2.0,
        spacing: str = "linear",
        leapfrog_steps: int = 5,
        transition_steps: int = 1,
        step_size: float = 1.0,
        adaptation: str = "fab",
        target_acceptance: float = 0.65,
    ) -> None:
        positive_int("n_intermediate", n_intermediate)
        choice("transition", transition, self.TRANSITIONS)
        choice("adaptation", adaptation, ADAPTATIONS)
        positive_float("alpha", alpha)
        positive_int("leapfrog_steps", leapfrog_steps)
        positive_int("transition_steps", transition_steps)
        positive_float("step_size", step_size)
        if isinstance(target_acceptance, bool) or not 0.0 < float(target_acceptance) < 1.0:
            raise ValueError(
                f"option 'target_acceptance' must be in (0, 1), got {target_acceptance!r}"
            )
        self.betas = annealing_schedule(n_intermediate, spacing)
        self.path = GeometricPath(float(alpha))
        self.transition: Transition = (
            HMCTransition(leapfrog_steps, transition_steps)
            if transition == "hmc"
            else MetropolisTransition(transition_steps)
        )
        self.step_sizes = StepSizes(n_intermediate, step_size, adaptation, target_acceptance)

    @property
    def n_intermediate(self) -> int:
        return len(self.betas) - 2

    def run(
        self,
        x: Tensor,
        log_q: LogDensityFunction,
        log_p: LogDensityFunction,
        adapt: bool = True,
        generator: torch.Generator | None = None,
    ) -> AISResult:
        """One AIS run from the start points ``x: (n, d)`` (samples of ``q``).

        Args:
            x: ``(n, d)`` samples of :math:`q`.
            log_q: the flow's log-density; evaluated without gradients to its parameters.
            log_p: the target's unnormalized log-density.
            adapt: tune the step sizes after each intermediate density.
            generator: the random generator; ``None``: torch's global one.

        Returns:
            The final points and their log-weights; non-finite starts are dropped
            (``log_w = -inf``), never NaN.
        """
        if x.ndim != 2:
            raise ValueError(f"AIS start points must have shape (n, d), got {tuple(x.shape)}")
        densities = AnnealingDensities(log_q, log_p)
        gradients = self.transition.uses_gradients
        points = densities.evaluate(x, gradients)
        alive = points.valid
        betas, path = self.betas, self.path
        log_w = self._increment(points, betas[0], betas[1], alive)
        start = self._increment(points, betas[0], 1.0, alive)
        acceptance = []
        for level in range(1, len(betas) - 1):
            points, accepted = self.transition(
                points, betas[level], path, densities, self.step_sizes[level - 1], generator
            )
            acceptance.append(accepted)
            if adapt:
                self.step_sizes.update(level - 1, accepted)
            log_w = log_w + self._increment(points, betas[level], betas[level + 1], alive)
        return AISResult(
            points.x,
            log_w,
            points.log_q,
            points.log_p,
            start,
            tuple(acceptance),
            densities.target_evaluations,
        )

    def _increment(
        self, points: AnnealedPoints, beta: float, next_beta: float, alive: Tensor
    ) -> Tensor:
        r"""``(n,)`` float64 :math:`\log \pi_{\beta'}(x) - \log \pi_\beta(x)`; ``-inf`` if dead.

        Along the geometric path it is :math:`\alpha (\beta' - \beta) (\log \tilde p - \log q)`;
        a kernel never moves a chain to an invalid point, so ``alive`` chains stay finite.
        """
        safe = alive & points.valid
        zero = torch.zeros_like(points.log_q)
        difference = torch.where(safe, points.log_p, zero) - torch.where(safe, points.log_q, zero)
        step = (self.path.alpha * (next_beta - beta)) * difference.to(torch.float64)
        return torch.where(safe, step, torch.full_like(step, -math.inf))

    def state(self) -> dict[str, Any]:
        """The tuned step sizes, as JSON."""
        return self.step_sizes.state()

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        self.step_sizes.restore(state)


__all__ = [
    "SPACINGS",
    "AISResult",
    "AnnealedImportanceSampler",
    "GeometricPath",
    "HMCTransition",
    "MetropolisTransition",
    "annealing_schedule",
]
