r"""Sampling a discrete mixture path's CTMC by Euler steps, with an optional corrector.

Given a probability denoiser :math:`p_{1|t}(\cdot \mid x_t)` (one distribution over
the ``vocab`` data tokens per position), the mixture path's marginal jump rates are

.. math:: u_t(y \mid x_t)^i = \frac{\dot\kappa_t}{1 - \kappa_t}\, p_{1|t}(y \mid x_t)^i,
          \qquad y \ne x_t^i,

one position at a time. A step from :math:`t` to :math:`s` moves position :math:`i`
to :math:`y \ne x_t^i` with probability

.. math:: \frac{\kappa_s - \kappa_t}{1 - \kappa_t}\, p_{1|t}(y \mid x_t)^i
          + (s - t)\, \eta\, r^{\mathrm{DB}}_t(y \mid x_t)^i,

the first term the exact chance that the position reaches its data token within
the step under the current posterior (first-order equal to the Euler step
:math:`(s - t)\, u_t`, and finite where :math:`\dot\kappa` is not), the second the
Euler step of a detailed-balance corrector that leaves every marginal
:math:`p_t` unchanged (Campbell et al. 2024, their :math:`R^{\mathrm{DB}}`):

* masked source: an unmasked token goes back to the mask at rate :math:`\eta`,
  a masked one leaves it at the extra rate
  :math:`\eta \kappa_t / (1 - \kappa_t)\, p_{1|t}(y)`;
* uniform source: :math:`\eta\, p_{1|t}(x_t^i) + \eta\,
  \frac{\kappa_t V + 1 - \kappa_t}{1 - \kappa_t}\, p_{1|t}(y)`.

Where the probabilities of leaving a position sum to more than one (a large
:math:`\eta` step), they are scaled to one. The last step, from the last grid time
to 1, draws every position from :math:`p_{1|t}` (the chance of reaching the data
token is one there), so the result is always data tokens; a masked path keeps the
positions already unmasked (their posterior is the token itself). With
``steps=1`` the sampler draws every position from :math:`p_{1|0}`: the product of
the data's marginals.

References: Campbell et al. (2024), Generative Flows on Discrete State-Spaces:
Enabling Multimodal Flows with Applications to Protein Co-Design (the rates, the
detailed-balance corrector); Gat et al. (2024), Discrete Flow Matching (the mixture
path's velocity and its Euler sampler).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pushforward.matching.discrete.path import MaskedSource, MixtureSource
from pushforward.matching.discrete.schedulers import KappaScheduler
from pushforward.options import positive_int

Posterior = Callable[[Tensor, Tensor], Tensor]
r"""``posterior(x_t: (batch, L) int64, t: (batch,)) -> (batch, L, vocab)``:
probabilities :math:`p_{1|t}(\cdot \mid x_t)` of the data tokens at every position."""


def carry_over(probabilities: Tensor, x_t: Tensor, source: MixtureSource, vocab: int) -> Tensor:
    r"""The posterior with a masked path's unmasked positions fixed to their token.

    On a masked path a position that left the mask holds its data token, so its
    posterior is :math:`\delta_{x_t^i}` whatever a network says; a uniform path's
    posterior is returned as given.

    Args:
        probabilities: ``(batch, L, vocab)``.
        x_t: ``(batch, L)`` states (the mask is ``vocab``).
    """
    if not isinstance(source, MaskedSource):
        return probabilities
    unmasked = x_t != vocab
    known = torch.zeros_like(probabilities).scatter_(
        -1, x_t.clamp(max=vocab - 1).unsqueeze(-1), 1.0
    )
    return torch.where(unmasked.unsqueeze(-1), known, probabilities)


def categorical(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row from unnormalised non-negative ``weights: (..., k)``, int64 ``(...)``.

    By the inverse CDF (one uniform per row), which is faster than
    ``torch.multinomial`` for many short rows.
    """
    cdf = weights.cumsum(-1)
    total = cdf[..., -1:]
    u = torch.rand(total.shape, dtype=weights.dtype, device=weights.device, generator=generator)
    index = (cdf <= u * total).sum(-1)
    return index.clamp(max=weights.shape[-1] - 1)


def corrector_rates(
    probabilities: Tensor, x_t: Tensor, kappa: Tensor, source: MixtureSource, vocab: int
) -> Tensor:
    r"""Rates :math:`r^{\mathrm{DB}}_t(y \mid x_t)` of the detailed-balance corrector, per unit eta.

    Args:
        probabilities: ``(batch, L, vocab)`` posterior (carried over on a masked path).
        x_t: ``(batch, L)`` states.
        kappa: ``(batch,)`` :math:`\kappa_t < 1`.

    Returns:
        ``(batch, L, states)`` rates to every state; the current state's entry is 0.
    """
    odds = (kappa / (1.0 - kappa))[:, None, None]
    if isinstance(source, MaskedSource):
        masked = (x_t == vocab).unsqueeze(-1)
        leave = torch.where(masked, odds * probabilities, torch.zeros_like(probabilities))
        back = (~masked).to(probabilities.dtype)
        rates = torch.cat([leave, back], dim=-1)
    else:
        current = probabilities.gather(-1, x_t.unsqueeze(-1))
        pull = ((kappa * vocab + 1.0 - kappa) / (1.0 - kappa))[:, None, None]
        rates = current + pull * probabilities
    return rates.scatter(-1, x_t.unsqueeze(-1), 0.0)


def transition_probabilities(
    probabilities: Tensor,
    x_t: Tensor,
    kappa_t: Tensor,
    kappa_s: Tensor,
    h: float,
    source: MixtureSource,
    vocab: int,
    eta: float = 0.0,
) -> Tensor:
    r"""The law of one position's state after a step from :math:`t` to :math:`s = t + h`.

    The module's rule: the chance of reaching the data token within the step times
    the posterior, plus :math:`h \eta` times the corrector's rates, scaled to at
    most one in all; the rest stays.

    Args:
        probabilities: ``(batch, L, vocab)`` posterior at ``(x_t, t)``.
        x_t: ``(batch, L)`` states.
        kappa_t, kappa_s: ``(batch,)`` :math:`\kappa` at both ends, ``kappa_t < 1``.
        h: the step :math:`s - t`.
        eta: the corrector's stochasticity.

    Returns:
        ``(batch, L, states)`` probabilities of every state, summing to one.
    """
    probabilities = carry_over(probabilities, x_t, source, vocab)
    reach = ((kappa_s - kappa_t) / (1.0 - kappa_t)).clamp(0.0, 1.0)[:, None, None]
    moves = reach * probabilities
    if probabilities.shape[-1] < source.states(vocab):
        moves = torch.cat([moves, moves.new_zeros((*moves.shape[:-1], 1))], dim=-1)
    if eta > 0:
        moves = moves + (h * eta) * corrector_rates(probabilities, x_t, kappa_t, source, vocab)
    moves = moves.scatter(-1, x_t.unsqueeze(-1), 0.0)
    leave = moves.sum(-1, keepdim=True)
    # A large corrector step can ask for more than certainty: keep the proportions.
    moves = moves / leave.clamp(min=1.0)
    stay = (1.0 - moves.sum(-1, keepdim=True)).clamp(min=0.0)
    return moves.scatter(-1, x_t.unsqueeze(-1), stay)


def euler_step(
    probabilities: Tensor,
    x_t: Tensor,
    kappa_t: Tensor,
    kappa_s: Tensor,
    h: float,
    source: MixtureSource,
    vocab: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""One step of the CTMC from :math:`t` to :math:`s = t + h`: a draw from
    :func:`transition_probabilities`.

    Returns:
        ``(batch, L)`` int64 states at ``s``.
    """
    if eta > 0:
        weights = transition_probabilities(
            probabilities, x_t, kappa_t, kappa_s, h, source, vocab, eta
        )
        return categorical(weights, generator)
    # Without the corrector: draw the data token, then reach it with the step's
    # chance; the same law, without a table of every state's weight.
    probabilities = carry_over(probabilities, x_t, source, vocab)
    reach = ((kappa_s - kappa_t) / (1.0 - kappa_t)).clamp(0.0, 1.0)
    target = categorical(probabilities, generator)
    draw = torch.rand(x_t.shape, dtype=reach.dtype, device=x_t.device, generator=generator)
    return torch.where(draw < reach[:, None], target, x_t)


def final_step(
    probabilities: Tensor,
    x_t: Tensor,
    source: MixtureSource,
    vocab: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The step to ``t = 1``: every position drawn from the posterior (carried over)."""
    return categorical(carry_over(probabilities, x_t, source, vocab), generator)


def ctmc_sample(
    posterior: Posterior,
    x0: Tensor,
    scheduler: KappaScheduler,
    source: MixtureSource,
    vocab: int,
    *,
    steps: int = 100,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Samples the mixture path's CTMC from ``x0`` at ``t = 0`` to data tokens at ``t = 1``.

    The grid is :math:`t_k = k / n` for ``steps`` :math:`= n`: ``n - 1`` steps of
    :func:`euler_step`, then :func:`final_step` from :math:`t_{n-1}`, so the
    denoiser is called ``n`` times.

    Args:
        posterior: :data:`Posterior`, the denoiser's probabilities.
        x0: ``(batch, L)`` int64 source states.
        scheduler: :math:`\kappa_t`.
        source: the path's source (masked or uniform).
        vocab: the number of data tokens.
        steps: denoiser calls, at least 1.
        eta: corrector stochasticity (0: none).
        generator: the random stream (default: torch's global one).
        dtype: the floating dtype of the times (default: torch's default dtype).

    Returns:
        ``(batch, L)`` int64 tokens in ``[0, vocab)``.
    """
    steps = positive_int("steps", steps)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    x = x0
    batch = x0.shape[0]
    for k in range(steps - 1):
        t = torch.full((batch,), k / steps, dtype=dtype, device=x0.device)
        s = torch.full((batch,), (k + 1) / steps, dtype=dtype, device=x0.device)
        probabilities = posterior(x, t)
        x = euler_step(
            probabilities,
            x,
            scheduler.kappa(t),
            scheduler.kappa(s),
            1.0 / steps,
            source,
            vocab,
            eta,
            generator,
        )
    t = torch.full((batch,), (steps - 1) / steps, dtype=dtype, device=x0.device)
    return final_step(posterior(x, t), x, source, vocab, generator)
