"""What HMC and MALA share: a differentiable density, a step size and its warm-up tuning."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pushforward.inference import InferenceOptions
from pushforward.options import positive_float
from pushforward.sampling.mcmc.density import LogDensity, log_prob_and_gradient
from pushforward.sampling.mcmc.kernel import ChainState
from pushforward.sampling.mcmc.metropolis import acceptance_probability, metropolis_accept
from pushforward.sampling.mcmc.step_size import DualAveraging


@dataclass(frozen=True)
class StepSizeOptions(InferenceOptions):
    """The step size of a gradient-based kernel and its tuning by dual averaging in warm-up."""

    step_size: float = field(default=0.1, metadata={"help": "initial (or fixed) step size"})
    adapt_step_size: bool = field(
        default=True, metadata={"help": "tune the step size by dual averaging during warm-up"}
    )
    target_acceptance: float = field(
        default=0.65, metadata={"help": "acceptance rate the warm-up tuning aims at, in (0, 1)"}
    )

    def __post_init__(self) -> None:
        positive_float("step_size", self.step_size)
        if not isinstance(self.adapt_step_size, bool):
            raise ValueError(
                f"option 'adapt_step_size' must be True or False, got {self.adapt_step_size!r}"
            )
        value = self.target_acceptance
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ValueError(f"option 'target_acceptance' must be in (0, 1), got {value!r}")


class GradientKernel:
    """A kernel that moves by the gradient of ``density``, with a tunable step size.

    Subclasses implement :meth:`propose`: a proposed state and the ``(chains,)``
    log Metropolis ratio. Here: the state's set-up, the accept step, and the
    step size (tuned by :class:`DualAveraging` in warm-up when ``adapt``).
    """

    def __init__(
        self, density: LogDensity, step_size: float, adapt: bool, target_acceptance: float
    ) -> None:
        self.density = density
        self.step_size = float(step_size)
        self.adapt = adapt
        self.tuner = DualAveraging(step_size, target_acceptance) if adapt else None

    def initialize(self, x: Tensor) -> ChainState:
        with torch.no_grad():
            position = self.density.to_position(x)
        return self.evaluate(position)

    def evaluate(self, position: Tensor) -> ChainState:
        """The state at ``position: (chains, d)``: log-density and gradient."""
        log_density, gradient = log_prob_and_gradient(self.density, position)
        return ChainState(position.detach(), log_density, gradient)

    def propose(
        self, state: ChainState, gradient: Tensor, generator: torch.Generator
    ) -> tuple[ChainState, Tensor]:
        """A proposed state and the ``(chains,)`` log Metropolis ratio, from ``state``."""
        raise NotImplementedError

    def step(
        self, state: ChainState, generator: torch.Generator, adapt: bool = False
    ) -> tuple[ChainState, Tensor]:
        if state.gradient is None:
            state = self.evaluate(state.position)
        gradient = state.gradient
        if gradient is None:  # for the type checker: evaluate always fills it
            raise RuntimeError("the kernel's state has no gradient")
        proposed, log_ratio = self.propose(state, gradient, generator)
        accepted = metropolis_accept(log_ratio, generator)
        if adapt and self.tuner is not None:
            self.step_size = self.tuner.update(float(acceptance_probability(log_ratio).mean()))
        return state.where(accepted, proposed), accepted

    def data(self, state: ChainState) -> Tensor:
        with torch.no_grad():
            return self.density.to_data(state.position)

    def end_warmup(self) -> None:
        if self.tuner is not None and self.tuner.iteration > 0:
            self.step_size = self.tuner.final()
        self.tuner = None

    def details(self) -> dict[str, float]:
        return {"step_size": self.step_size}
