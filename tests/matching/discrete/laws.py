"""Exact laws for the discrete tests: small tables, and the CTMC sampler's law by propagation."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from pushforward.matching.discrete import (
    ExactDenoiser,
    KappaScheduler,
    MaskedSource,
    MixtureSource,
    transition_probabilities,
)
from pushforward.matching.discrete.sampler import carry_over


def first_k_ones(length: int = 10) -> Tensor:
    """Campbell et al.'s toy: uniform over the sequences 1^k 0^(L-k), as a log table."""
    table = torch.zeros((2,) * length, dtype=torch.float64)
    for k in range(length + 1):
        table[tuple([1] * k + [0] * (length - k))] = 1.0 / (length + 1)
    return table.log()


def random_table(shape: tuple[int, ...], seed: int = 0, concentration: float = 0.7) -> Tensor:
    """A seeded Dirichlet draw over every sequence, as a log table."""
    generator = torch.Generator().manual_seed(seed)
    gamma = torch._standard_gamma(torch.full(shape, concentration, dtype=torch.float64), generator)
    return (gamma / gamma.sum()).log()


def grid(states: int, length: int) -> Tensor:
    """Every sequence over ``states`` tokens, ``(states**length, length)`` in row-major order."""
    return torch.tensor(list(itertools.product(range(states), repeat=length)))


def index_of(x: Tensor, states: int) -> Tensor:
    """Row-major index of each sequence of ``x: (n, L)`` among :func:`grid`'s."""
    strides = states ** torch.arange(x.shape[1] - 1, -1, -1)
    return (x * strides).sum(-1)


def _kernel(weights: Tensor, space: Tensor) -> Tensor:
    """Transition matrix ``T[x, y] = prod_i weights[x, i, y_i]`` over the sequences ``space``."""
    kernel = torch.ones(space.shape[0], space.shape[0], dtype=weights.dtype)
    for i in range(space.shape[1]):
        kernel = kernel * weights[:, i, :][:, space[:, i]]
    return kernel


def sampler_law(
    oracle: ExactDenoiser,
    scheduler: KappaScheduler,
    source: MixtureSource,
    vocab: int,
    length: int,
    steps: int,
    eta: float = 0.0,
) -> Tensor:
    """The exact law of ``ctmc_sample``'s output over the ``vocab**length`` data sequences."""
    states = source.states(vocab)
    space = grid(states, length)
    law = torch.zeros(space.shape[0], dtype=torch.float64)
    if isinstance(source, MaskedSource):
        law[-1] = 1.0  # every position masked
    else:
        law[:] = 1.0 / space.shape[0]
    ones = torch.ones(space.shape[0], dtype=torch.float64)
    for k in range(steps - 1):
        t, s = k / steps * ones, (k + 1) / steps * ones
        weights = transition_probabilities(
            oracle(space, t),
            space,
            scheduler.kappa(t),
            scheduler.kappa(s),
            1.0 / steps,
            source,
            vocab,
            eta,
        )
        law = law @ _kernel(weights, space)
    final = carry_over(oracle(space, (steps - 1) / steps * ones), space, source, vocab)
    if final.shape[-1] < states:
        final = torch.cat([final, final.new_zeros((*final.shape[:-1], 1))], dim=-1)
    law = law @ _kernel(final, space)
    data = grid(vocab, length)
    return law[index_of(data, states)]


def total_variation(p: Tensor, q: Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())
