r"""The exact probability denoiser of a known distribution over short sequences.

For data with probability table :math:`q(x_1)` and a mixture path, Bayes' rule gives
the posterior of the data sequence given :math:`x_t`,

.. math:: p(x_1 \mid x_t) \propto q(x_1) \prod_i p_t(x_t^i \mid x_1^i),

with :math:`p_t(x^i \mid x_1^i) = \kappa_t \delta_{x_1^i} + (1 - \kappa_t)\, p_0(x^i)`
(the mask, or :math:`1 / V`), and the denoiser is its per-position marginal
:math:`p_{1|t}(y \mid x_t)^i = \sum_{x_1 : x_1^i = y} p(x_1 \mid x_t)`. Computed by
enumerating the table's support, it is what a perfectly trained network would
return: the tests and benchmarks use it to check the sampler and the bound apart
from any training.

References: Campbell et al. (2024), Generative Flows on Discrete State-Spaces;
Gat et al. (2024), Discrete Flow Matching.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from pushforward.matching.discrete.path import MaskedSource, MixtureSource
from pushforward.matching.discrete.schedulers import KappaScheduler

CHUNK_ELEMENTS = 1 << 22
"""Rows times support states handled at once (bounds the memory of a call)."""


class ExactDenoiser:
    r"""The exact :math:`p_{1|t}` of a table of probabilities, as a sampler's ``posterior``.

    Args:
        log_probs: ``(V_0, ..., V_{L-1})`` float log-probabilities of every sequence
            (``-inf`` for impossible ones); position ``i`` has ``V_i`` tokens.
        scheduler: the path's :math:`\kappa_t`.
        source: the path's source.

    Example:
        >>> table = torch.tensor([[0.5, 0.0], [0.0, 0.5]]).log()
        >>> from pushforward.matching.discrete import LinearKappa, MaskedSource
        >>> oracle = ExactDenoiser(table, LinearKappa(), MaskedSource())
        >>> oracle(torch.tensor([[0, 2]]), torch.tensor([0.5]))[0, 1]
        tensor([1., 0.])
    """

    def __init__(self, log_probs: Tensor, scheduler: KappaScheduler, source: MixtureSource) -> None:
        self.scheduler = scheduler
        self.source = source
        self.vocab = max(log_probs.shape)
        flat = log_probs.reshape(-1)
        keep = flat > -math.inf
        grid = torch.tensor(list(itertools.product(*(range(v) for v in log_probs.shape))))
        self.states = grid[keep].to(log_probs.device)
        self.log_weights = flat[keep] - torch.logsumexp(flat[keep], 0)
        self.one_hot = torch.nn.functional.one_hot(self.states, self.vocab).to(log_probs.dtype)
        # One extra column so that a mask token in x_t matches no support sequence.
        extended = torch.nn.functional.one_hot(self.states, self.vocab + 1).to(log_probs.dtype)
        self.flat_one_hot = extended.reshape(self.states.shape[0], -1)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``(batch, L, vocab)`` probabilities of the data tokens given ``x_t: (batch, L)``."""
        rows = max(1, CHUNK_ELEMENTS // max(self.states.shape[0], self.one_hot[0].numel()))
        pieces = [
            self._marginals(x_t[start : start + rows], t[start : start + rows])
            for start in range(0, x_t.shape[0], rows)
        ]
        return torch.cat(pieces)

    def posterior_log_weights(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``(batch, support)`` log-posterior of every sequence of the support."""
        dtype = self.log_weights.dtype
        # At kappa = 0 or 1 a state can be impossible under every sequence; a kappa
        # inside (0, 1) keeps its posterior defined (a masked path's does not depend on it).
        tiny = torch.finfo(dtype).eps
        kappa = self.scheduler.kappa(t.to(dtype)).clamp(tiny, 1.0 - tiny)[:, None]
        length = x_t.shape[1]
        # Positions where x_t agrees with each support sequence, by one matrix product.
        states = self.vocab + 1
        rows = torch.nn.functional.one_hot(x_t, states).to(dtype).reshape(x_t.shape[0], -1)
        matches = rows @ self.flat_one_hot.T
        if isinstance(self.source, MaskedSource):
            masked = (x_t == self.vocab).sum(-1, keepdim=True).to(dtype)
            unmasked = length - masked
            consistent = matches == unmasked
            log_likelihood = torch.where(
                consistent,
                masked * (1.0 - kappa).log() + unmasked * kappa.log(),
                kappa.new_full((), -math.inf),
            )
        else:
            noise = (1.0 - kappa) / self.vocab
            log_likelihood = matches * (kappa + noise).log() + (length - matches) * noise.log()
        return torch.log_softmax(self.log_weights + log_likelihood, dim=-1)

    def _marginals(self, x_t: Tensor, t: Tensor) -> Tensor:
        weights = self.posterior_log_weights(x_t, t).exp()
        return torch.einsum("bs,slv->blv", weights, self.one_hot)
