"""Hill's tail-index estimator and the heavy/light split of the tail-adaptive flows."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.metrics.tails import (
    default_order_statistics,
    estimate_tails,
    gaussian_hill_index,
    hill_estimator,
    hill_tail_index,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DEGREES = (2.0, 3.0, 5.0)


def heavy_and_light(n: int, seed: int) -> torch.Tensor:
    """Independent Student-t marginals (nu = 2, 3, 5) beside a Gaussian one, float64."""
    torch.manual_seed(seed)
    heavy = torch.distributions.StudentT(torch.tensor(DEGREES, dtype=torch.float64)).sample((n,))
    return torch.cat([heavy, torch.randn(n, 1, dtype=torch.float64)], dim=1)


def test_the_hill_estimator_is_its_formula_on_known_order_statistics():
    # |x - median| has largest values e^3, e^2, e^1 above the threshold 1 (k = 3):
    # gamma = (3 + 2 + 1) / 3 - log 1 = 2.
    x = torch.tensor(
        [0.0, 0.0, 0.0, 1.0, -1.0, math.e, -(math.e**2), math.e**3], dtype=torch.float64
    )
    assert hill_estimator(x, k=3).item() == pytest.approx(2.0)
    assert hill_tail_index(x, k=3).item() == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_tail_indices_of_student_t_marginals_are_found_within_20_percent(seed):
    x = heavy_and_light(50_000, seed)
    # Per-marginal affine maps (other scales and centres) keep every marginal's tail.
    x = x * torch.tensor([3.0, 0.2, -7.0, 1.5], dtype=x.dtype) + torch.tensor([1.0, -4.0, 0.5, 9.0])
    estimate = estimate_tails(x)
    assert estimate.order_statistics == default_order_statistics(50_000) == 224
    truth = torch.tensor(DEGREES, dtype=x.dtype)
    relative = (estimate.tail_index[:3] - truth).abs() / truth
    assert (relative < 0.2).all(), estimate.tail_index
    assert estimate.heavy.tolist() == [True, True, True, False]
    torch.testing.assert_close(estimate.df[:3], estimate.tail_index[:3])
    assert math.isinf(estimate.df[3].item())


def test_the_gaussian_reference_is_what_gaussian_samples_give():
    n = 20_000
    torch.manual_seed(3)
    indices = hill_tail_index(torch.randn(n, 40, dtype=torch.float64))
    reference = gaussian_hill_index(n)
    # The mean of 40 marginals, each with a spread of about reference / sqrt(k).
    k = default_order_statistics(n)
    assert abs(indices.mean().item() - reference) < 3 * reference / math.sqrt(k * 40)
    # It grows with n (a Gaussian has no finite tail index), so no fixed threshold fits.
    assert gaussian_hill_index(512) < 7 < reference


def test_light_tails_are_light_and_a_heavy_one_is_heavy_at_every_size():
    for n, seed in [(2_000, 0), (20_000, 1)]:
        torch.manual_seed(seed)
        x = torch.stack(
            [
                torch.randn(n, dtype=torch.float64),
                torch.rand(n, dtype=torch.float64),
                torch.distributions.StudentT(torch.tensor(2.0, dtype=torch.float64)).sample((n,)),
            ],
            dim=1,
        )
        assert estimate_tails(x).heavy.tolist() == [False, False, True]


def test_a_constant_marginal_is_light_and_a_heavy_one_keeps_at_least_min_df():
    n = 1_000
    torch.manual_seed(0)
    cauchy = torch.distributions.Cauchy(0.0, 1.0).sample((n,)).double()
    x = torch.stack([torch.zeros(n, dtype=torch.float64), cauchy], dim=1)
    estimate = estimate_tails(x, min_df=1.5)
    assert estimate.heavy.tolist() == [False, True]
    assert math.isinf(estimate.tail_index[0].item()) and estimate.df[1].item() >= 1.5


def test_bad_inputs_are_errors_that_say_what_is_wrong():
    x = torch.randn(100, 2)
    with pytest.raises(ValueError, match="1 <= k < n"):
        hill_estimator(x, k=100)
    with pytest.raises(ValueError, match=r"\(n, features\)"):
        hill_estimator(torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        default_order_statistics(1)
    with pytest.raises(ValueError, match="confidence"):
        estimate_tails(x, confidence=-1.0)


@given(
    scale=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3),
    shift=st.floats(-100.0, 100.0),
    seed=st.integers(0, 2**16),
)
def test_the_estimate_is_unchanged_by_an_affine_map(scale, shift, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(500, 3, generator=generator, dtype=torch.float64) / torch.rand(
        500, 3, generator=generator, dtype=torch.float64
    )
    before = hill_tail_index(x)
    after = hill_tail_index(scale * x + shift)
    torch.testing.assert_close(after, before, rtol=1e-6, atol=0)
