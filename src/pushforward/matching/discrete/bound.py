r"""The mixture path's generalized KL and the evidence lower bound it integrates to.

For the model's rates :math:`u^\theta_t(y)^i = c_t\, p_{1|t}(y \mid x_t)^i` and the
path's conditional rates :math:`u_t(y \mid x_1)^i = c_t\, \delta_{x_1^i}(y)`
(:math:`y \ne x_t^i`, :math:`c_t = \dot\kappa_t / (1 - \kappa_t)`), the Bregman
(generalized KL) divergence between them at one position is

.. math:: D^i_t = -c_t \bigl[p_{1|t}(x_t^i) - \delta_{x_1^i}(x_t^i)
          + (1 - \delta_{x_1^i}(x_t^i)) \log p_{1|t}(x_1^i)\bigr] \ge 0,

and the path-space KL between the conditional process and the model's gives

.. math:: \log p_\theta(x_1) \ge \mathrm{ELBO}(x_1)
          = -\int_0^1 \mathbb{E}_{x_t \sim p_t(\cdot \mid x_0, x_1),\, x_0 \sim p_0}
          \sum_i D^i_t \, dt,

a bound on the likelihood of the continuous-time sampler (``eta = 0``, infinitely
many steps). On a masked path an unmasked position holds its data token and adds
nothing, so the bound is :math:`\int_0^1 c_t\, \mathbb{E} \sum_{i\ \mathrm{masked}}
\log p_{1|t}(x_1^i \mid x_t)\, dt`; with the exact denoiser it is tight.

The estimator (:func:`elbo`): ``draws`` stratified times per sequence, drawn as
:math:`t = 1 - (1 - s)^2` with :math:`s` stratified on ``[0, 1)`` and weighted by
:math:`dt/ds = 2 (1 - s)`: the integrand's variance, which diverges like
:math:`c_t` near :math:`t = 1` under uniform times, is finite under this change of
variable, stopped where :math:`1 - \kappa_t = 10^{-12}` (what lies beyond weighs about
:math:`10^{-12} L` nats). Each draw takes one :math:`x_t`; the standard error is that of the
mean of the ``draws`` values.

References: Shaul et al. (2024), Flow Matching with General Discrete Paths: A
Kinetic-Optimal Perspective (the ELBO of mixture paths); Gat et al. (2024),
Discrete Flow Matching; Campbell et al. (2022), A Continuous Time Framework for
Discrete Denoising Models (the CTMC path bound); Sahoo et al. (2024), Simple and
Effective Masked Diffusion Language Models (the masked form).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pushforward.matching.discrete.path import MaskedSource, MixtureSource, sample_mixture_path
from pushforward.matching.discrete.schedulers import KappaScheduler
from pushforward.options import positive_int

LogPosterior = Callable[[Tensor, Tensor], Tensor]
r"""``log_posterior(x_t: (batch, L), t: (batch,)) -> (batch, L, vocab)``:
:math:`\log p_{1|t}(\cdot \mid x_t)` of the data tokens."""

LAST_REMAINDER = 1e-12
"""The bound's time integral stops where :math:`1 - \\kappa_t` reaches this: the mass of
the integrand beyond is about ``L * 1e-12`` nats, and float64 rates keep their digits."""


@dataclass(frozen=True)
class BoundEstimate:
    """A Monte Carlo estimate of the ELBO of each sequence.

    Attributes:
        value: ``(batch,)`` the estimate, in nats.
        standard_error: ``(batch,)`` its standard error over the draws (NaN with one draw).
        draws: time draws per sequence.
    """

    value: Tensor
    standard_error: Tensor
    draws: int


def position_terms(
    log_probabilities: Tensor, x1: Tensor, x_t: Tensor, source: MixtureSource, vocab: int
) -> Tensor:
    r"""The bracket :math:`p_{1|t}(x_t^i) - \delta + (1 - \delta) \log p_{1|t}(x_1^i)` per position.

    Args:
        log_probabilities: ``(batch, L, vocab)`` :math:`\log p_{1|t}(\cdot \mid x_t)`.
        x1: ``(batch, L)`` data tokens.
        x_t: ``(batch, L)`` states (the mask is ``vocab`` on a masked path).

    Returns:
        ``(batch, L)``, at most 0; 0 where a masked path's position is unmasked.
    """
    at_data = log_probabilities.gather(-1, x1.unsqueeze(-1)).squeeze(-1)
    same = x_t == x1
    if isinstance(source, MaskedSource):
        # An unmasked position holds its data token: its posterior is that token.
        zero = torch.zeros_like(at_data)
        return torch.where(same, zero, at_data)
    at_state = log_probabilities.gather(-1, x_t.unsqueeze(-1)).squeeze(-1).exp()
    return torch.where(same, at_state - 1.0, at_state + at_data)


def generalized_kl(
    logits: Tensor,
    x1: Tensor,
    x_t: Tensor,
    t: Tensor,
    scheduler: KappaScheduler,
    source: MixtureSource,
) -> Tensor:
    r"""The mixture path's generalized KL :math:`\sum_i D^i_t` per sequence, ``(batch,)``.

    Args:
        logits: ``(batch, L, vocab)`` the denoiser's logits at ``(x_t, t)``.
        x1: ``(batch, L)`` data tokens.
        x_t: ``(batch, L)`` states.
        t: ``(batch,)`` times in ``[0, 1)``.
        scheduler: :math:`\kappa_t`.
        source: the path's source.
    """
    log_probabilities = torch.log_softmax(logits, dim=-1)
    terms = position_terms(log_probabilities, x1, x_t, source, logits.shape[-1])
    coefficient = scheduler.jump_coefficient(t.to(logits.dtype))
    return -(coefficient[:, None] * terms).sum(-1)


def elbo(
    log_posterior: LogPosterior,
    x1: Tensor,
    scheduler: KappaScheduler,
    source: MixtureSource,
    vocab: int,
    *,
    draws: int = 16,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> BoundEstimate:
    r"""The evidence lower bound on :math:`\log p_\theta(x_1)` of every sequence (see the module).

    Args:
        log_posterior: :data:`LogPosterior`, the model's denoiser.
        x1: ``(batch, L)`` int64 data tokens.
        scheduler: :math:`\kappa_t`.
        source: the path's source.
        vocab: the number of data tokens.
        draws: stratified time draws per sequence (the denoiser sees
            ``batch * draws`` rows in one call).
        generator: the random stream of the times and paths.
        dtype: the dtype of the times the denoiser sees (default: torch's default).

    Returns:
        A :class:`BoundEstimate`.
    """
    draws = positive_int("draws", draws)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    n, device = x1.shape[0], x1.device
    strata = torch.arange(draws, dtype=torch.float64, device=device)
    u = torch.rand(n, draws, dtype=torch.float64, device=device, generator=generator)
    last_t = scheduler.time(torch.tensor(1.0 - LAST_REMAINDER, dtype=torch.float64, device=device))
    last_s = 1.0 - float((1.0 - last_t).sqrt())
    s = last_s * (strata + u) / draws
    t = 1.0 - (1.0 - s).square()
    weight = last_s * 2.0 * (1.0 - s) * scheduler.jump_coefficient(t)
    rows = x1.repeat_interleave(draws, dim=0)
    x0 = source.sample(tuple(rows.shape), vocab, device=device, generator=generator)
    x_t = sample_mixture_path(x0, rows, scheduler.kappa(t.reshape(-1)), generator=generator)
    log_probabilities = log_posterior(x_t, t.reshape(-1).to(dtype))
    terms = position_terms(log_probabilities, rows, x_t, source, vocab).sum(-1)
    values = weight.to(terms.dtype) * terms.reshape(n, draws)
    value = values.mean(dim=1)
    if draws > 1:
        error = values.std(dim=1) / math.sqrt(draws)
    else:
        error = torch.full_like(value, math.nan)
    return BoundEstimate(value, error, draws)
