"""Local-global MCMC: a flow's global move followed by local Langevin steps in the data."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pushforward.options import choice, positive_float, positive_int, unit_interval
from pushforward.sampling.mcmc.independent import IndependentMetropolisHastings
from pushforward.sampling.mcmc.kernel import ChainState
from pushforward.sampling.mcmc.langevin import MALAOptions, MetropolisAdjustedLangevin

GLOBAL_MOVES = ("isir", "imh")


@dataclass(frozen=True)
class LocalGlobalOptions(MALAOptions):
    """Options of ``local-global``: the global move, its proposal, and the local MALA steps."""

    global_kernel: str = field(default="isir", metadata={"help": "global move: isir or imh"})
    particles: int = field(default=10, metadata={"help": "i-SIR candidates per step (>= 2)"})
    local_steps: int = field(default=5, metadata={"help": "MALA steps after each global move"})
    defensive: float = field(
        default=0.0, metadata={"help": "weight of the wide Gaussian in the proposal, in [0, 1)"}
    )
    defensive_scale: float = field(
        default=3.0, metadata={"help": "scale of the defensive Gaussian N(0, s^2 I)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        choice("global_kernel", self.global_kernel, GLOBAL_MOVES)
        positive_int("particles", self.particles, minimum=2)
        positive_int("local_steps", self.local_steps, minimum=0)
        unit_interval("defensive", self.defensive)
        positive_float("defensive_scale", self.defensive_scale)


class LocalGlobal:
    r"""Alternates one global move through the flow with :math:`k` local MALA steps.

    .. math:: K = K_{\text{global}} \, K_{\text{local}}^{k}

    The global kernel (i-SIR or independent Metropolis-Hastings with the flow
    as proposal) jumps between modes the flow covers; the local kernel (MALA on
    the target itself, in the data's units) explores where the flow is poor.
    Both leave the target invariant, so their composition does. The reported
    acceptance is the global move's; the local one is in :meth:`details`.

    References:
        Samsonov et al. (2022), Local-Global MCMC Kernels: the Best of Both
        Worlds; Grenioux et al. (2023), On Sampling with Approximate Transport Maps.

    Args:
        global_move: the flow-proposal kernel.
        local_move: the MALA kernel on the target in the data's units.
        local_steps: :math:`k`.
    """

    def __init__(
        self,
        global_move: IndependentMetropolisHastings,
        local_move: MetropolisAdjustedLangevin,
        local_steps: int,
    ) -> None:
        self.global_move = global_move
        self.local_move = local_move
        self.local_steps = int(local_steps)
        self.local_accepted = 0.0
        self.local_moves = 0

    def initialize(self, x: Tensor) -> ChainState:
        return self.global_move.initialize(x)

    def step(
        self, state: ChainState, generator: torch.Generator, adapt: bool = False
    ) -> tuple[ChainState, Tensor]:
        state, accepted = self.global_move.step(state, generator, adapt)
        for _ in range(self.local_steps):
            state, moved = self.local_move.step(state, generator, adapt)
            if not adapt:
                self.local_accepted += float(moved.to(state.position.dtype).sum())
                self.local_moves += int(moved.numel())
        return state, accepted

    def data(self, state: ChainState) -> Tensor:
        return state.position

    def end_warmup(self) -> None:
        self.local_move.end_warmup()

    def details(self) -> dict[str, float]:
        found = {"local_step_size": self.local_move.step_size}
        if self.local_moves:
            found["local_acceptance"] = self.local_accepted / self.local_moves
        return found
