"""The effective sample size of importance weights, computed from log-weights."""

from __future__ import annotations

import torch
from torch import Tensor


def _check_log_weights(log_weights: Tensor) -> Tensor:
    if not isinstance(log_weights, Tensor):
        raise TypeError(f"log_weights must be a tensor, got {type(log_weights).__name__}")
    flat = log_weights.detach().reshape(-1)
    if flat.numel() == 0:
        raise ValueError("log_weights is empty")
    if not flat.is_floating_point():
        flat = flat.to(torch.get_default_dtype())
    if bool(torch.isnan(flat).any()) or bool((flat == float("inf")).any()):
        raise ValueError("log_weights contain NaN or +inf")
    if bool((flat == float("-inf")).all()):
        raise ValueError("every weight is zero (all log_weights are -inf)")
    return flat


def effective_sample_size(log_weights: Tensor) -> float:
    r"""Kish's effective sample size of importance weights :math:`w_i = e^{\log w_i}`.

    .. math:: \mathrm{ESS} = \frac{(\sum_i w_i)^2}{\sum_i w_i^2}
        = \exp\big(2\,\mathrm{LSE}(\log w) - \mathrm{LSE}(2 \log w)\big)

    computed with log-sum-exp, so weights far outside the floating-point range (as
    log-densities of high-dimensional models give) neither overflow nor underflow.
    Unnormalised weights are fine (the ratio is scale-free); zero weights
    (``-inf``) count as absent. Ranges from 1 (one weight dominates) to :math:`n`
    (equal weights).

    References:
        Kish (1965), Survey Sampling; Owen (2013), Monte Carlo Theory, Methods and
        Examples, ch. 9.

    Args:
        log_weights: ``(n,)`` (any shape is flattened), natural-log weights.

    Returns:
        The ESS as a Python float.
    """
    flat = _check_log_weights(log_weights)
    log_ess = 2 * torch.logsumexp(flat, dim=0) - torch.logsumexp(2 * flat, dim=0)
    return float(torch.exp(log_ess))


def normalized_ess(log_weights: Tensor) -> float:
    r"""The effective sample size as a fraction of the sample size, in :math:`[1/n, 1]`.

    .. math:: \mathrm{ESS} / n = \frac{(\sum_i w_i)^2}{n \sum_i w_i^2}

    References:
        Kish (1965), Survey Sampling.

    Args:
        log_weights: ``(n,)`` (any shape is flattened), natural-log weights.

    Returns:
        :math:`\mathrm{ESS}/n` as a Python float.
    """
    return effective_sample_size(log_weights) / log_weights.numel()
