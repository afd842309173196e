r"""The exact token posterior of the simplex's geodesic path, for a known distribution.

Along the arc from a source point :math:`s_0` to the vertex :math:`e_k`, every point
keeps its direction from :math:`e_k` and its angle shrinks by :math:`1 - t`:
:math:`\varphi = (1 - t)\theta_0`. In polar coordinates about :math:`e_k` the
sphere's area element is :math:`\sin^{V-2}\theta\, d\theta\, d\omega`, so the density
of :math:`s_t` given :math:`x_1 = k` is

.. math:: p_t(s \mid k) = p_0(s_0)\,\frac{1}{1 - t}\left(\frac{\sin\theta_0}{\sin\varphi}
          \right)^{V-2}, \qquad \cos\varphi = s_k,\; \theta_0 = \frac{\varphi}{1 - t}
          \le \frac{\pi}{2},

zero past :math:`\theta_0 = \pi/2` (where :math:`s_0` would leave the orthant), with
:math:`p_0` constant for the ``orthant`` source and proportional to
:math:`\prod_j s_{0,j}` for the ``simplex`` one (the square root of a uniform simplex
point). Bayes' rule over a table :math:`q(x_1)` of short sequences,
:math:`p(x_1 \mid s_t) \propto q(x_1) \prod_i p_t(s_t^i \mid x_1^i)`, and its
per-position marginals give the posterior a perfectly trained ``denoiser`` would
return: the tests and benchmarks check the sampler with it apart from any training.

References: Davis et al. (2024), Fisher Flow Matching for Generative Modeling over
Discrete Data; Cheng et al. (2024), Categorical Flow Matching on Statistical Manifolds.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor
from torch.nn import functional

from pushforward.matching.simplex.path import SIMPLEX_SOURCES
from pushforward.options import choice

SERIES_BELOW = 1e-6
"""Angles under which :math:`\\sin\\theta_0 / \\sin\\varphi` is its limit :math:`1/(1-t)`."""


def conditional_log_density(s: Tensor, t: Tensor, valid: Tensor, source: str) -> Tensor:
    r"""``(batch, L, V)``: :math:`\log p_t(s^i \mid x_1^i = k)` of every position and token,
    up to the source's normalising constant (``-inf`` where ``k`` cannot have led to ``s``,
    or where position ``i`` cannot take ``k``).

    Args:
        s: ``(batch, L, V)`` points of the orthant (zero at invalid tokens).
        t: ``(batch,)`` times in ``[0, 1)``.
        valid: ``(L, V)`` bool, the tokens each position can take.
        source: ``orthant`` or ``simplex``.
    """
    choice("source", source, SIMPLEX_SOURCES)
    dtype = s.dtype
    remain = (1.0 - t)[:, None, None]
    cos = s.clamp(0.0, 1.0)
    sin = (1.0 - cos * cos).clamp_min(0.0).sqrt()
    phi = torch.atan2(sin, cos)
    theta0 = phi / remain
    inside = (theta0 <= math.pi / 2) & valid
    safe_theta = torch.where(inside, theta0, torch.zeros_like(theta0))
    small = phi < SERIES_BELOW
    safe_sin = torch.where(small, torch.ones_like(sin), sin)
    log_ratio = torch.where(
        small, -remain.log().expand_as(phi), torch.sin(safe_theta).clamp_min(1e-300).log() -
        safe_sin.log()
    )  # fmt: skip
    dimensions = valid.sum(dim=-1).to(dtype)[None, :, None]  # V_i, the valid tokens
    log_density = (dimensions - 2.0) * log_ratio - remain.log()
    if source == "simplex":
        # log prod_j s0_j = log cos(theta0) + (V_i - 1) log(sin theta0 / sin phi)
        #                   + sum_{j != k} log s_j
        log_s = torch.where(valid, s.clamp_min(1e-300).log(), torch.zeros_like(s))
        log_density = (
            log_density
            + torch.cos(safe_theta).clamp_min(1e-300).log()
            + (dimensions - 1.0) * log_ratio
            + log_s.sum(dim=-1, keepdim=True)
            - log_s
        )
    return torch.where(inside, log_density, torch.full_like(log_density, -math.inf))


class ExactSimplexDenoiser:
    r"""The exact :math:`p_{1|t}(\cdot \mid s_t)` of a table of probabilities.

    Args:
        log_probs: ``(V_0, ..., V_{L-1})`` log-probabilities of every sequence
            (``-inf`` for impossible ones).
        source: the path's source, ``orthant`` or ``simplex``.

    Example:
        >>> table = torch.tensor([0.25, 0.75], dtype=torch.float64).log()
        >>> oracle = ExactSimplexDenoiser(table, "orthant")
        >>> s = torch.tensor([[[0.6, 0.8]]], dtype=torch.float64)
        >>> oracle(s, torch.zeros(1, dtype=torch.float64))  # t = 0: the prior
        tensor([[[0.2500, 0.7500]]], dtype=torch.float64)
    """

    def __init__(self, log_probs: Tensor, source: str) -> None:
        self.source = choice("source", source, SIMPLEX_SOURCES)
        shape = tuple(log_probs.shape)
        self.vocab = max(shape)
        flat = log_probs.reshape(-1)
        keep = flat > -math.inf
        grid = torch.tensor(list(itertools.product(*(range(v) for v in shape))))
        self.states = grid[keep].to(log_probs.device)
        self.log_weights = flat[keep] - torch.logsumexp(flat[keep], 0)
        self.one_hot = functional.one_hot(self.states, self.vocab).to(log_probs.dtype)
        limits = torch.tensor(shape, device=log_probs.device)
        self.valid = torch.arange(self.vocab, device=log_probs.device)[None, :] < limits[:, None]

    def __call__(self, s: Tensor, t: Tensor) -> Tensor:
        """``(batch, L, V)`` probabilities of the data tokens given ``s: (batch, L, V)``."""
        dtype = self.log_weights.dtype
        per_token = conditional_log_density(s.to(dtype), t.to(dtype), self.valid, self.source)
        # log p(s | x1) for every support sequence: a sum over positions of the table.
        positions = torch.arange(self.states.shape[1], device=s.device)
        picked = per_token[:, positions, self.states]  # (batch, support, L)
        log_posterior = torch.log_softmax(self.log_weights + picked.sum(dim=-1), dim=-1)
        return torch.einsum("bs,slv->blv", log_posterior.exp(), self.one_hot)
