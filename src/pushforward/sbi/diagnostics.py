"""Calibration diagnostics of posterior estimators: SBC, expected coverage and TARP.

Each diagnostic is a pure function of tensors: ``N`` test pairs :math:`(\\theta_i, x_i)`
drawn from the joint :math:`p(\\theta) p(x \\mid \\theta)`, with ``L`` draws from the
estimated posterior :math:`q(\\theta \\mid x_i)` for each pair (``samples: (N, L, D)``) or
their log-densities. A calibrated estimator makes the position of the truth among its
own draws uniform; each diagnostic reads that position in a different way:

* :func:`sbc`: the rank of each coordinate (Talts et al., 2018);
* :func:`expected_coverage`: the rank of the log-density, i.e. highest-density regions
  (Deistler et al., 2022); :func:`marginal_coverage`: central intervals per coordinate;
* :func:`tarp`: the distance to a random reference point (Lemos et al., 2023).

References:
    Talts et al. (2018), Validating Bayesian Inference Algorithms with Simulation-Based
    Calibration. Deistler et al. (2022), Truncated proposals for scalable and
    hassle-free simulation-based inference. Lemos et al. (2023), Sampling-Based Accuracy
    Testing of Posterior Estimators for General Inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import binom, kstest
from torch import Tensor

MIN_PAIRS = 20
"""Fewest test pairs every diagnostic here accepts: one bin of Talts et al.'s rank
histogram of N / 20 bins, and about the fewest for which a Kolmogorov-Smirnov test can
reject anything but gross miscalibration (sbi warns below 100)."""
BAND = 0.99
"""Probability of the binomial bands drawn around a calibrated histogram or curve."""
COVERAGE_LEVELS = 101
"""Default credibility levels of :func:`expected_coverage`: 0, 0.01, ..., 1."""


@dataclass(frozen=True)
class SBCResult:
    """Simulation-based calibration of ``N`` pairs in ``D`` dimensions (Talts et al., 2018).

    Attributes:
        ranks: ``(N, D)`` int64, the number of the ``L`` posterior draws below the truth.
        samples_per_pair: ``L``; a rank lies in ``[0, L]``.
        ks_pvalues: ``(D,)`` float64, Kolmogorov-Smirnov p-values of uniformity of the
            jittered ranks ``(rank + U(0, 1)) / (L + 1)``, exactly uniform under calibration.
        bin_edges: ``(B + 1,)`` int64 from 0 to ``L + 1``: bin ``b`` holds the ranks
            ``bin_edges[b] <= rank < bin_edges[b + 1]``.
        counts: ``(B, D)`` int64, the pairs in each bin.
        band_lower, band_upper: ``(B,)`` int64, the central :data:`BAND` interval of a
            bin's count under calibration, ``Binomial(N, width_b / (L + 1))``.
    """

    ranks: Tensor
    samples_per_pair: int
    ks_pvalues: Tensor
    bin_edges: Tensor
    counts: Tensor
    band_lower: Tensor
    band_upper: Tensor


@dataclass(frozen=True)
class CoverageResult:
    """Coverage of credible regions at several levels (one curve, or one per dimension).

    :func:`expected_coverage` gives one curve (highest-density regions); the fields marked
    ``[D]`` have a trailing dimension ``D`` from :func:`marginal_coverage` (central
    intervals per coordinate) and none from :func:`expected_coverage`.

    Attributes:
        levels: ``(K,)`` credibility levels :math:`\\gamma` in ``[0, 1]``.
        coverage: ``(K[, D])`` the fraction of pairs whose truth lies in the region of
            mass :math:`\\gamma`, with the ``L + 1`` places the truth can take among ``L``
            draws shared evenly between them, so a calibrated estimator has expected
            coverage exactly :math:`\\gamma`.
        band_lower, band_upper: ``(K,)`` the central :data:`BAND` interval of the coverage
            of a calibrated estimator, ``Binomial(N, gamma) / N`` (pointwise).
        credibility: ``(N[, D])`` :math:`\\alpha_i`, the smallest level whose region holds
            the truth: the fraction of draws with a higher log-density (highest-density
            regions), or ``|2 rank / L - 1|`` (central intervals).
        samples_per_pair: ``L``.
        ks_pvalue: ``([D])`` Kolmogorov-Smirnov p-value of uniformity of the jittered
            credibilities.
        signed_area: ``([D])`` :math:`\\int_0^1 (C(\\gamma) - \\gamma)\\, d\\gamma`:
            positive is **conservative** (underconfident, regions too wide, the curve
            above the diagonal), negative is **overconfident** (too narrow).
    """

    levels: Tensor
    coverage: Tensor
    band_lower: Tensor
    band_upper: Tensor
    credibility: Tensor
    samples_per_pair: int
    ks_pvalue: Tensor
    signed_area: Tensor


@dataclass(frozen=True)
class TARPResult:
    """Tests of accuracy with random points (Lemos et al., 2023), as sbi computes them.

    Attributes:
        levels: ``(K,)`` credibility levels :math:`\\alpha` in ``[0, 1]``.
        ecp: ``(K,)`` expected coverage probability :math:`\\mathrm{ECP}(\\alpha)`.
        credibility: ``(N,)`` :math:`f_i`, the fraction of draws nearer the reference
            point than the truth (Algorithm 2 of the paper).
        samples_per_pair: ``L``.
        atc: the area to curve over the upper half of the levels (sbi's ``check_tarp``):
            about 0 when calibrated, **positive when overdispersed** (the posterior too
            wide), **negative when underdispersed** (too narrow); a bias also shows.
        ks_pvalue: sbi's two-sample Kolmogorov-Smirnov p-value between the values of
            the ECP curve and of the levels; near 1 when they match.
    """

    levels: Tensor
    ecp: Tensor
    credibility: Tensor
    samples_per_pair: int
    atc: float
    ks_pvalue: float


def sbc_ranks(samples: Tensor, theta: Tensor) -> Tensor:
    """Ranks of the truths among posterior draws, per dimension (Talts et al., 2018).

    .. math:: r_{id} = \\#\\{l : \\theta^{(l)}_{id} < \\theta_{id}\\} \\in \\{0, \\dots, L\\}

    Args:
        samples: ``(N, L, D)`` draws from the estimated posterior of each pair.
        theta: ``(N, D)`` the true parameters.

    Returns:
        ``(N, D)`` int64 ranks on the inputs' device.
    """
    _check_samples(samples, theta)
    return (samples < theta.unsqueeze(1)).sum(dim=1)


def sbc_ranks_of_statistic(sample_statistic: Tensor, truth_statistic: Tensor) -> Tensor:
    """Ranks of a scalar statistic of the truth among the same statistic of the draws.

    .. math:: r_i = \\#\\{l : s(\\theta^{(l)}_i, x_i) < s(\\theta_i, x_i)\\}

    With :math:`s = \\log q(\\theta \\mid x)` the ranks are those of expected coverage
    (sbi's ``run_sbc`` with ``reduce_fns=posterior.log_prob``); feed them to
    :func:`sbc_from_ranks`.

    Args:
        sample_statistic: ``(N, L)`` the statistic of each draw.
        truth_statistic: ``(N,)`` the statistic of each truth.

    Returns:
        ``(N,)`` int64 ranks in ``[0, L]``.
    """
    _check_statistic(sample_statistic, truth_statistic, "statistic")
    return (sample_statistic < truth_statistic.unsqueeze(1)).sum(dim=1)


def sbc(
    samples: Tensor,
    theta: Tensor,
    generator: torch.Generator | None = None,
    bins: int | None = None,
) -> SBCResult:
    """Simulation-based calibration: uniformity of the ranks of each coordinate.

    If :math:`\\theta_i \\sim p(\\theta)`, :math:`x_i \\sim p(x \\mid \\theta_i)` and the
    draws come from the true posterior, each rank is uniform on :math:`\\{0, \\dots, L\\}`;
    a U-shaped histogram means too narrow, a hump too wide, a slope a bias.

    Args:
        samples: ``(N, L, D)`` posterior draws, ``N >=`` :data:`MIN_PAIRS`.
        theta: ``(N, D)`` the true parameters.
        generator: seeds the jitter of the Kolmogorov-Smirnov test.
        bins: bins of the rank histogram, at most ``L + 1``; default ``N // 20`` (Talts et
            al.), or down to half as many where that many split the ``L + 1`` ranks evenly
            (bins of unequal width hold unequal counts; their bands follow).

    References:
        Talts et al. (2018), Validating Bayesian Inference Algorithms with
        Simulation-Based Calibration.

    Example:
        >>> theta = torch.randn(100, 2, dtype=torch.float64)
        >>> samples = torch.randn(100, 49, 2, dtype=torch.float64)  # x says nothing
        >>> result = sbc(samples, theta, torch.Generator().manual_seed(0))
        >>> result.bin_edges.tolist()  # 100 // 20 bins of the 50 possible ranks
        [0, 10, 20, 30, 40, 50]
        >>> result.counts.shape
        torch.Size([5, 2])
    """
    ranks = sbc_ranks(samples, theta)
    return sbc_from_ranks(ranks, samples.shape[1], generator, bins)


def sbc_from_ranks(
    ranks: Tensor,
    samples_per_pair: int,
    generator: torch.Generator | None = None,
    bins: int | None = None,
) -> SBCResult:
    """:func:`sbc` from ranks already counted: ``(N, D)``, or ``(N,)`` (one statistic).

    Args:
        ranks: integers in ``[0, samples_per_pair]``, ``N >=`` :data:`MIN_PAIRS`.
        samples_per_pair: ``L``, the draws each rank was counted among.
        generator: seeds the jitter of the Kolmogorov-Smirnov test.
        bins: bins of the rank histogram; default as :func:`sbc`.
    """
    ranks = _check_ranks(ranks, samples_per_pair, "SBC")
    n, dims = ranks.shape
    places = samples_per_pair + 1
    if bins is not None and bins < 1:
        raise ValueError(f"the rank histogram needs at least 1 bin, {bins} were asked for")
    count = min(places, _histogram_bins(n, places) if bins is None else bins)
    edges = torch.round(torch.linspace(0, places, count + 1, dtype=torch.float64)).long()
    edges = edges.to(ranks.device)
    which = torch.searchsorted(edges, ranks.T.contiguous(), right=True) - 1  # (D, N)
    counts = torch.zeros(dims, count, dtype=torch.int64, device=ranks.device)
    counts.scatter_add_(1, which, torch.ones_like(which))
    widths = (edges[1:] - edges[:-1]).double().cpu() / places
    tail = (1 - BAND) / 2
    lower = torch.as_tensor(binom.ppf(tail, n, widths.numpy())).long().to(ranks.device)
    upper = torch.as_tensor(binom.ppf(1 - tail, n, widths.numpy())).long().to(ranks.device)
    jittered = _jitter(ranks, places, generator)
    pvalues = torch.tensor([_ks_uniform(column) for column in jittered.T], dtype=torch.float64)
    return SBCResult(
        ranks, samples_per_pair, pvalues.to(ranks.device), edges, counts.T, lower, upper
    )


def expected_coverage(
    sample_log_probs: Tensor,
    truth_log_probs: Tensor,
    levels: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> CoverageResult:
    """Expected coverage of the estimator's highest-density regions.

    The truth lies in the highest-density region of mass :math:`\\gamma` when fewer than
    a fraction :math:`\\gamma` of the draws have a higher density. With
    :math:`c_i = \\#\\{l : \\log q(\\theta^{(l)}_i \\mid x_i) > \\log q(\\theta_i \\mid x_i)\\}`
    and the truth's place jittered uniformly in :math:`[c_i, c_i + 1] / (L + 1)`,

    .. math:: C(\\gamma) = \\frac1N \\sum_i \\min(1, \\max(0, (L + 1)\\gamma - c_i)),
              \\qquad \\int_0^1 (C - \\gamma)\\, d\\gamma
              = \\frac12 - \\frac1N \\sum_i \\frac{c_i + 1/2}{L + 1},

    so a calibrated estimator has :math:`E[C(\\gamma)] = \\gamma` for any ``L``.

    Args:
        sample_log_probs: ``(N, L)`` :math:`\\log q(\\theta^{(l)}_i \\mid x_i)` of the draws.
        truth_log_probs: ``(N,)`` :math:`\\log q(\\theta_i \\mid x_i)` of the truths
            (``-inf`` where a truth is outside the estimator's support).
        levels: ``(K,)`` increasing levels in ``[0, 1]``; default 0, 0.01, ..., 1.
        generator: seeds the jitter of the Kolmogorov-Smirnov test.

    Returns:
        a :class:`CoverageResult` without the trailing dimension; values in the dtype and
        on the device of the log-densities.

    References:
        Deistler et al. (2022), Truncated proposals for scalable and hassle-free
        simulation-based inference (sample-based expected coverage); Talts et al. (2018).
    """
    _check_statistic(sample_log_probs, truth_log_probs, "log-densities")
    n, draws = sample_log_probs.shape
    _check_pairs(n, "expected coverage")
    like = sample_log_probs if sample_log_probs.is_floating_point() else sample_log_probs.double()
    levels = _levels(levels, COVERAGE_LEVELS, like, "expected coverage")
    higher = (sample_log_probs > truth_log_probs.unsqueeze(1)).sum(dim=1).to(like.dtype)
    places = draws + 1
    start = higher / places
    coverage = _interval_cdf(start, start + 1 / places, levels).mean(dim=1)
    area = 0.5 - ((higher + 0.5) / places).mean()
    pvalue = _ks_uniform(_jitter(higher, places, generator))
    lower, upper = _band(n, levels)
    return CoverageResult(
        levels,
        coverage,
        lower,
        upper,
        higher / draws,
        draws,
        torch.tensor(pvalue, dtype=like.dtype, device=like.device),
        area,
    )


def marginal_coverage(
    ranks: Tensor,
    samples_per_pair: int,
    levels: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> CoverageResult:
    """Coverage of central credible intervals, one per dimension, from SBC ranks.

    For models without densities. The truth's place :math:`u = (r + U) / (L + 1)` among
    the draws is uniform under calibration, and it lies inside the central interval of
    mass :math:`\\gamma` when :math:`|2u - 1| < \\gamma`:

    .. math:: C_d(\\gamma) = \\frac1N \\sum_i P_U(|2u_{id} - 1| < \\gamma),
              \\qquad \\int_0^1 (C_d - \\gamma)\\, d\\gamma = \\frac12 - \\frac1N \\sum_i
              E_U |2u_{id} - 1|.

    A central interval is less sensitive to a bias than a rank histogram (a shift moves
    the truth out on one side only): read it beside :func:`sbc`.

    Args:
        ranks: ``(N, D)`` int64 ranks from :func:`sbc_ranks` (or ``(N,)``).
        samples_per_pair: ``L``.
        levels: ``(K,)`` increasing levels in ``[0, 1]``; default 0, 0.01, ..., 1.
        generator: seeds the jitter of the Kolmogorov-Smirnov test.

    Returns:
        a :class:`CoverageResult` with the trailing dimension ``D``, float64.
    """
    ranks = _check_ranks(ranks, samples_per_pair, "marginal coverage")
    like = torch.zeros((), dtype=torch.float64, device=ranks.device)
    levels = _levels(levels, COVERAGE_LEVELS, like, "marginal coverage")
    places = samples_per_pair + 1
    low = 2 * ranks.double() / places - 1  # 2u - 1 is uniform on [low, high]
    high = low + 2 / places
    inside = _interval_cdf(low, high, levels) - _interval_cdf(low, high, -levels)
    coverage = inside.mean(dim=1)  # (K, D)
    mean_distance = (high * high.abs() - low * low.abs()) / (2 * (high - low))
    area = 0.5 - mean_distance.mean(dim=0)
    central = (2 * _jitter(ranks, places, generator) - 1).abs()
    pvalues = torch.tensor([_ks_uniform(column) for column in central.T], dtype=torch.float64)
    lower, upper = _band(ranks.shape[0], levels)
    credibility = (2 * ranks.double() / samples_per_pair - 1).abs()
    return CoverageResult(
        levels,
        coverage,
        lower,
        upper,
        credibility,
        samples_per_pair,
        pvalues.to(ranks.device),
        area,
    )


def tarp(
    samples: Tensor,
    theta: Tensor,
    generator: torch.Generator | None = None,
    references: Tensor | None = None,
    normalize: bool = True,
    levels: Tensor | None = None,
) -> TARPResult:
    """Tests of accuracy with random points (TARP), following sbi's ``run_tarp``/``check_tarp``.

    With everything rescaled to the box of the truths, :math:`(\\theta - \\min_i
    \\theta_i) / (\\max_i \\theta_i - \\min_i \\theta_i)` per dimension (sbi's
    ``z_score_theta``), one reference point :math:`\\theta^r_i` per pair drawn uniformly in
    that box, and Euclidean distances,

    .. math:: f_i = \\frac1L \\#\\{l : \\|\\theta^{(l)}_i - \\theta^r_i\\| <
              \\|\\theta_i - \\theta^r_i\\|\\}, \\qquad
              \\mathrm{ECP}(\\alpha) = \\frac1N \\#\\{i : f_i < \\alpha\\},

    with :math:`\\mathrm{ECP}(1) = 1` (sbi's histogram closes its last bin), and the area
    to curve over the upper half of the ``K`` levels,
    :math:`\\mathrm{ATC} = \\sum_{k \\ge \\lfloor K/2 \\rfloor} (\\mathrm{ECP}(\\alpha_k) -
    \\alpha_k)(\\alpha_k - \\alpha_{k-1})`. sbi documents: ATC > 0 overdispersed (too
    wide), ATC < 0 underdispersed (too narrow). The levels are fixed here, where sbi
    bins :math:`[\\min_i f_i, \\max_i f_i]` into ``N // 10`` bins; they agree when
    the :math:`f_i` reach 0 and 1. Under calibration :math:`E[\\mathrm{ECP}(\\alpha)] =
    \\lceil \\alpha L \\rceil / (L + 1)`, a bias of at most :math:`1 / (L + 1)`.

    Args:
        samples: ``(N, L, D)`` posterior draws, ``N >=`` :data:`MIN_PAIRS`.
        theta: ``(N, D)`` the true parameters; no dimension may be constant.
        generator: draws the reference points (on the inputs' device).
        references: ``(N, D)`` reference points in theta's units instead of random ones.
        normalize: rescale to the box of the truths first (sbi's default).
        levels: ``(K,)`` increasing levels in ``[0, 1]``, ``K >= 2``; default
            ``N // 10 + 1`` evenly spaced from 0 to 1 (sbi's ``N // 10`` bins).

    Returns:
        a :class:`TARPResult`; tensors in the dtype and on the device of ``samples``.

    References:
        Lemos et al. (2023), Sampling-Based Accuracy Testing of Posterior Estimators for
        General Inference (Algorithm 2).
    """
    _check_samples(samples, theta)
    n, draws, dims = samples.shape
    _check_pairs(n, "TARP")
    levels = _levels(levels, n // 10 + 1, samples, "TARP")
    low = theta.min(dim=0).values
    high = theta.max(dim=0).values
    if bool((high == low).any()):
        dim = int(torch.nonzero(high == low)[0])
        raise ValueError(
            f"theta's dimension {dim} has one value in all {n} pairs: TARP "
            "draws reference points in the box the truths span"
        )
    if references is None:
        uniform = torch.rand(n, dims, generator=generator, dtype=theta.dtype, device=theta.device)
        references = low + (high - low) * uniform
    elif references.shape != theta.shape:
        raise ValueError(
            f"references have shape {tuple(references.shape)}, theta "
            f"{tuple(theta.shape)}: they must match"
        )
    else:
        _check_values(references, "references", allow_inf=False)
    if normalize:
        samples, theta, references = (
            (t - low) / (high - low) for t in (samples, theta, references)
        )
    sample_distance = torch.linalg.vector_norm(samples - references.unsqueeze(1), dim=-1)
    truth_distance = torch.linalg.vector_norm(theta - references, dim=-1)
    f = (sample_distance < truth_distance.unsqueeze(1)).sum(dim=1).to(samples.dtype) / draws
    ecp = ((f.unsqueeze(0) < levels.unsqueeze(1)) | (levels.unsqueeze(1) >= 1)).to(f.dtype)
    ecp = ecp.mean(dim=1)
    middle = levels.shape[0] // 2
    widths = levels[middle:] - levels[middle - 1 : -1]
    atc = float(((ecp[middle:] - levels[middle:]) * widths).sum())
    pvalue = float(kstest(ecp.detach().cpu().numpy(), levels.detach().cpu().numpy()).pvalue)
    return TARPResult(levels, ecp, f, draws, atc, pvalue)


def _histogram_bins(n: int, places: int) -> int:
    """Talts et al.'s ``N // 20`` bins, or the most bins down to half as many that split
    the ``places = L + 1`` ranks evenly, so that every bin spans as many ranks."""
    target = min(max(1, n // 20), places)
    even = [b for b in range(target, (target + 1) // 2 - 1, -1) if places % b == 0]
    return even[0] if even else target


def _interval_cdf(low: Tensor, high: Tensor, levels: Tensor) -> Tensor:
    """``(K, *low.shape)``: P(v < level) for v uniform on [low, high], at each level."""
    shape = (-1,) + (1,) * low.dim()
    return ((levels.view(shape) - low) / (high - low)).clamp(0, 1)


def _jitter(counts: Tensor, places: int, generator: torch.Generator | None) -> Tensor:
    """``(counts + U(0, 1)) / places`` in float64 on the CPU: uniform on [0, 1] when the
    counts are uniform on {0, ..., places - 1}, so a continuous test applies exactly."""
    device = generator.device if generator is not None else counts.device
    noise = torch.rand(counts.shape, generator=generator, dtype=torch.float64, device=device)
    return (counts.double().cpu() + noise.cpu()) / places


def _ks_uniform(values: Tensor) -> float:
    """Kolmogorov-Smirnov p-value of ``values: (N,)`` against U(0, 1)."""
    return float(kstest(values.numpy(), "uniform").pvalue)


def _band(n: int, levels: Tensor) -> tuple[Tensor, Tensor]:
    """The central :data:`BAND` interval of Binomial(n, level) / n at each level."""
    tail = (1 - BAND) / 2
    values = levels.detach().double().cpu().numpy()
    lower = torch.as_tensor(binom.ppf(tail, n, values) / n).to(levels)
    upper = torch.as_tensor(binom.ppf(1 - tail, n, values) / n).to(levels)
    return lower, upper


def _levels(levels: Tensor | None, default: int, like: Tensor, what: str) -> Tensor:
    """The credibility levels, checked, in ``like``'s dtype and device."""
    if levels is None:
        return torch.linspace(0, 1, default, dtype=like.dtype, device=like.device)
    levels = torch.as_tensor(levels).to(dtype=like.dtype, device=like.device)
    if levels.dim() != 1 or levels.shape[0] < 2:
        raise ValueError(
            f"{what} needs levels of shape (K,) with K >= 2, not {tuple(levels.shape)}"
        )
    if not bool(torch.isfinite(levels).all()) or bool((levels < 0).any() | (levels > 1).any()):
        raise ValueError(f"{what} needs levels in [0, 1]")
    if not bool((levels[1:] > levels[:-1]).all()):
        raise ValueError(f"{what} needs strictly increasing levels")
    return levels


def _check_pairs(n: int, what: str) -> None:
    if n < MIN_PAIRS:
        raise ValueError(f"{what} needs at least {MIN_PAIRS} test pairs, {n} were given")


def _check_values(tensor: Tensor, name: str, allow_inf: bool) -> None:
    if bool(torch.isnan(tensor).any()):
        raise ValueError(f"{name} hold NaN ({int(torch.isnan(tensor).sum())} values)")
    if not allow_inf and bool(torch.isinf(tensor).any()):
        raise ValueError(f"{name} hold infinite values ({int(torch.isinf(tensor).sum())})")


def _check_samples(samples: Tensor, theta: Tensor) -> None:
    shapes = f"samples have shape {tuple(samples.shape)} and theta {tuple(theta.shape)}"
    if samples.dim() != 3 or theta.dim() != 2:
        raise ValueError(f"{shapes}: expected samples (N, L, D) and theta (N, D)")
    if samples.shape[0] != theta.shape[0] or samples.shape[2] != theta.shape[1]:
        raise ValueError(
            f"{shapes}: expected samples (N, L, D) and theta (N, D) with the same N and D"
        )
    if samples.shape[1] == 0:
        raise ValueError(f"{shapes}: every pair needs at least one posterior draw")
    _check_values(samples, "samples", allow_inf=False)
    _check_values(theta, "theta", allow_inf=False)


def _check_statistic(sample_statistic: Tensor, truth_statistic: Tensor, name: str) -> None:
    shapes = (
        f"the draws' {name} have shape {tuple(sample_statistic.shape)} and the "
        f"truths' {tuple(truth_statistic.shape)}"
    )
    if sample_statistic.dim() != 2 or truth_statistic.shape != sample_statistic.shape[:1]:
        raise ValueError(f"{shapes}: expected (N, L) and (N,)")
    if sample_statistic.shape[1] == 0:
        raise ValueError(f"{shapes}: every pair needs at least one posterior draw")
    _check_values(sample_statistic, f"the draws' {name}", allow_inf=True)
    _check_values(truth_statistic, f"the truths' {name}", allow_inf=True)


def _check_ranks(ranks: Tensor, samples_per_pair: int, what: str) -> Tensor:
    """``ranks`` as ``(N, D)``, refused unless integers in ``[0, samples_per_pair]``."""
    if ranks.dim() == 1:
        ranks = ranks.unsqueeze(1)
    if ranks.dim() != 2:
        raise ValueError(f"{what} needs ranks of shape (N, D) or (N,), not {tuple(ranks.shape)}")
    if ranks.is_floating_point() or ranks.is_complex() or ranks.dtype == torch.bool:
        raise ValueError(f"{what} needs integer ranks, not {ranks.dtype}")
    if samples_per_pair < 1:
        raise ValueError(f"{what} needs samples_per_pair >= 1, not {samples_per_pair}")
    _check_pairs(ranks.shape[0], what)
    if bool((ranks < 0).any() | (ranks > samples_per_pair).any()):
        raise ValueError(
            f"{what} needs ranks in [0, {samples_per_pair}]; they span "
            f"[{int(ranks.min())}, {int(ranks.max())}]"
        )
    return ranks.long()
