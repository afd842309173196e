"""Calibration diagnostics on a conjugate Gaussian problem whose posterior is known exactly.

Prior N(0, I), likelihood x | theta ~ N(theta, s^2 I), posterior
N(x / (1 + s^2), s^2 / (1 + s^2) I). The exact posterior must pass each diagnostic and a
deliberately wrong one (too wide, too narrow, shifted) must fail it, with the sign each
diagnostic documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from scipy.stats import binom, kstest
from torch import Tensor

from pushforward.sbi.diagnostics import (
    MIN_PAIRS,
    expected_coverage,
    marginal_coverage,
    sbc,
    sbc_from_ranks,
    sbc_ranks,
    sbc_ranks_of_statistic,
    tarp,
)

NOISE = 0.5
"""The likelihood's standard deviation s."""
POSTERIORS = {
    # name: (factor on the posterior's standard deviation, shift of its mean in stds)
    "exact": (1.0, 0.0),
    "overdispersed": (2.0, 0.0),
    "underdispersed": (0.5, 0.0),
    "biased": (1.0, 1.0),
}

DECILES = torch.linspace(0, 1, 11, dtype=torch.float64)


@dataclass(frozen=True)
class Problem:
    samples: Tensor  # (N, L, D) draws of the (possibly wrong) posterior
    theta: Tensor  # (N, D) truths from the prior
    sample_log_probs: Tensor  # (N, L) that posterior's log-density of its draws
    truth_log_probs: Tensor  # (N,) and of the truths


def gaussian_problem(n: int, draws: int, dims: int, posterior: str, seed: int = 0) -> Problem:
    scale, shift = POSTERIORS[posterior]
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, dims, generator=generator, dtype=torch.float64)
    x = theta + NOISE * torch.randn(n, dims, generator=generator, dtype=torch.float64)
    exact_std = math.sqrt(NOISE**2 / (1 + NOISE**2))
    mean = x / (1 + NOISE**2) + shift * exact_std
    std = scale * exact_std
    noise = torch.randn(n, draws, dims, generator=generator, dtype=torch.float64)
    samples = mean.unsqueeze(1) + std * noise

    def log_prob(points: Tensor, centre: Tensor) -> Tensor:
        white = (points - centre) / std
        return (-0.5 * white**2 - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)

    return Problem(samples, theta, log_prob(samples, mean.unsqueeze(1)), log_prob(theta, mean))


def seeded(seed: int) -> torch.Generator:
    # The diagnostics' generators use seeds far from the problem's: two generators with
    # one seed give correlated draws (randn is built from the same uniforms), and
    # reference points correlated with the truths bias TARP.
    return torch.Generator().manual_seed(1000 + seed)


# Ranks


def test_sbc_ranks_by_hand() -> None:
    samples = torch.tensor(
        [[[0.0, 5.0], [1.0, 4.0], [2.0, 3.0]], [[-1.0, 0.0], [-2.0, 0.0], [-3.0, 0.0]]]
    )
    theta = torch.tensor([[1.5, 3.5], [-5.0, 1.0]])
    ranks = sbc_ranks(samples, theta)
    assert ranks.dtype == torch.int64
    assert ranks.tolist() == [[2, 1], [0, 3]]
    statistic = sbc_ranks_of_statistic(torch.tensor([[0.1, 0.5, 0.9]]), torch.tensor([0.6]))
    assert statistic.tolist() == [2]


def test_rank_histogram_bins_and_band() -> None:
    n, draws = 100, 99
    ranks = torch.arange(n).unsqueeze(1) % (draws + 1)  # every rank once
    result = sbc_from_ranks(ranks, draws, seeded(0))
    assert result.bin_edges.tolist() == [0, 20, 40, 60, 80, 100]  # N / 20 bins
    assert result.counts[:, 0].tolist() == [20] * 5
    assert result.band_lower.tolist() == [int(binom.ppf(0.005, n, 0.2))] * 5
    assert result.band_upper.tolist() == [int(binom.ppf(0.995, n, 0.2))] * 5
    few = sbc_from_ranks(torch.randint(0, 4, (200, 2)), 3, seeded(0))
    assert few.bin_edges.tolist() == [0, 1, 2, 3, 4]  # never more bins than ranks
    assert few.counts.sum(dim=0).tolist() == [200, 200]


def test_jittered_ranks_are_uniform() -> None:
    # Ranks among 3 draws take 4 values: only the jitter makes a continuous test exact.
    uniform = torch.randint(0, 4, (4000, 3), generator=torch.Generator().manual_seed(3))
    assert bool((sbc_from_ranks(uniform, 3, seeded(0)).ks_pvalues > 0.01).all())
    lumped = torch.randint(1, 3, (4000, 1), generator=torch.Generator().manual_seed(3))
    assert float(sbc_from_ranks(lumped, 3, seeded(0)).ks_pvalues[0]) < 1e-6


# Simulation-based calibration


def test_sbc_passes_for_the_exact_posterior() -> None:
    problem = gaussian_problem(500, 100, 2, "exact")
    result = sbc(problem.samples, problem.theta, seeded(0))
    assert result.ranks.shape == (500, 2)
    assert result.samples_per_pair == 100
    assert bool((result.ks_pvalues > 1e-3).all()), result.ks_pvalues


@pytest.mark.parametrize("posterior", ["overdispersed", "underdispersed", "biased"])
def test_sbc_fails_for_a_wrong_posterior(posterior: str) -> None:
    problem = gaussian_problem(500, 100, 2, posterior)
    result = sbc(problem.samples, problem.theta, seeded(0))
    assert float(result.ks_pvalues.min()) < 1e-6, result.ks_pvalues
    middle = result.counts[1:-1].double().mean()
    ends = result.counts[[0, -1]].double().mean()
    if posterior == "overdispersed":
        assert ends < middle  # a hump
    elif posterior == "underdispersed":
        assert ends > middle  # a U
    else:
        assert float(result.ranks.double().mean()) < 0.4 * 100  # draws above the truth


# Expected coverage


def test_expected_coverage_of_the_exact_posterior_follows_the_diagonal() -> None:
    problem = gaussian_problem(500, 100, 2, "exact")
    result = expected_coverage(
        problem.sample_log_probs, problem.truth_log_probs, generator=seeded(0)
    )
    assert result.levels.shape == result.coverage.shape == (101,)
    # The band is pointwise: checked at a few levels, not at all 101 at once.
    result = expected_coverage(
        problem.sample_log_probs, problem.truth_log_probs, DECILES, seeded(0)
    )
    assert bool((result.coverage >= result.band_lower).all())
    assert bool((result.coverage <= result.band_upper).all())
    assert abs(float(result.signed_area)) < 0.02
    assert float(result.ks_pvalue) > 1e-3


@pytest.mark.parametrize(("posterior", "sign"), [("overdispersed", 1), ("underdispersed", -1)])
def test_expected_coverage_sign(posterior: str, sign: int) -> None:
    problem = gaussian_problem(500, 100, 2, posterior)
    result = expected_coverage(
        problem.sample_log_probs, problem.truth_log_probs, generator=seeded(0)
    )
    # In 2-D the credibility is 1 - V^(1/k^2), V uniform, so the area is 1/2 - 1/(1 + k^2).
    k = POSTERIORS[posterior][0]
    assert sign * float(result.signed_area) > 0.1
    assert float(result.signed_area) == pytest.approx(0.5 - 1 / (1 + k**2), abs=0.03)
    middle = int(torch.argmin((result.levels - 0.5).abs()))
    assert sign * float(result.coverage[middle] - 0.5) > 0.1
    assert float(result.ks_pvalue) < 1e-6


def test_expected_coverage_closed_forms() -> None:
    draws = 9
    samples = torch.zeros(40, draws, dtype=torch.float64)
    levels = torch.linspace(0, 1, 21, dtype=torch.float64)
    # The truth always at the mode: inside every region of positive mass.
    top = expected_coverage(samples, torch.ones(40, dtype=torch.float64), levels, seeded(0))
    assert torch.allclose(top.coverage, (levels * (draws + 1)).clamp(max=1))
    assert float(top.signed_area) == pytest.approx(0.5 - 0.5 / (draws + 1))
    assert top.credibility.tolist() == [0.0] * 40
    # The truth outside the support (log-density -inf): outside every region but the whole.
    out = expected_coverage(samples, torch.full((40,), -math.inf, dtype=torch.float64), levels)
    assert torch.allclose(out.coverage, ((levels * (draws + 1)) - draws).clamp(min=0))
    assert float(out.signed_area) == pytest.approx(-0.5 + 0.5 / (draws + 1))
    assert out.credibility.tolist() == [1.0] * 40


@pytest.mark.parametrize("posterior", ["exact", "overdispersed", "underdispersed"])
def test_marginal_coverage(posterior: str) -> None:
    problem = gaussian_problem(500, 100, 3, posterior)
    ranks = sbc_ranks(problem.samples, problem.theta)
    result = marginal_coverage(ranks, 100, DECILES, seeded(0))  # a pointwise band: few levels
    assert result.coverage.shape == (11, 3)
    assert result.signed_area.shape == result.ks_pvalue.shape == (3,)
    inside = (result.coverage >= result.band_lower.unsqueeze(1)) & (
        result.coverage <= result.band_upper.unsqueeze(1)
    )
    if posterior == "exact":
        assert bool(inside.all())
        assert bool((result.signed_area.abs() < 0.03).all())
        assert bool((result.ks_pvalue > 1e-3).all())
    else:
        sign = 1 if posterior == "overdispersed" else -1
        assert bool((sign * result.signed_area > 0.1).all()), result.signed_area
        assert bool((result.ks_pvalue < 1e-6).all())


def test_marginal_coverage_closed_form() -> None:
    # Every truth at the median of 10 draws: |2u - 1| uniform on [0, 1/11].
    draws = 10
    levels = torch.linspace(0, 1, 23, dtype=torch.float64)
    result = marginal_coverage(torch.full((30, 2), 5), draws, levels)
    assert torch.allclose(
        result.coverage, (levels * (draws + 1)).clamp(max=1).unsqueeze(1).expand(-1, 2)
    )
    assert torch.allclose(result.signed_area, torch.full((2,), 0.5 - 0.5 / (draws + 1)).double())
    assert result.credibility.tolist() == [[0.0, 0.0]] * 30


# TARP


def test_tarp_of_the_exact_posterior() -> None:
    problem = gaussian_problem(2000, 100, 2, "exact")
    result = tarp(problem.samples, problem.theta, seeded(0))
    assert result.levels.shape == result.ecp.shape == (201,)  # sbi's N // 10 bins
    assert float(result.ecp[0]) == 0 and float(result.ecp[-1]) == 1
    assert abs(result.atc) < 0.02
    assert result.ks_pvalue > 0.5


@pytest.mark.parametrize(("posterior", "sign"), [("overdispersed", 1), ("underdispersed", -1)])
def test_tarp_sign_follows_sbi(posterior: str, sign: int) -> None:
    # sbi's check_tarp: ATC > 0 overdispersed (too wide), ATC < 0 underdispersed.
    problem = gaussian_problem(2000, 100, 2, posterior)
    result = tarp(problem.samples, problem.theta, seeded(0))
    assert sign * result.atc > 0.03, result.atc
    assert result.ks_pvalue < 0.05


def _sbi_tarp(
    samples: Tensor, theta: Tensor, references: Tensor, normalize: bool
) -> tuple[Tensor, Tensor, float, float]:
    """sbi's ``_run_tarp`` and ``check_tarp`` (sbi/diagnostics/tarp.py) written out
    independently: draws first, a density histogram of f over [min f, max f], its cumsum."""
    draws = samples.transpose(0, 1)  # (L, N, D), as sbi holds them
    if normalize:
        low = theta.min(dim=0, keepdim=True).values
        high = theta.max(dim=0, keepdim=True).values
        draws, theta, references = (
            (t - low) / (high - low + 1e-10) for t in (draws, theta, references)
        )
    sample_distance = torch.sqrt(torch.sum((references - draws) ** 2, dim=-1))
    truth_distance = torch.sqrt(torch.sum((references - theta) ** 2, dim=-1))
    f = torch.sum(sample_distance < truth_distance, dim=0).double() / draws.shape[0]
    hist, alpha = torch.histogram(f, density=True, bins=theta.shape[0] // 10)
    ecp = torch.cat([torch.zeros(1, dtype=hist.dtype), torch.cumsum(hist, 0) / hist.sum()])
    middle = alpha.shape[0] // 2
    atc = float(((ecp[middle:] - alpha[middle:]) * (alpha[1] - alpha[0])).sum())
    return ecp, alpha, atc, float(kstest(ecp.numpy(), alpha.numpy())[1])


@pytest.mark.parametrize("normalize", [True, False])
def test_tarp_matches_sbi(normalize: bool) -> None:
    # 97 draws: f = k / 97 never falls on an edge j / 50 of sbi's histogram.
    problem = gaussian_problem(500, 97, 3, "exact")
    references = torch.rand(500, 3, generator=seeded(0), dtype=torch.float64) * 4 - 2
    ecp, alpha, atc, pvalue = _sbi_tarp(problem.samples, problem.theta, references, normalize)
    result = tarp(
        problem.samples, problem.theta, references=references, normalize=normalize, levels=alpha
    )
    assert float(result.credibility.min()) == 0 and float(result.credibility.max()) == 1
    assert torch.allclose(alpha, torch.linspace(0, 1, 51, dtype=torch.float64))
    assert torch.allclose(result.ecp, ecp)
    assert result.atc == pytest.approx(atc, abs=1e-12)
    assert result.ks_pvalue == pytest.approx(pvalue)


def test_tarp_normalisation_removes_the_units() -> None:
    problem = gaussian_problem(300, 50, 2, "underdispersed")
    scale = torch.tensor([30.0, 0.01], dtype=torch.float64)
    plain = tarp(problem.samples, problem.theta, seeded(0))
    scaled = tarp(problem.samples * scale + 1, problem.theta * scale + 1, seeded(0))
    assert torch.allclose(plain.ecp, scaled.ecp)
    raw = tarp(problem.samples * scale, problem.theta * scale, seeded(0), normalize=False)
    assert not torch.allclose(plain.credibility, raw.credibility)


# Errors and dtypes


def _diagnostics(n: int) -> dict[str, object]:
    problem = gaussian_problem(n, 10, 2, "exact")
    ranks = sbc_ranks(problem.samples, problem.theta)
    return {
        "sbc": lambda: sbc(problem.samples, problem.theta),
        "expected coverage": lambda: expected_coverage(
            problem.sample_log_probs, problem.truth_log_probs
        ),
        "marginal coverage": lambda: marginal_coverage(ranks, 10),
        "TARP": lambda: tarp(problem.samples, problem.theta),
    }


@pytest.mark.parametrize("name", ["sbc", "expected coverage", "marginal coverage", "TARP"])
def test_too_few_pairs(name: str) -> None:
    run = _diagnostics(MIN_PAIRS - 1)[name]
    with pytest.raises(ValueError, match=rf"at least {MIN_PAIRS} test pairs, {MIN_PAIRS - 1} were"):
        run()  # type: ignore[operator]
    _diagnostics(MIN_PAIRS)[name]()  # type: ignore[operator]


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(30, 10, 2\) and theta \(30, 3\)"):
        sbc_ranks(torch.zeros(30, 10, 2), torch.zeros(30, 3))
    with pytest.raises(ValueError, match=r"\(30, 10, 2\) and theta \(29, 2\)"):
        sbc(torch.zeros(30, 10, 2), torch.zeros(29, 2))
    with pytest.raises(ValueError, match=r"\(30, 10\) and the truths' \(29,\)"):
        expected_coverage(torch.zeros(30, 10), torch.zeros(29))
    problem = gaussian_problem(30, 10, 2, "exact")
    with pytest.raises(ValueError, match=r"references have shape \(30, 3\)"):
        tarp(problem.samples, problem.theta, references=torch.zeros(30, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"ranks in \[0, 10\]"):
        marginal_coverage(torch.full((30, 2), 11), 10)
    with pytest.raises(ValueError, match="strictly increasing"):
        tarp(problem.samples, problem.theta, levels=torch.tensor([0.0, 0.5, 0.4, 1.0]))


def test_nan_and_degenerate_inputs_are_refused() -> None:
    problem = gaussian_problem(30, 10, 2, "exact")
    samples = problem.samples.clone()
    samples[3, 4, 1] = math.nan
    with pytest.raises(ValueError, match="samples hold NaN"):
        sbc(samples, problem.theta)
    with pytest.raises(ValueError, match="samples hold NaN"):
        tarp(samples, problem.theta)
    truths = problem.truth_log_probs.clone()
    truths[0] = math.nan
    with pytest.raises(ValueError, match="truths' log-densities hold NaN"):
        expected_coverage(problem.sample_log_probs, truths)
    theta = problem.theta.clone()
    theta[:, 1] = 0.5
    with pytest.raises(ValueError, match="dimension 1 has one value in all 30 pairs"):
        tarp(problem.samples, theta)


def test_dtype_and_device_follow_the_inputs() -> None:
    problem = gaussian_problem(50, 10, 2, "exact")
    coverage = expected_coverage(problem.sample_log_probs.float(), problem.truth_log_probs.float())
    assert coverage.levels.dtype == coverage.coverage.dtype == torch.float32
    assert coverage.band_lower.dtype == coverage.signed_area.dtype == torch.float32
    result = tarp(problem.samples.float(), problem.theta.float())
    assert result.levels.dtype == result.ecp.dtype == result.credibility.dtype == torch.float32


# Figures


def test_figures(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from pushforward.cli.plot_diagnostics import plot_coverage, plot_rank_histograms, plot_tarp

    problem = gaussian_problem(500, 100, 3, "overdispersed")
    ranks = sbc_ranks(problem.samples, problem.theta)
    written = [
        plot_rank_histograms(sbc(problem.samples, problem.theta, seeded(0)), tmp_path / "sbc.png"),
        plot_coverage(
            expected_coverage(problem.sample_log_probs, problem.truth_log_probs),
            tmp_path / "coverage.png",
        ),
        plot_coverage(marginal_coverage(ranks, 100), tmp_path / "marginal.png"),
        plot_tarp(tarp(problem.samples, problem.theta, seeded(0)), tmp_path / "tarp.png"),
    ]
    wide = gaussian_problem(40, 20, 18, "exact")  # more dimensions than panels
    written.append(plot_rank_histograms(sbc(wide.samples, wide.theta), tmp_path / "wide.png"))
    for path in written:
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
