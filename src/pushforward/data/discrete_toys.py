"""Discrete toy distributions over token sequences, with exact probabilities.

Each set is a :class:`DiscreteToy` defined by its full joint probability table,
so the exact log-probability of every sequence and the exact entropy are known:
a fitted discrete model's KL divergence to the truth is ``NLL - entropy``, and
:func:`pushforward.metrics.discrete.joint_tv` compares its samples with the table.
Tokens are int64 arrays ``(n, L)`` with position ``i`` in ``[0, vocab[i])``.

===================  ==============  ======  ============  ================================
name                 vocab           length  entropy       definition
===================  ==============  ======  ============  ================================
``8gaussians-grid``  ``(64, 64)``    2       6.450397      8 Gaussians quantised to a grid
``first-k-ones``     ``(2,) * 10``   10      2.397895      uniform on ``1^k 0^(10-k)``
``markov-chain``     ``(4,) * 6``    6       6.304864      stationary Markov chain, V = 4
===================  ==============  ======  ============  ================================

Entropies are in nats.

References:
    Campbell et al. (2024), Generative Flows on Discrete State-Spaces: Enabling
    Multimodal Flows with Applications to Protein Co-Design (the first-k-ones toy).
    Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models (the 8 Gaussians).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from pushforward.options import closest


class DiscreteToy(ABC):
    """A named distribution over token sequences given by its joint probability table.

    .. math:: p(x_1, \\dots, x_L) = \\exp(\\text{table}[x_1, \\dots, x_L])

    Example:
        >>> toy = get_discrete_toy("first-k-ones")
        >>> toy.sample(3, seed=1).shape
        torch.Size([3, 10])
        >>> round(toy.entropy(), 6)
        2.397895
    """

    name: str
    description: str
    vocab: tuple[int, ...]

    def __init__(self) -> None:
        self._log_table: Tensor | None = None

    @property
    def length(self) -> int:
        """The number of positions ``L`` of a sequence."""
        return len(self.vocab)

    @abstractmethod
    def _build_log_probs(self) -> Tensor:
        """The table of log-probabilities, float64 of shape ``vocab``."""

    def _table(self) -> Tensor:
        if self._log_table is None:
            self._log_table = self._build_log_probs()
        return self._log_table

    def log_probs(self) -> Tensor:
        """The exact log-probability of every state (built once).

        Returns:
            float64 tensor of shape ``vocab``; ``-inf`` marks an impossible state and
            ``exp`` of the table sums to 1.
        """
        return self._table().clone()

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``n`` independent sequences drawn from the table, the same for the same ``seed``.

        Args:
            n: the number of sequences.
            seed: seed of the ``torch.Generator`` that draws them.

        Returns:
            int64 tensor ``(n, L)``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"the number of samples must be a non-negative integer, got {n!r}")
        if n == 0:
            return torch.zeros(0, self.length, dtype=torch.long)
        generator = torch.Generator().manual_seed(int(seed))
        probabilities = self._table().exp().reshape(-1)
        flat = torch.multinomial(probabilities, n, replacement=True, generator=generator)
        return torch.stack(torch.unravel_index(flat, self.vocab), dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact log-probability of each sequence.

        Args:
            x: integer tokens ``(n, L)`` with ``x[:, i]`` in ``[0, vocab[i])``.

        Returns:
            float64 tensor ``(n,)`` on the device of ``x``.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"tokens must be a tensor, got {type(x).__name__}")
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor, got dtype {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ValueError(
                f"tokens must have shape (n, {self.length}) for {self.name!r}, got {tuple(x.shape)}"
            )
        limit = torch.tensor(self.vocab, device=x.device)
        bad = (x < 0) | (x >= limit)
        if bool(bad.any()):
            row, column = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"token {int(x[row, column])} at row {row}, position {column} is outside "
                f"the vocabulary [0, {self.vocab[column]}) of {self.name!r}"
            )
        table = self._table().to(x.device)
        return table[tuple(x.long().unbind(dim=1))]

    def entropy(self) -> float:
        """The exact entropy in nats, :math:`H = -\\sum_x p(x) \\log p(x)` with 0 log 0 = 0."""
        log_p = self._table()
        possible = torch.isfinite(log_p)
        return float(-(log_p[possible].exp() * log_p[possible]).sum())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, vocab={self.vocab})"


def _cell_probabilities(edges: Tensor, mean: float, scale: float) -> Tensor:
    """``P(edges[j] <= Z < edges[j + 1])`` for ``Z ~ N(mean, scale^2)``, one per cell."""
    low = (edges[:-1] - mean) / scale
    high = (edges[1:] - mean) / scale
    # Above the mean, the difference of upper tails keeps its relative accuracy where
    # the difference of CDFs (both near 1) would cancel.
    upper = torch.special.ndtr(-low) - torch.special.ndtr(-high)
    lower = torch.special.ndtr(high) - torch.special.ndtr(low)
    return torch.where(low > 0, upper, lower)


class EightGaussiansGrid(DiscreteToy):
    r"""The 8 Gaussians toy quantised onto a 64 x 64 grid of equal cells on :math:`[-3, 3]^2`.

    .. math:: p(i, j) = \frac18 \sum_{k=0}^{7} P_k^{(1)}(i)\, P_k^{(2)}(j), \quad
              P_k^{(d)}(i) = \Phi\Big(\frac{e_{i+1} - c_{k,d}}{\sigma}\Big)
              - \Phi\Big(\frac{e_i - c_{k,d}}{\sigma}\Big)

    with :math:`e_i = -3 + 6 i / 64` except :math:`e_0 = -\infty` and
    :math:`e_{64} = +\infty` (the mass outside the box folds into the edge cells),
    centres :math:`c_k = 2(\cos\frac{2\pi k}{8}, \sin\frac{2\pi k}{8})` and
    :math:`\sigma = 0.2`. Token 0 is the cell along the first axis, token 1 along
    the second.
    """

    name = "8gaussians-grid"
    description = "8 Gaussians (sd 0.2) on a circle of radius 2, quantised to 64x64 cells"
    vocab = (64, 64)
    radius = 2.0
    scale = 0.2
    bound = 3.0

    def edges(self) -> Tensor:
        """The 65 cell edges of each axis, float64, the outer two infinite."""
        cells = self.vocab[0]
        edges = torch.linspace(-self.bound, self.bound, cells + 1, dtype=torch.float64)
        edges[0], edges[-1] = -math.inf, math.inf
        return edges

    def centres(self) -> Tensor:
        """The 8 component means, float64 ``(8, 2)``."""
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)

    def _build_log_probs(self) -> Tensor:
        edges = self.edges()
        table = torch.zeros(self.vocab, dtype=torch.float64)
        for first, second in self.centres().tolist():
            along_first = _cell_probabilities(edges, first, self.scale)
            along_second = _cell_probabilities(edges, second, self.scale)
            table += torch.outer(along_first, along_second)
        return (table / 8).log()


class FirstKOnes(DiscreteToy):
    r"""Uniform over the 11 binary sequences :math:`1^k 0^{10-k}`, :math:`k = 0, \dots, 10`.

    .. math:: p(x) = \tfrac{1}{11} \text{ if } x = 1^k 0^{10-k} \text{ for some } k,
              \text{ else } 0; \quad H = \log 11
    """

    name = "first-k-ones"
    description = "uniform over the 11 binary sequences 1^k 0^(10-k) of length 10"
    vocab = (2,) * 10

    def valid_sequences(self) -> Tensor:
        """The 11 sequences of the support, int64 ``(11, 10)``, row ``k`` with ``k`` ones."""
        positions = torch.arange(self.length)
        return (positions[None, :] < torch.arange(self.length + 1)[:, None]).long()

    def _build_log_probs(self) -> Tensor:
        table = torch.full(self.vocab, -math.inf, dtype=torch.float64)
        support = self.valid_sequences()
        table[tuple(support.unbind(dim=1))] = -math.log(support.shape[0])
        return table


# Rows sum to 1 but columns do not, so the stationary law is not uniform.
_TRANSITION = (
    (0.70, 0.20, 0.05, 0.05),
    (0.10, 0.60, 0.25, 0.05),
    (0.05, 0.15, 0.50, 0.30),
    (0.40, 0.05, 0.05, 0.50),
)


class MarkovChain(DiscreteToy):
    r"""A stationary first-order Markov chain over 4 tokens and 6 positions.

    .. math:: p(x) = \pi(x_1) \prod_{i=1}^{5} T(x_i, x_{i+1}), \quad \pi T = \pi

    The transition matrix :math:`T` is fixed and far from uniform; the chain starts
    in its stationary law :math:`\pi`, so every position has marginal :math:`\pi`.
    """

    name = "markov-chain"
    description = "stationary first-order Markov chain over 4 tokens, length 6"
    vocab = (4,) * 6

    def transition(self) -> Tensor:
        """The transition matrix :math:`T`, float64 ``(4, 4)``, rows summing to 1."""
        return torch.tensor(_TRANSITION, dtype=torch.float64)

    def stationary(self) -> Tensor:
        r"""The stationary law :math:`\pi` of :math:`T`, float64 ``(4,)``.

        Solves :math:`(T^\top - I)\pi = 0` with one equation replaced by
        :math:`\sum_i \pi_i = 1`.
        """
        transition = self.transition()
        system = transition.T - torch.eye(transition.shape[0], dtype=torch.float64)
        system[-1] = 1.0
        right = torch.zeros(transition.shape[0], dtype=torch.float64)
        right[-1] = 1.0
        return torch.linalg.solve(system, right)

    def _build_log_probs(self) -> Tensor:
        log_transition = self.transition().log()
        table = self.stationary().log()
        states = log_transition.shape[0]
        for step in range(1, self.length):
            # Broadcast T(x_step, x_{step+1}) over the positions already in the table.
            table = table[..., None] + log_transition.reshape((1,) * (step - 1) + (states, states))
        return table


DISCRETE_TOYS: dict[str, DiscreteToy] = {
    toy.name: toy for toy in (EightGaussiansGrid(), FirstKOnes(), MarkovChain())
}
"""The built-in discrete sets by name; each table is built on first use."""


def get_discrete_toy(name: str) -> DiscreteToy:
    """The built-in discrete set called ``name``.

    Raises:
        ValueError: for an unknown name, with the closest valid names and the full list.
    """
    if name not in DISCRETE_TOYS:
        names = sorted(DISCRETE_TOYS)
        raise ValueError(
            f"unknown discrete data set {name!r}{closest(name, names)}; "
            f"valid sets: {', '.join(names)}"
        )
    return DISCRETE_TOYS[name]
