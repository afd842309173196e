"""Convergence diagnostics of many chains: rank-normalised split R-hat, bulk ESS, acceptance."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _checked_draws(draws: Tensor) -> Tensor:
    if not isinstance(draws, Tensor) or draws.ndim != 3:
        shape = getattr(draws, "shape", None)
        raise ValueError(f"draws must be a tensor (steps, chains, d), got shape {shape}")
    if draws.shape[0] < 4:
        raise ValueError(f"diagnostics need at least 4 steps per chain, got {draws.shape[0]}")
    if not bool(torch.isfinite(draws).all()):
        raise ValueError("draws contain NaN or Inf values")
    # Ranks and sums of squares of many draws: float64 keeps them exact enough.
    return draws.to(torch.float64)


def split_chains(draws: Tensor) -> Tensor:
    """Each chain cut in two halves: ``(steps, chains, d)`` to ``(steps // 2, 2 chains, d)``.

    An odd middle draw is dropped, so a trend within a chain shows as a
    difference between its halves.
    """
    half = draws.shape[0] // 2
    return torch.cat([draws[:half], draws[draws.shape[0] - half :]], dim=1)


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..n of a vector, ties given their average rank."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    upper = torch.cumsum(counts, 0).to(values.dtype)
    return (upper - (counts.to(values.dtype) - 1.0) / 2.0)[inverse]


def rank_normalize(draws: Tensor) -> Tensor:
    r"""Normal scores of the pooled ranks, per dimension (Vehtari et al. 2021, eq. 14).

    .. math:: z = \Phi^{-1}\left(\frac{r - 3/8}{S + 1/4}\right)

    with :math:`r` the rank among all :math:`S` draws of that dimension.
    """
    steps, chains, d = draws.shape
    flat = draws.reshape(-1, d)
    total = flat.shape[0]
    ranks = torch.stack([_average_ranks(flat[:, j]) for j in range(d)], dim=1)
    return torch.special.ndtri((ranks - 0.375) / (total + 0.25)).reshape(steps, chains, d)


def _potential_scale_reduction(draws: Tensor) -> Tensor:
    """The classical R-hat of ``(n, m, d)`` draws (Gelman et al. 2013, BDA3 eq. 11.4)."""
    n = draws.shape[0]
    within = draws.var(dim=0, unbiased=True).mean(dim=0)
    between_over_n = draws.mean(dim=0).var(dim=0, unbiased=True)
    pooled = (n - 1) / n * within + between_over_n
    return torch.sqrt(pooled / within)


def split_r_hat(draws: Tensor) -> Tensor:
    r"""Rank-normalised split :math:`\hat R` per dimension, ``(d,)``.

    The larger of the bulk value (R-hat of the rank-normalised split chains) and
    the tail value (the same of the folded draws :math:`|x - \operatorname{median}|`),
    as recommended by Vehtari et al.: near 1 when the chains agree, well above
    1.01 when they do not. Chains constant at different values give ``inf``.

    References:
        Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), Rank-Normalization,
        Folding, and Localization: An Improved R-hat for Assessing Convergence of
        MCMC, Bayesian Analysis 16(2).

    Args:
        draws: ``(steps, chains, d)`` with at least 4 steps.

    Returns:
        ``(d,)`` in the draws' dtype.
    """
    values = split_chains(_checked_draws(draws))
    bulk = _potential_scale_reduction(rank_normalize(values))
    median = values.reshape(-1, values.shape[-1]).median(dim=0).values
    tail = _potential_scale_reduction(rank_normalize((values - median).abs()))
    return torch.maximum(bulk, tail).to(draws.dtype)


def autocovariance(draws: Tensor) -> Tensor:
    r"""The biased autocovariance of each chain at every lag by FFT, ``(n, m, d)`` to ``(n, m, d)``.

    .. math:: \hat\gamma_t = \frac1n \sum_{i=1}^{n-t} (x_i - \bar x)(x_{i+t} - \bar x)
    """
    n = draws.shape[0]
    centred = draws - draws.mean(dim=0, keepdim=True)
    # Zero-padding to 2n turns the FFT's circular correlation into the linear one.
    spectrum = torch.fft.rfft(centred, n=2 * n, dim=0)
    return torch.fft.irfft(spectrum * spectrum.conj(), n=2 * n, dim=0)[:n] / n


def effective_sample_size(draws: Tensor, rank_normalized: bool = True) -> Tensor:
    r"""Bulk effective sample size per dimension, ``(d,)``, by Geyer's initial monotone sequence.

    On the rank-normalised split chains (``rank_normalized``, the bulk ESS of
    Vehtari et al. 2021) or the raw ones. The combined autocorrelation at lag
    :math:`t` is

    .. math:: \hat\rho_t = 1 - \frac{W - \frac1m \sum_j \hat\gamma_{t,j}}{\widehat{\mathrm{var}}^+},

    its pair sums :math:`P_k = \hat\rho_{2k} + \hat\rho_{2k+1}` are kept while
    positive and made non-increasing, and
    :math:`\mathrm{ESS} = S / \hat\tau` with :math:`\hat\tau = -1 + 2 \sum_k P_k`
    (at least :math:`1/\log_{10} S`), :math:`S` the number of draws.

    References:
        Geyer (1992), Practical Markov Chain Monte Carlo; Vehtari et al. (2021),
        Rank-Normalization, Folding, and Localization: An Improved R-hat for
        Assessing Convergence of MCMC; the Stan Reference Manual, "Effective
        Sample Size".

    Args:
        draws: ``(steps, chains, d)`` with at least 4 steps.
        rank_normalized: rank-normalise first (bulk ESS).

    Returns:
        ``(d,)`` in the draws' dtype.
    """
    values = split_chains(_checked_draws(draws))
    if rank_normalized:
        values = rank_normalize(values)
    n, m, _ = values.shape
    total = n * m
    covariance = autocovariance(values)
    within = (covariance[0] * n / (n - 1)).mean(dim=0)
    pooled = (n - 1) / n * within
    if m > 1:
        pooled = pooled + values.mean(dim=0).var(dim=0, unbiased=True)
    rho = 1.0 - (within - covariance.mean(dim=1)) / pooled
    pairs = n // 2
    sums = rho[: 2 * pairs : 2] + rho[1 : 2 * pairs : 2]
    # Geyer's initial positive sequence: stop at the first non-positive pair sum ...
    positive = torch.cumprod((sums > 0).to(sums.dtype), dim=0)
    # ... and its monotone version: each pair sum no larger than those before it.
    monotone = torch.cummin(torch.where(positive > 0, sums, torch.zeros_like(sums)), dim=0).values
    tau = -1.0 + 2.0 * (monotone * positive).sum(dim=0)
    tau = torch.clamp(tau, min=1.0 / math.log10(total))
    ess = total / tau
    # Constant draws carry no information on their spread: no ESS.
    return torch.where(pooled > 0, ess, torch.full_like(ess, math.nan)).to(draws.dtype)


def acceptance_rates(accepted: Tensor) -> tuple[float, Tensor]:
    """The overall acceptance rate and ``(chains,)`` per chain, of ``(steps, chains)`` bools."""
    if accepted.ndim != 2 or accepted.shape[0] == 0:
        raise ValueError(f"accepted must be (steps, chains) with steps >= 1, got {accepted.shape}")
    rates = accepted.to(torch.float64).mean(dim=0)
    return float(rates.mean()), rates
