"""What every MCMC kernel of this package is: a state of many chains and one step on it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class ChainState:
    """The state of ``chains`` Markov chains run side by side.

    Attributes:
        position: ``(chains, d)`` the kernel's coordinates (the data, or a flow's
            latent space for NeuTra).
        log_density: ``(chains,)`` the log-density the kernel samples, at ``position``
            (``-inf`` outside the support).
        gradient: ``(chains, d)`` its gradient, for gradient-based kernels, else ``None``.
        log_proposal: ``(chains,)`` the log-density of the flow proposal at the
            state, for kernels that weigh by it; ``None`` when not (yet) known.
    """

    position: Tensor
    log_density: Tensor
    gradient: Tensor | None = None
    log_proposal: Tensor | None = None

    def where(self, accepted: Tensor, proposed: ChainState) -> ChainState:
        """``proposed`` on the chains where ``accepted`` (``(chains,)`` bool), else this state."""
        column = accepted.unsqueeze(-1)

        def pick(new: Tensor | None, old: Tensor | None, mask: Tensor) -> Tensor | None:
            if new is None or old is None:
                return None
            return torch.where(mask, new, old)

        return ChainState(
            position=torch.where(column, proposed.position, self.position),
            log_density=torch.where(accepted, proposed.log_density, self.log_density),
            gradient=pick(proposed.gradient, self.gradient, column),
            log_proposal=pick(proposed.log_proposal, self.log_proposal, accepted),
        )

    def forget_proposal(self) -> ChainState:
        """This state with ``log_proposal`` unknown (after a move that did not compute it)."""
        return replace(self, log_proposal=None)


class Kernel(Protocol):
    """A Markov kernel on many chains at once, leaving its density invariant.

    ``initialize`` takes starting points in the data's units; ``step`` moves every
    chain once and says which moved; ``data`` maps a state back to the data's
    units. During warm-up ``step(..., adapt=True)`` may tune the kernel (a step
    size); ``end_warmup`` freezes what was tuned, so the kept steps are Markov.
    """

    def initialize(self, x: Tensor) -> ChainState: ...

    def step(
        self, state: ChainState, generator: torch.Generator, adapt: bool
    ) -> tuple[ChainState, Tensor]: ...

    def data(self, state: ChainState) -> Tensor: ...

    def end_warmup(self) -> None: ...

    def details(self) -> dict[str, float]: ...
