"""Energy distance, MMD and sliced Wasserstein against closed forms and naive implementations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from pushforward.metrics import energy_distance, mmd, sliced_wasserstein
from pushforward.metrics.distances import median_heuristic, wasserstein_1d_squared

F64 = torch.float64


def normal(n: int, d: int, seed: int, shift: float | torch.Tensor = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=F64) + shift


def naive_pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All distances by broadcasting, an implementation independent of cdist."""
    return (a[:, None, :] - b[None, :, :]).square().sum(-1).sqrt()


def off_diagonal_mean(matrix: torch.Tensor) -> torch.Tensor:
    n = matrix.shape[0]
    mask = ~torch.eye(n, dtype=torch.bool)
    return matrix[mask].sum() / (n * (n - 1))


# --- energy distance ------------------------------------------------------------------------


def test_energy_distance_matches_the_naive_u_statistic():
    x, y = normal(40, 3, 0), normal(30, 3, 1, shift=0.5)
    expected = (
        2 * naive_pairwise(x, y).mean()
        - off_diagonal_mean(naive_pairwise(x, x))
        - off_diagonal_mean(naive_pairwise(y, y))
    )
    assert energy_distance(x, y) == pytest.approx(float(expected), rel=1e-12)


def test_energy_distance_chunked_equals_unchunked_exactly():
    x, y = normal(101, 4, 2), normal(87, 4, 3, shift=0.3)
    whole = energy_distance(x, y, chunk_size=1000)
    for chunk_size in (1, 7, 50):
        assert energy_distance(x, y, chunk_size=chunk_size) == whole


def test_energy_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    x, y = normal(1000, 2, 4), normal(1000, 2, 5)
    # Over 30 seeds the estimate for equal distributions had std 0.0016.
    assert abs(energy_distance(x, y)) < 0.006
    values = [energy_distance(x, y + shift) for shift in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > 0.01
    assert all(a < b for a, b in itertools.pairwise(values))


def test_energy_distance_of_shifted_gaussians_matches_the_closed_form():
    """N(0, 1) vs N(mu, 1), from E|Z| for Z ~ N(m, s^2):
    s sqrt(2/pi) exp(-m^2 / (2 s^2)) + m (1 - 2 Phi(-m/s))."""
    mu = 1.0

    def mean_abs(m: float, s: float) -> float:
        phi = 0.5 * (1 + math.erf((-m / s) / math.sqrt(2)))
        return s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s**2)) + m * (1 - 2 * phi)

    expected = 2 * mean_abs(-mu, math.sqrt(2)) - 2 * mean_abs(0.0, math.sqrt(2))
    x, y = normal(4000, 1, 6), normal(4000, 1, 7, shift=mu)
    # The estimate's std at n = 4000 is about 0.024 (measured over seeds); 3 of them.
    assert energy_distance(x, y) == pytest.approx(expected, abs=0.075)


def test_energy_distance_flattens_events_and_follows_dtype():
    x, y = normal(20, 6, 8), normal(25, 6, 9, shift=0.2)
    flat = energy_distance(x, y)
    assert energy_distance(x.reshape(20, 2, 3), y.reshape(25, 2, 3)) == flat
    # float32 keeps about 7 digits of the O(1) terms whose difference this is.
    assert energy_distance(x.float(), y.float()) == pytest.approx(flat, abs=1e-5)


def test_distances_reject_mismatched_samples():
    with pytest.raises(ValueError, match="x has 3 values per sample, y has 2"):
        energy_distance(torch.zeros(5, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        mmd(torch.randn(5, 3), torch.randn(5, 3), bandwidth=[1.0, 0.0])


# --- MMD ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bandwidth", [0.7, [0.5, 2.0]], ids=["one", "sum"])
def test_mmd_matches_the_naive_unbiased_estimate(bandwidth):
    x, y = normal(30, 2, 10), normal(45, 2, 11, shift=0.4)
    sigmas = [bandwidth] if isinstance(bandwidth, float) else bandwidth

    def gram(a, b):
        squared = naive_pairwise(a, b).square()
        return sum(torch.exp(-squared / (2 * s**2)) for s in sigmas)

    expected = off_diagonal_mean(gram(x, x)) + off_diagonal_mean(gram(y, y)) - 2 * gram(x, y).mean()
    assert mmd(x, y, bandwidth) == pytest.approx(float(expected), rel=1e-12)
    assert mmd(x, y, bandwidth, chunk_size=4) == pytest.approx(float(expected), rel=1e-12)


def test_mmd_is_symmetric_near_zero_for_one_distribution_and_positive_otherwise():
    x, y = normal(1000, 2, 12), normal(1000, 2, 13)
    # Over 30 seeds the estimate for equal distributions had std 5e-4.
    assert abs(mmd(x, y)) < 0.002
    shifted = y + 1.0
    assert mmd(x, shifted) > 0.05
    assert mmd(x, shifted) == pytest.approx(mmd(shifted, x), rel=1e-12)


def test_mmd_of_shifted_gaussians_matches_the_closed_form():
    """For N(0, I_d) vs N(mu, I_d) and bandwidth s:
    MMD^2 = 2 (s^2 / (s^2 + 2))^{d/2} (1 - exp(-|mu|^2 / (2 (s^2 + 2))))."""
    d, sigma = 2, 1.0
    mu = torch.tensor([1.0, 0.0], dtype=F64)
    expected = 2 * (sigma**2 / (sigma**2 + 2)) ** (d / 2)
    expected *= 1 - math.exp(-float(mu.square().sum()) / (2 * (sigma**2 + 2)))
    x, y = normal(1000, d, 14), normal(1000, d, 15, shift=mu)
    # The estimate's std at n = 1000 is about 0.009 (measured over seeds); 3 of them.
    assert mmd(x, y, sigma) == pytest.approx(expected, abs=0.027)


def test_median_heuristic_is_the_median_pairwise_distance():
    x, y = normal(30, 3, 16), normal(20, 3, 17)
    pooled = torch.cat([x, y]).numpy()
    assert median_heuristic(x, y) == pytest.approx(float(np.median(pdist(pooled))), rel=1e-12)
    assert mmd(x, y) == pytest.approx(mmd(x, y, float(np.median(pdist(pooled)))), rel=1e-12)


# --- sliced Wasserstein ---------------------------------------------------------------------


def test_sliced_wasserstein_of_a_translated_sample_is_the_mean_squared_projected_shift():
    x = normal(200, 3, 18)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    value = sliced_wasserstein(
        x, x + shift, projections=64, generator=torch.Generator().manual_seed(5)
    )
    directions = torch.randn(3, 64, generator=torch.Generator().manual_seed(5), dtype=F64)
    directions = directions / directions.norm(dim=0)
    assert value == pytest.approx(float((shift @ directions).square().mean()), rel=1e-10)
    # ... whose expectation over directions is |shift|^2 / d.
    assert value == pytest.approx(float(shift.square().sum()) / 3, rel=0.3)


def test_sliced_wasserstein_of_shifted_1d_gaussians_is_the_squared_shift():
    x, y = normal(2000, 1, 19), normal(2000, 1, 20, shift=1.5)
    # In 1-D every direction is +-1, so this is W_2^2 = 1.5^2 up to sampling error
    # (std about 0.095 at n = 2000, measured over seeds).
    assert sliced_wasserstein(x, y, projections=4) == pytest.approx(2.25, abs=0.3)


def test_unequal_sizes_match_a_dense_quantile_integral():
    generator = torch.Generator().manual_seed(21)
    a = torch.randn(7, 2, generator=generator, dtype=F64)
    b = torch.randn(4, 2, generator=generator, dtype=F64) + 0.3
    # Midpoint rule on a fine grid of levels with the step (inverted-CDF) quantiles.
    levels = (np.arange(280_000) + 0.5) / 280_000
    expected = [
        np.mean(
            (
                np.quantile(a[:, k].numpy(), levels, method="inverted_cdf")
                - np.quantile(b[:, k].numpy(), levels, method="inverted_cdf")
            )
            ** 2
        )
        for k in range(2)
    ]
    np.testing.assert_allclose(wasserstein_1d_squared(a, b).numpy(), expected, rtol=1e-9)


def test_unequal_sizes_of_a_repeated_sample_give_the_shift():
    x = normal(50, 2, 22)
    repeated = torch.cat([x, x, x]) + torch.tensor([0.4, 0.0], dtype=F64)
    # A sample repeated three times is the same empirical measure, so only the shift counts.
    expected = sliced_wasserstein(
        x,
        x + torch.tensor([0.4, 0.0], dtype=F64),
        projections=32,
        generator=torch.Generator().manual_seed(3),
    )
    value = sliced_wasserstein(
        x, repeated, projections=32, generator=torch.Generator().manual_seed(3)
    )
    assert value == pytest.approx(expected, rel=1e-10)


def test_sliced_wasserstein_is_reproducible_with_a_generator_and_follows_dtype():
    x, y = normal(100, 4, 23), normal(100, 4, 24, shift=0.5)
    first = sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0))
    again = sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0))
    assert first == again
    as_float = sliced_wasserstein(x.float(), y.float(), generator=torch.Generator().manual_seed(0))
    assert as_float == pytest.approx(
        sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0)), rel=0.2
    )
