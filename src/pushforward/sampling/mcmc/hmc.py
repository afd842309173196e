"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pushforward.options import positive_int, unit_interval
from pushforward.sampling.mcmc.density import LogDensity, log_prob_and_gradient
from pushforward.sampling.mcmc.gradient_kernel import GradientKernel, StepSizeOptions
from pushforward.sampling.mcmc.kernel import ChainState
from pushforward.sampling.mcmc.metropolis import log_acceptance_ratio


@dataclass(frozen=True)
class HMCOptions(StepSizeOptions):
    """Options of ``hmc`` and ``neutra``: step size, leapfrog steps, warm-up tuning."""

    leapfrog_steps: int = field(default=10, metadata={"help": "leapfrog steps per proposal"})
    jitter: float = field(
        default=0.0,
        metadata={"help": "each chain's step size drawn in eps * (1 +- jitter), jitter in [0, 1)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("leapfrog_steps", self.leapfrog_steps)
        unit_interval("jitter", self.jitter)


class HamiltonianMonteCarlo(GradientKernel):
    r"""HMC: a leapfrog trajectory of :math:`L` steps of size :math:`\epsilon`, then Metropolis.

    With momentum :math:`r \sim \mathcal N(0, I)` and :math:`H(x, r) = -\log \pi(x) +
    \tfrac12 \lVert r \rVert^2`, each leapfrog step is

    .. math:: r \leftarrow r + \tfrac\epsilon2 \nabla \log\pi(x), \quad
              x \leftarrow x + \epsilon r, \quad
              r \leftarrow r + \tfrac\epsilon2 \nabla \log\pi(x),

    and the end point is accepted with probability :math:`\min(1, e^{H - H'})`. A
    trajectory that meets a point of density zero (``-inf``) or a non-finite
    gradient is rejected as a whole. With ``jitter`` :math:`j > 0` each chain
    draws its step size uniformly in :math:`\epsilon (1 \pm j)` at every step,
    which breaks the near-periodic trajectories a fixed path length can fall
    into (Neal 2011, section 5.4.2.2).

    References:
        Duane et al. (1987), Hybrid Monte Carlo; Neal (2011), MCMC Using
        Hamiltonian Dynamics.

    Args:
        density: the log-density, in the kernel's coordinates.
        step_size: :math:`\epsilon`.
        leapfrog_steps: :math:`L`.
        adapt: tune :math:`\epsilon` by dual averaging during warm-up.
        target_acceptance: the acceptance rate the tuning aims at.
        jitter: the relative spread :math:`j` of the step size.
    """

    def __init__(
        self,
        density: LogDensity,
        step_size: float = 0.1,
        leapfrog_steps: int = 10,
        adapt: bool = True,
        target_acceptance: float = 0.65,
        jitter: float = 0.0,
    ) -> None:
        super().__init__(density, step_size, adapt, target_acceptance)
        self.leapfrog_steps = int(leapfrog_steps)
        self.jitter = float(jitter)

    def propose(
        self, state: ChainState, gradient: Tensor, generator: torch.Generator
    ) -> tuple[ChainState, Tensor]:
        x = state.position
        momentum = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        kinetic = 0.5 * momentum.square().sum(-1)
        epsilon: float | Tensor = self.step_size
        if self.jitter > 0:
            spread = torch.rand(
                (x.shape[0], 1), dtype=x.dtype, device=x.device, generator=generator
            )
            epsilon = self.step_size * (1.0 + self.jitter * (2.0 * spread - 1.0))
        alive = torch.isfinite(state.log_density)
        log_density = state.log_density
        for _ in range(self.leapfrog_steps):
            momentum = momentum + (0.5 * epsilon) * gradient
            x = x + epsilon * momentum
            log_density, gradient = log_prob_and_gradient(self.density, x)
            alive = alive & torch.isfinite(log_density)
            momentum = momentum + (0.5 * epsilon) * gradient
        proposed = ChainState(x, log_density, gradient)
        log_ratio = log_acceptance_ratio(
            log_density - 0.5 * momentum.square().sum(-1), state.log_density - kinetic
        )
        # A trajectory through a region of zero density is rejected, even if it left it.
        return proposed, torch.where(alive, log_ratio, torch.full_like(log_ratio, -torch.inf))
