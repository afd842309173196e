r"""What annealed importance sampling moves its points with: a geometric path, HMC, Metropolis.

AIS (:mod:`pushforward.sampling.ais`) walks points of a flow :math:`q` through densities

.. math:: \log \pi_\beta(x) = (1 - \alpha\beta) \log q(x) + \alpha\beta \log \tilde p(x),
          \qquad \beta \in [0, 1],

from :math:`\pi_0 = q` to :math:`\pi_1 = g = \tilde p^\alpha q^{1 - \alpha}` (:math:`\alpha = 2`:
FAB's :math:`g = \tilde p^2 / q`, the density that minimises the variance of importance
weights for the :math:`\alpha = 2` divergence; :math:`\alpha = 1`: :math:`g = \tilde p`). Every
point carries :math:`\log q` and :math:`\log \tilde p` (and their gradients for HMC), so any
:math:`\pi_\beta` is a sum of two numbers and AIS's weight increments cost no evaluation.

References:
    Neal (2001), Annealed Importance Sampling; Midgley et al. (2023), Flow Annealed
    Importance Sampling Bootstrap (the path to :math:`p^\alpha q^{1-\alpha}`, HMC with five
    leapfrog steps, the step-size rule); Hoffman & Gelman (2014), The No-U-Turn Sampler
    (dual averaging).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.sampling.mcmc.metropolis import (
    acceptance_probability,
    log_acceptance_ratio,
    metropolis_accept,
)
from pushforward.sampling.mcmc.step_size import DualAveraging

LogDensityFunction = Callable[[Tensor], Tensor]
"""``f(x: (batch, d)) -> (batch,)``, a log-density."""


@dataclass(frozen=True)
class AnnealedPoints:
    """Points of AIS with the two log-densities every intermediate density is made of.

    Attributes:
        x: ``(batch, d)`` positions (detached).
        log_q: ``(batch,)`` :math:`\\log q(x)`, NaN where it could not be evaluated.
        log_p: ``(batch,)`` :math:`\\log \\tilde p(x)`, ``-inf`` outside the support.
        grad_q, grad_p: ``(batch, d)`` their gradients in ``x`` (HMC), else ``None``.
    """

    x: Tensor
    log_q: Tensor
    log_p: Tensor
    grad_q: Tensor | None = None
    grad_p: Tensor | None = None

    @property
    def valid(self) -> Tensor:
        """``(batch,)`` bool: finite position, log-densities and gradients."""
        ok = (
            torch.isfinite(self.x).all(-1) & torch.isfinite(self.log_q) & torch.isfinite(self.log_p)
        )
        for gradient in (self.grad_q, self.grad_p):
            if gradient is not None:
                ok = ok & torch.isfinite(gradient).all(-1)
        return ok

    def where(self, mask: Tensor, other: AnnealedPoints) -> AnnealedPoints:
        """``other`` on the rows where ``mask`` (``(batch,)`` bool), else these points."""
        column = mask.unsqueeze(-1)

        def pick(new: Tensor | None, old: Tensor | None) -> Tensor | None:
            if new is None or old is None:
                return None
            return torch.where(column, new, old)

        return AnnealedPoints(
            torch.where(column, other.x, self.x),
            torch.where(mask, other.log_q, self.log_q),
            torch.where(mask, other.log_p, self.log_p),
            pick(other.grad_q, self.grad_q),
            pick(other.grad_p, self.grad_p),
        )


class AnnealingDensities:
    """Evaluates :math:`\\log q` and :math:`\\log \\tilde p` at AIS points; counts target rows.

    Neither evaluation reaches the flow's parameters: gradients, where asked, are taken
    with respect to the points only. Rows that are not finite are shown to neither
    density (zeros stand in; their values come back NaN, so they are invalid).

    Args:
        log_q: the flow's log-density.
        log_p: the target's unnormalized log-density (tempered as wanted).
    """

    def __init__(self, log_q: LogDensityFunction, log_p: LogDensityFunction) -> None:
        self.log_q = log_q
        self.log_p = log_p
        self.target_evaluations = 0

    def evaluate(self, x: Tensor, gradients: bool) -> AnnealedPoints:
        """The points ``x: (batch, d)`` with their log-densities (and gradients when asked)."""
        x = x.detach()
        finite = torch.isfinite(x).all(-1)
        safe = torch.where(finite.unsqueeze(-1), x, torch.zeros_like(x))
        self.target_evaluations += int(x.shape[0])
        grad_q: Tensor | None = None
        grad_p: Tensor | None = None
        if gradients:
            log_q, grad_q = _value_and_gradient(self.log_q, safe, "the flow's log_prob")
            log_p, grad_p = _value_and_gradient(self.log_p, safe, "the target's log_prob")
        else:
            with torch.no_grad():
                log_q, log_p = self.log_q(safe), self.log_p(safe)
        nan = torch.full_like(log_q, math.nan)
        return AnnealedPoints(
            x, torch.where(finite, log_q, nan), torch.where(finite, log_p, nan), grad_q, grad_p
        )


def _value_and_gradient(
    function: LogDensityFunction, x: Tensor, what: str
) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        point = x.detach().requires_grad_(True)
        values = function(point)
        if not values.requires_grad:
            raise ValueError(
                f"{what} is not differentiable in x: HMC needs its gradient; use "
                "transition='metropolis'"
            )
        # Rows at +-inf or NaN add nothing to the sum, so they cannot poison the others.
        summed = torch.where(torch.isfinite(values), values, torch.zeros_like(values)).sum()
        (gradient,) = torch.autograd.grad(summed, point, allow_unused=True)
    if gradient is None:
        gradient = torch.zeros_like(point)
    return values.detach(), gradient.detach()


@dataclass(frozen=True)
class GeometricPath:
    r"""The geometric path from :math:`q` to :math:`g = \tilde p^\alpha q^{1 - \alpha}`.

    .. math:: \log \pi_\beta = (1 - \alpha\beta) \log q + \alpha\beta \log \tilde p

    Attributes:
        alpha: :math:`\alpha` (2: FAB's :math:`\tilde p^2 / q`; 1: the target itself).
    """

    alpha: float = 2.0

    def coefficients(self, beta: float) -> tuple[float, float]:
        """``(1 - alpha beta, alpha beta)``: the factors of log q and log p~ in log pi_beta."""
        return 1.0 - self.alpha * beta, self.alpha * beta

    def log_density(self, beta: float, points: AnnealedPoints) -> Tensor:
        """``(batch,)`` :math:`\\log \\pi_\\beta` of the points, ``-inf`` where they are invalid."""
        a, b = self.coefficients(beta)
        valid = points.valid
        # Masked before the sum: a negative coefficient times -inf would be +inf.
        zero = torch.zeros_like(points.log_q)
        value = a * torch.where(valid, points.log_q, zero) + b * torch.where(
            valid, points.log_p, zero
        )
        return torch.where(valid, value, torch.full_like(value, -math.inf))

    def gradient(self, beta: float, points: AnnealedPoints) -> Tensor:
        """``(batch, d)`` :math:`\\nabla \\log \\pi_\\beta`, zero where the points are invalid."""
        if points.grad_q is None or points.grad_p is None:
            raise ValueError("the points carry no gradients (evaluate them with gradients=True)")
        a, b = self.coefficients(beta)
        valid = points.valid.unsqueeze(-1)
        zero = torch.zeros_like(points.grad_q)
        value = a * torch.where(valid, points.grad_q, zero) + b * torch.where(
            valid, points.grad_p, zero
        )
        return torch.where(valid, value, zero)


ADAPTATIONS = ("fab", "dual-averaging", "fixed")


class StepSizes:
    r"""One step size per intermediate density, tuned towards a target acceptance rate.

    ``"fab"`` is FAB's rule: after each transition the step size is multiplied by
    ``multiplier`` (1.02) when the mean acceptance probability exceeds the target and
    divided by it otherwise. ``"dual-averaging"`` runs Hoffman & Gelman's scheme
    (:class:`~pushforward.sampling.mcmc.step_size.DualAveraging`) for each density and
    uses its iterate :math:`\epsilon_m` throughout, as the flow, and so every
    :math:`\pi_\beta`, keeps changing. ``"fixed"`` keeps the initial step size.

    Everything here is Python floats, so :meth:`state` is exact JSON.
    """

    def __init__(
        self,
        levels: int,
        initial: float,
        adaptation: str = "fab",
        target_acceptance: float = 0.65,
        multiplier: float = 1.02,
    ) -> None:
        self.adaptation = adaptation
        self.target_acceptance = float(target_acceptance)
        self.multiplier = float(multiplier)
        self.values = [float(initial)] * levels
        self.tuners = (
            [DualAveraging(initial, target_acceptance) for _ in range(levels)]
            if adaptation == "dual-averaging"
            else []
        )

    def __getitem__(self, level: int) -> float:
        return self.values[level]

    def update(self, level: int, acceptance: float) -> None:
        """Takes the mean acceptance probability of a transition at density ``level``."""
        if self.adaptation == "fab":
            factor = self.multiplier if acceptance > self.target_acceptance else 1 / self.multiplier
            self.values[level] *= factor
        elif self.adaptation == "dual-averaging":
            self.values[level] = self.tuners[level].update(acceptance)

    def state(self) -> dict[str, Any]:
        tuners = [
            [tuner.mu, tuner.iteration, tuner.statistic, tuner.log_average, tuner.step_size]
            for tuner in self.tuners
        ]
        return {"values": list(self.values), "tuners": tuners}

    def restore(self, state: dict[str, Any]) -> None:
        if len(state["values"]) != len(self.values):
            raise ValueError(
                f"the saved state has {len(state['values'])} step sizes, this sampler "
                f"{len(self.values)} intermediate densities"
            )
        self.values = [float(value) for value in state["values"]]
        for tuner, saved in zip(self.tuners, state["tuners"], strict=True):
            tuner.mu, tuner.iteration = float(saved[0]), int(saved[1])
            tuner.statistic, tuner.log_average, tuner.step_size = map(float, saved[2:])


def _accept(log_ratio: Tensor, generator: torch.Generator | None) -> Tensor:
    # metropolis_accept draws from the global generator when given None.
    return metropolis_accept(log_ratio, generator)  # type: ignore[arg-type]


def _mean_acceptance(log_ratio: Tensor, alive: Tensor) -> float:
    if not bool(alive.any()):
        return 0.0
    return float(acceptance_probability(log_ratio)[alive].mean())


@dataclass(frozen=True)
class HMCTransition:
    r"""HMC steps leaving :math:`\pi_\beta` invariant: :math:`L` leapfrog steps of :math:`\epsilon`.

    .. math:: r \leftarrow r + \tfrac\epsilon2 \nabla \log\pi_\beta(x), \quad
              x \leftarrow x + \epsilon r, \quad
              r \leftarrow r + \tfrac\epsilon2 \nabla \log\pi_\beta(x)

    then Metropolis on :math:`H = -\log \pi_\beta(x) + \tfrac12 \lVert r \rVert^2`. A
    trajectory through an invalid point (outside the support, a non-finite density or
    gradient) is rejected.

    Attributes:
        leapfrog_steps: :math:`L` (FAB: 5).
        steps: HMC steps per intermediate density (FAB: 1).
    """

    leapfrog_steps: int = 5
    steps: int = 1
    uses_gradients = True

    def __call__(
        self,
        points: AnnealedPoints,
        beta: float,
        path: GeometricPath,
        densities: AnnealingDensities,
        step_size: float,
        generator: torch.Generator | None = None,
    ) -> tuple[AnnealedPoints, float]:
        """``steps`` HMC steps on ``points``; returns them and the mean acceptance probability."""
        acceptance = 0.0
        for _ in range(self.steps):
            alive = points.valid
            x = points.x
            momentum = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            start_energy = path.log_density(beta, points) - 0.5 * momentum.square().sum(-1)
            gradient = path.gradient(beta, points)
            moved = points
            through = alive
            for _ in range(self.leapfrog_steps):
                momentum = momentum + (0.5 * step_size) * gradient
                x = x + step_size * momentum
                moved = densities.evaluate(x, gradients=True)
                through = through & moved.valid
                gradient = path.gradient(beta, moved)
                momentum = momentum + (0.5 * step_size) * gradient
            end_energy = path.log_density(beta, moved) - 0.5 * momentum.square().sum(-1)
            log_ratio = log_acceptance_ratio(end_energy, start_energy)
            log_ratio = torch.where(through, log_ratio, torch.full_like(log_ratio, -math.inf))
            points = points.where(_accept(log_ratio, generator), moved)
            acceptance += _mean_acceptance(log_ratio, alive) / self.steps
        return points, acceptance


@dataclass(frozen=True)
class MetropolisTransition:
    r"""Random-walk Metropolis steps that leave :math:`\pi_\beta` invariant.

    .. math:: x' = x + \epsilon\, \xi, \quad \xi \sim \mathcal N(0, I), \quad
              \text{accepted with probability } \min(1, \pi_\beta(x') / \pi_\beta(x))

    Needs no gradients (a target that is not differentiable).

    Attributes:
        steps: Metropolis steps per intermediate density.
    """

    steps: int = 1
    uses_gradients = False

    def __call__(
        self,
        points: AnnealedPoints,
        beta: float,
        path: GeometricPath,
        densities: AnnealingDensities,
        step_size: float,
        generator: torch.Generator | None = None,
    ) -> tuple[AnnealedPoints, float]:
        """``steps`` Metropolis steps on ``points``; returns them and the mean acceptance."""
        acceptance = 0.0
        for _ in range(self.steps):
            alive = points.valid
            x = points.x
            noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            proposed = densities.evaluate(x + step_size * noise, gradients=False)
            log_ratio = log_acceptance_ratio(
                path.log_density(beta, proposed), path.log_density(beta, points)
            )
            log_ratio = torch.where(alive, log_ratio, torch.full_like(log_ratio, -math.inf))
            points = points.where(_accept(log_ratio, generator), proposed)
            acceptance += _mean_acceptance(log_ratio, alive) / self.steps
        return points, acceptance


Transition = HMCTransition | MetropolisTransition
