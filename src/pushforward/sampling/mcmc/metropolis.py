"""The Metropolis accept/reject rule in log space, safe where log-densities are ``-inf``."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def log_acceptance_ratio(proposed: Tensor, current: Tensor) -> Tensor:
    r"""The log of the Metropolis ratio :math:`a = \pi(x')\,/\,\pi(x)` from its two log terms.

    ``proposed`` and ``current`` are the log numerator and denominator
    (log-density plus any proposal correction). A proposal at ``-inf`` (outside
    the support) gets ``-inf``, so it is never accepted; a finite proposal from a
    current state at ``-inf`` (a chain started outside) gets ``+inf``, so it is
    always taken. No NaN comes out of ``-inf - (-inf)``.

    Args:
        proposed: ``(chains,)`` log numerator.
        current: ``(chains,)`` log denominator.

    Returns:
        ``(chains,)`` the log ratio, in ``[-inf, +inf]``.
    """
    outside = proposed == -math.inf
    stuck = current == -math.inf
    # Mask before subtracting, so that -inf - (-inf) is never formed.
    difference = torch.where(outside | stuck, torch.zeros_like(proposed), proposed) - torch.where(
        outside | stuck, torch.zeros_like(current), current
    )
    difference = torch.where(stuck, torch.full_like(difference, math.inf), difference)
    return torch.where(outside, torch.full_like(difference, -math.inf), difference)


def metropolis_accept(log_ratio: Tensor, generator: torch.Generator) -> Tensor:
    r"""``(chains,)`` bool: accept where :math:`\log u < \log a`, :math:`u \sim U(0, 1)`.

    A ratio of ``-inf`` is always rejected (``log u`` is finite: ``u`` is drawn in
    ``(0, 1)``), one of ``+inf`` always accepted.

    References:
        Metropolis et al. (1953), Equation of State Calculations by Fast Computing
        Machines; Hastings (1970), Monte Carlo Sampling Methods Using Markov Chains
        and Their Applications.
    """
    uniform = torch.rand(
        log_ratio.shape, dtype=log_ratio.dtype, device=log_ratio.device, generator=generator
    )
    # u == 0 would give log u = -inf and accept a -inf ratio; keep u inside (0, 1).
    tiny = torch.finfo(log_ratio.dtype).tiny
    return torch.log(uniform.clamp_min(tiny)) < log_ratio


def acceptance_probability(log_ratio: Tensor) -> Tensor:
    r"""``(chains,)`` :math:`\min(1, a)` of the log ratio (0 at ``-inf``), for step-size tuning."""
    return torch.exp(log_ratio.clamp(max=0.0))
