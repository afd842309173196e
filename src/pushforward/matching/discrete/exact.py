r"""The exact log-likelihood of a discrete flow-matching model, by enumerating states.

The model's continuous-time sampler (``eta = 0``, infinitely many steps) is a
CTMC whose marginal :math:`p_t` solves the master equation
:math:`\partial_t p_t(z) = \sum_{z'} p_t(z')\, u_t(z \mid z') - p_t(z) \sum_{z'} u_t(z' \mid z)`
over sequences that differ in one position, with the rates
:math:`u_t(y)^i = c_t\, p_{1|t}(y \mid z)^i` of the denoiser. For short sequences it
is solved exactly up to the time discretisation (classical Runge--Kutta, RK4):

* **masked path**: only the :math:`2^L` partial maskings of :math:`x_1` lead to
  :math:`x_1` (an unmasked token never changes), and every masked position
  leaves the mask at rate :math:`c_t`, whatever the denoiser. With
  :math:`p_t(z) = (1 - \kappa_t)^{m(z)} q(z)` for the number :math:`m(z)` of masked
  positions, the factor that diverges at :math:`t = 1` drops out:

  .. math:: \frac{dq(z)}{d\kappa} = \sum_{i \notin \mathrm{mask}(z)}
            q(z^{+i})\, p_{1|t(\kappa)}(x_1^i \mid z^{+i})^i,

  with :math:`z^{+i}` the state with position :math:`i` masked as well,
  :math:`q(\text{all masked}) = 1` and :math:`p_\theta(x_1) = q(x_1)` at
  :math:`\kappa = 1`: a smooth system in :math:`\kappa` solved per sequence.
* **uniform path**: all :math:`V^L` states, from :math:`p_0 = V^{-L}`, in the time
  :math:`\sigma = -\log(1 - t)` (rates bounded near :math:`t = 1`), up to
  :math:`1 - \kappa_t = 10^{-10}` (at most :math:`\sigma = 20`).

References: Campbell et al. (2022), A Continuous Time Framework for Discrete
Denoising Models (the master equation); Gat et al. (2024), Discrete Flow Matching.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pushforward.matching.discrete.path import MaskedSource, MixtureSource
from pushforward.matching.discrete.schedulers import KappaScheduler

RowPosterior = Callable[[Tensor, Tensor, Tensor | None], Tensor]
r"""``posterior(z: (n, L), t: (n,), rows: (n,) | None) -> (n, L, vocab)``: the
denoiser's probabilities at states ``z``; ``rows`` names the data row each state
belongs to (for a per-row context), ``None`` when the states are shared."""

MAX_STATES = 1 << 17
"""The most states an exact computation enumerates (about 10^5)."""

HORIZON = 20.0
"""The uniform path's last :math:`\\sigma = -\\log(1 - t)` at most."""

LAST_REMAINDER = 1e-10
"""The uniform path stops where :math:`1 - \\kappa_t` reaches this (or at :data:`HORIZON`):
beyond it the float64 rates lose their digits, and the mass still to move is smaller."""


def exact_log_prob(
    posterior: RowPosterior,
    x1: Tensor,
    scheduler: KappaScheduler,
    source: MixtureSource,
    vocab: int,
    *,
    steps: int = 64,
    dtype: torch.dtype | None = None,
    shared: bool = True,
) -> Tensor:
    r"""The log-likelihood of ``x1: (batch, L)`` under the model's continuous-time sampler.

    Args:
        posterior: :data:`RowPosterior`, the denoiser's probabilities.
        x1: ``(batch, L)`` int64 tokens.
        scheduler: :math:`\kappa_t`.
        source: the path's source.
        vocab: the number of data tokens.
        steps: RK4 steps in :math:`\\kappa` (masked); the uniform path takes twice as many
            in :math:`\\sigma`, and at least :math:`20 L` for stability.
        dtype: the float dtype of the master equation (default: torch's default).
        shared: whether every row has the same context, so that equal sequences are
            solved once; ``False`` keeps each row (its ``rows`` index) apart.

    Returns:
        ``(batch,)`` :math:`\log p_\theta(x_1)`.

    Raises:
        ValueError: more than :data:`MAX_STATES` states to enumerate.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    length = x1.shape[1]
    if isinstance(source, MaskedSource):
        if 2**length > MAX_STATES:
            raise ValueError(
                f"exact=True enumerates the {2**length} maskings of each sequence, more than "
                f"{MAX_STATES}; use the bound (the default)"
            )
        # Each distinct sequence once (unless rows have their own contexts), in chunks of
        # at most MAX_STATES enumerated states.
        index = torch.arange(x1.shape[0], device=x1.device)
        if shared:
            x1, inverse = torch.unique(x1, dim=0, return_inverse=True)
            index = torch.arange(x1.shape[0], device=x1.device)
        chunk = max(1, MAX_STATES // 2**length)
        pieces = [
            _masked(
                posterior,
                x1[start : start + chunk],
                index[start : start + chunk],
                scheduler,
                vocab,
                steps,
                dtype,
            )
            for start in range(0, x1.shape[0], chunk)
        ]
        result = torch.cat(pieces)
        return result[inverse] if shared else result
    if vocab**length > MAX_STATES:
        raise ValueError(
            f"exact=True enumerates {vocab}^{length} states, more than {MAX_STATES}; "
            "use the bound (the default)"
        )
    # The uniform path runs to sigma = 20: twice the steps, and h L <= 1 for RK4's stability.
    uniform_steps = max(2 * steps, math.ceil(HORIZON * length))
    return _uniform(posterior, x1, scheduler, vocab, uniform_steps, dtype)


def _rk4(
    derivative: Callable[[float, Tensor], Tensor], y: Tensor, start: float, end: float, steps: int
) -> Tensor:
    h = (end - start) / steps
    for k in range(steps):
        a = start + k * h
        k1 = derivative(a, y)
        k2 = derivative(a + h / 2, y + (h / 2) * k1)
        k3 = derivative(a + h / 2, y + (h / 2) * k2)
        k4 = derivative(a + h, y + h * k3)
        y = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def _masked(
    posterior: RowPosterior,
    x1: Tensor,
    index: Tensor,
    scheduler: KappaScheduler,
    vocab: int,
    steps: int,
    dtype: torch.dtype,
) -> Tensor:
    n, length = x1.shape
    device = x1.device
    codes = torch.arange(2**length, device=device)
    bits = 1 << torch.arange(length, device=device)
    masked = (codes[:, None] & bits[None, :]) != 0  # (2^L, L): True where masked
    states = torch.where(masked[None], torch.full_like(x1[:, None, :], vocab), x1[:, None, :])
    flat_states = states.reshape(-1, length)
    rows = index.repeat_interleave(2**length)
    # The state with position i masked as well, for each unmasked position i.
    parent = codes[:, None] | bits[None, :]
    unmasked = ~masked
    data = x1[:, None, :].expand(n, 2**length, length)

    def derivative(kappa: float, q: Tensor) -> Tensor:
        k = torch.full((flat_states.shape[0],), kappa, dtype=torch.float64, device=device)
        t = scheduler.time(k).to(dtype)
        probabilities = posterior(flat_states, t, rows).reshape(n, 2**length, length, -1)
        at_data = probabilities.gather(-1, data.unsqueeze(-1)).squeeze(-1).to(q.dtype)
        # Flow from each parent into the state: q(parent) p(x1^i | parent)^i.
        inflow = q[:, parent] * at_data[:, parent, torch.arange(length, device=device)]
        return torch.where(unmasked[None], inflow, torch.zeros_like(inflow)).sum(-1)

    q = torch.zeros(n, 2**length, dtype=torch.float64, device=device)
    q[:, -1] = 1.0
    q = _rk4(derivative, q, 0.0, 1.0, steps)
    return q[:, 0].clamp(min=1e-300).log().to(dtype)


def _uniform(
    posterior: RowPosterior,
    x1: Tensor,
    scheduler: KappaScheduler,
    vocab: int,
    steps: int,
    dtype: torch.dtype,
) -> Tensor:
    length = x1.shape[1]
    device = x1.device
    count = vocab**length
    strides = vocab ** torch.arange(length - 1, -1, -1, device=device)
    codes = torch.arange(count, device=device)
    states = (codes[:, None] // strides[None, :]) % vocab  # (count, L)
    values = torch.arange(vocab, device=device)
    # Index of the state with position i set to value y: (count, L, vocab).
    targets = (
        codes[:, None, None] + (values[None, None, :] - states[:, :, None]) * strides[None, :, None]
    )
    changes = values[None, None, :] != states[:, :, None]

    def derivative(sigma: float, p: Tensor) -> Tensor:
        t64 = torch.full((count,), -math.expm1(-sigma), dtype=torch.float64, device=device)
        # Rates in sigma: c_t dt/dsigma = c_t (1 - t), bounded as t -> 1.
        g = scheduler.jump_coefficient(t64) * torch.exp(torch.tensor(-sigma, dtype=torch.float64))
        probabilities = posterior(states, t64.to(dtype), None).to(torch.float64)
        flow = torch.where(changes, probabilities, torch.zeros_like(probabilities))
        flow = flow * (g[:, None, None] * p[:, None, None])
        change = torch.zeros_like(p).index_add_(0, targets.reshape(-1), flow.reshape(-1))
        return change - flow.sum(dim=(1, 2))

    last = scheduler.time(torch.tensor(1.0 - LAST_REMAINDER, dtype=torch.float64))
    horizon = min(HORIZON, -math.log1p(-float(last)))
    p = torch.full((count,), 1.0 / count, dtype=torch.float64, device=device)
    p = _rk4(derivative, p, 0.0, horizon, steps)
    index = (x1 * strides[None, :]).sum(-1)
    return p[index].clamp(min=1e-300).log().to(dtype)
