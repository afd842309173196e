"""The Metropolis-adjusted Langevin algorithm (MALA)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pushforward.sampling.mcmc.density import LogDensity, log_prob_and_gradient
from pushforward.sampling.mcmc.gradient_kernel import GradientKernel, StepSizeOptions
from pushforward.sampling.mcmc.kernel import ChainState
from pushforward.sampling.mcmc.metropolis import log_acceptance_ratio


@dataclass(frozen=True)
class MALAOptions(StepSizeOptions):
    """Options of ``mala`` and ``neutra-mala``: the step size and its warm-up tuning."""

    target_acceptance: float = field(
        default=0.574, metadata={"help": "acceptance rate the warm-up tuning aims at, in (0, 1)"}
    )


def langevin_log_transition(to: Tensor, start: Tensor, gradient: Tensor, step: float) -> Tensor:
    r"""``(batch,)`` :math:`\log q(x' \mid x)` of the Langevin proposal, up to a constant.

    .. math:: q(x' \mid x) = \mathcal N\big(x';\ x + h \nabla\log\pi(x),\ 2h I\big)
    """
    return -(to - start - step * gradient).square().sum(-1) / (4.0 * step)


class MetropolisAdjustedLangevin(GradientKernel):
    r"""MALA: a Langevin step corrected by Metropolis-Hastings.

    .. math:: x' = x + h \nabla \log \pi(x) + \sqrt{2h}\, \xi, \quad \xi \sim \mathcal N(0, I),

    accepted with probability
    :math:`\min\big(1, \pi(x') q(x \mid x') / (\pi(x) q(x' \mid x))\big)`.
    A proposal of density zero (``-inf``) is rejected.

    References:
        Roberts & Tweedie (1996), Exponential Convergence of Langevin
        Distributions and Their Discrete Approximations; Roberts & Rosenthal
        (1998), Optimal Scaling of Discrete Approximations to Langevin Diffusions
        (the 0.574 acceptance rate).

    Args:
        density: the log-density, in the kernel's coordinates.
        step_size: :math:`h`.
        adapt: tune :math:`h` by dual averaging during warm-up.
        target_acceptance: the acceptance rate the tuning aims at.
    """

    def __init__(
        self,
        density: LogDensity,
        step_size: float = 0.1,
        adapt: bool = True,
        target_acceptance: float = 0.574,
    ) -> None:
        super().__init__(density, step_size, adapt, target_acceptance)

    def propose(
        self, state: ChainState, gradient: Tensor, generator: torch.Generator
    ) -> tuple[ChainState, Tensor]:
        x, h = state.position, self.step_size
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        moved = x + h * gradient + (2.0 * h) ** 0.5 * noise
        log_density, moved_gradient = log_prob_and_gradient(self.density, moved)
        log_ratio = log_acceptance_ratio(
            log_density + langevin_log_transition(x, moved, moved_gradient, h),
            state.log_density + langevin_log_transition(moved, x, gradient, h),
        )
        return ChainState(moved, log_density, moved_gradient), log_ratio
