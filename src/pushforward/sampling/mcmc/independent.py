"""Independent Metropolis-Hastings with a flow as the proposal."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from pushforward.inference import InferenceOptions
from pushforward.options import positive_float, positive_int, unit_interval
from pushforward.sampling.mcmc.density import DataLogDensity
from pushforward.sampling.mcmc.kernel import ChainState
from pushforward.sampling.mcmc.metropolis import log_acceptance_ratio, metropolis_accept
from pushforward.sampling.mcmc.proposal import FlowProposal


@dataclass(frozen=True)
class IndependenceOptions(InferenceOptions):
    """Options of the flow-proposal kernels ``imh`` and ``isir``."""

    defensive: float = field(
        default=0.0, metadata={"help": "weight of the wide Gaussian in the proposal, in [0, 1)"}
    )
    defensive_scale: float = field(
        default=3.0, metadata={"help": "scale of the defensive Gaussian N(0, s^2 I)"}
    )

    def __post_init__(self) -> None:
        unit_interval("defensive", self.defensive)
        positive_float("defensive_scale", self.defensive_scale)


@dataclass(frozen=True)
class ISIROptions(IndependenceOptions):
    """Options of ``isir``: the defensive mixture and the number of candidates ``particles``."""

    particles: int = field(
        default=10, metadata={"help": "candidates per step, the current state included (>= 2)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("particles", self.particles, minimum=2)


def log_importance_weight(log_target: Tensor, log_proposal: Tensor) -> Tensor:
    r""":math:`\log w = \log \tilde p - \log q`, ``-inf`` wherever the target is ``-inf``."""
    outside = torch.isneginf(log_target)
    safe = torch.where(outside, torch.zeros_like(log_proposal), log_proposal)
    return torch.where(outside, log_target, log_target - safe)


class IndependentMetropolisHastings:
    r"""Independent Metropolis-Hastings: propose :math:`x' \sim q`, whatever the state.

    .. math:: \alpha(x, x') = \min\left(1, \frac{w(x')}{w(x)}\right),
              \qquad w = \tilde p / q

    all in log space. With :math:`q = p` every proposal is accepted; the
    acceptance rate falls as :math:`q` departs from :math:`p`. A proposal where
    the target is ``-inf`` is never accepted.

    References:
        Tierney (1994), Markov Chains for Exploring Posterior Distributions;
        Hastings (1970), Monte Carlo Sampling Methods Using Markov Chains and
        Their Applications.

    Args:
        density: the target in the data's units.
        proposal: the flow proposal (possibly a defensive mixture).
    """

    def __init__(self, density: DataLogDensity, proposal: FlowProposal) -> None:
        self.density = density
        self.proposal = proposal

    def initialize(self, x: Tensor) -> ChainState:
        with torch.no_grad():
            return ChainState(x, self.density.log_prob(x), None, self.proposal.log_prob(x))

    def _log_proposal(self, state: ChainState) -> Tensor:
        """The state's proposal log-density, evaluated afresh after a local move forgot it."""
        if state.log_proposal is not None:
            return state.log_proposal
        return self.proposal.log_prob(state.position)

    def step(
        self, state: ChainState, generator: torch.Generator, adapt: bool = False
    ) -> tuple[ChainState, Tensor]:
        with torch.no_grad():
            current = replace(state, log_proposal=self._log_proposal(state))
            x, log_q = self.proposal.sample(state.position.shape[0], generator)
            log_p = self.density.log_prob(x)
            log_ratio = log_acceptance_ratio(
                log_importance_weight(log_p, log_q),
                log_importance_weight(current.log_density, self._log_proposal(current)),
            )
            accepted = metropolis_accept(log_ratio, generator)
            proposed = ChainState(x, log_p, None, log_q)
            return current.where(accepted, proposed), accepted

    def data(self, state: ChainState) -> Tensor:
        return state.position

    def end_warmup(self) -> None:
        pass

    def details(self) -> dict[str, float]:
        return {}


def gumbel_max_choice(log_weights: Tensor, generator: torch.Generator) -> Tensor:
    r"""``(chains,)`` indices drawn per row with probabilities :math:`\propto` ``exp(log_weights)``.

    The Gumbel-max trick: :math:`\arg\max_i (\log w_i + G_i)`, :math:`G_i` standard
    Gumbel. ``-inf`` weights are never picked; a row that is ``-inf`` throughout
    picks index 0.

    Args:
        log_weights: ``(chains, N)``.
    """
    uniform = torch.rand(
        log_weights.shape, dtype=log_weights.dtype, device=log_weights.device, generator=generator
    )
    tiny = torch.finfo(log_weights.dtype).tiny
    # Clamped away from 0 and 1, so that the Gumbel noise is finite.
    gumbel = -torch.log(-torch.log(uniform.clamp(tiny, 1.0 - torch.finfo(uniform.dtype).eps)))
    choice = torch.argmax(log_weights + gumbel, dim=-1)
    nowhere = torch.isneginf(log_weights).all(dim=-1)
    return torch.where(nowhere, torch.zeros_like(choice), choice)


class IteratedSIR(IndependentMetropolisHastings):
    r"""Iterated sampling importance resampling (i-SIR) with a flow proposal.

    Each step draws :math:`N - 1` fresh candidates :math:`x_2, \dots, x_N \sim q`,
    keeps the current state as :math:`x_1`, and moves to :math:`x_I` with

    .. math:: P(I = i) = \frac{w(x_i)}{\sum_{j=1}^N w(x_j)}, \qquad w = \tilde p / q.

    The kernel leaves :math:`p` invariant for any :math:`N \ge 2`; with
    :math:`N = 2` it is Barker's rule, and as :math:`N` grows it approaches
    independent draws from the self-normalised importance sampler. A chain
    "accepts" when it moves to a fresh candidate.

    References:
        Andrieu, Lee & Vihola (2018), Uniform Ergodicity of the Iterated
        Conditional SMC and Geometric Ergodicity of Particle Gibbs Samplers;
        Samsonov et al. (2022), Local-Global MCMC Kernels: the Best of Both Worlds.

    Args:
        density: the target in the data's units.
        proposal: the flow proposal (possibly a defensive mixture).
        particles: :math:`N`, the current state included.
    """

    def __init__(self, density: DataLogDensity, proposal: FlowProposal, particles: int) -> None:
        super().__init__(density, proposal)
        self.particles = int(particles)

    def step(
        self, state: ChainState, generator: torch.Generator, adapt: bool = False
    ) -> tuple[ChainState, Tensor]:
        with torch.no_grad():
            log_current = self._log_proposal(state)
            chains, d = state.position.shape
            fresh = self.particles - 1
            x, log_q = self.proposal.sample(chains * fresh, generator)
            log_p = self.density.log_prob(x)
            # Candidates (chains, N, ...), the current state first.
            points = torch.cat([state.position.unsqueeze(1), x.reshape(chains, fresh, d)], dim=1)
            log_ps = torch.cat([state.log_density.unsqueeze(1), log_p.reshape(chains, fresh)], 1)
            log_qs = torch.cat([log_current.unsqueeze(1), log_q.reshape(chains, fresh)], 1)
            chosen = gumbel_max_choice(log_importance_weight(log_ps, log_qs), generator)
            rows = torch.arange(chains, device=chosen.device)
            moved = ChainState(
                points[rows, chosen], log_ps[rows, chosen], None, log_qs[rows, chosen]
            )
            return moved, chosen != 0
