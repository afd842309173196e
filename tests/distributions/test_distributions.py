"""Base distributions: closed forms, normalisation, sampling, gradients, dtype and save/load."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.distributions import (
    BASES,
    BoxUniform,
    DiagonalNormal,
    Distribution,
    StandardNormal,
    StudentT,
    make_base,
)
from tests.contract import grid_integral_1d, grid_integral_2d, randomize_


def _all_bases(features: int) -> list[Distribution]:
    return [make_base(name, (features,)) for name in BASES]


# -- closed forms ----------------------------------------------------------------


def test_standard_normal_matches_torch() -> None:
    z = torch.randn(7, 3, dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(StandardNormal((3,)).log_prob(z), expected)


def test_diagonal_normal_matches_torch() -> None:
    base = DiagonalNormal((3,)).double()
    randomize_(base, scale=0.5)
    z = torch.randn(7, 3, dtype=torch.float64)
    expected = torch.distributions.Normal(base.loc, base.log_scale.exp()).log_prob(z).sum(1)
    torch.testing.assert_close(base.log_prob(z), expected)


def test_box_uniform_matches_torch_inside_and_is_minus_inf_outside() -> None:
    low, high = [-1.0, 0.0, 2.0], [1.0, 0.5, 5.0]
    base = BoxUniform((3,), low=low, high=high).double()
    reference = torch.distributions.Uniform(
        torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    )
    z = base.sample(100)
    torch.testing.assert_close(base.log_prob(z), reference.log_prob(z).sum(1))
    outside = torch.tensor(
        [[0.0, 0.6, 3.0], [-2.0, 0.1, 3.0], [1e4, -1e4, 1e4]], dtype=torch.float64
    )
    values = base.log_prob(outside)
    assert torch.isneginf(values).all() and not torch.isnan(values).any()
    corner = torch.tensor([low], dtype=torch.float64)  # the closed box includes its corners
    torch.testing.assert_close(base.log_prob(corner), corner.new_full((1,), -math.log(3.0)))


def test_box_uniform_rejects_empty_box() -> None:
    with pytest.raises(ValueError, match="high > low"):
        BoxUniform((2,), low=1.0, high=1.0)


@pytest.mark.parametrize("df", [0.7, 1.0, 3.0, 30.0])
def test_student_t_matches_torch(df: float) -> None:
    base = StudentT((4,), df=df).double()
    torch.testing.assert_close(base.df, torch.full((4,), df, dtype=torch.float64))
    z = 5 * torch.randn(9, 4, dtype=torch.float64)
    expected = (
        torch.distributions.StudentT(torch.tensor(df, dtype=torch.float64)).log_prob(z).sum(1)
    )
    torch.testing.assert_close(base.log_prob(z), expected)


def test_student_t_per_dimension_df_matches_torch() -> None:
    base = StudentT((3,), df=4.0).double()
    randomize_(base, scale=1.0)
    z = 3 * torch.randn(11, 3, dtype=torch.float64)
    expected = torch.distributions.StudentT(base.df).log_prob(z).sum(1)
    torch.testing.assert_close(base.log_prob(z), expected)
    assert (base.df > base.min_df).all()


def test_student_t_rejects_df_below_minimum() -> None:
    with pytest.raises(ValueError, match="df > min_df"):
        StudentT((2,), df=0.3, min_df=0.5)


# -- normalisation ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["normal", "diag-normal", "student-t"])
def test_unbounded_bases_integrate_to_one_1d(name: str) -> None:
    base = make_base(name, (1,)).double()
    randomize_(base, scale=0.3)
    integral = grid_integral_1d(base.log_prob, -60.0, 60.0, 120_000)
    assert abs(integral - 1) < 1e-3


def test_box_uniform_integrates_to_one() -> None:
    base = BoxUniform((2,), low=[-1.0, 0.5], high=[2.0, 1.5]).double()
    assert (
        abs(
            grid_integral_1d(
                BoxUniform((1,), low=-3.0, high=1.0).double().log_prob, -4.0, 2.0, 6000
            )
            - 1
        )
        < 1e-3
    )
    assert abs(grid_integral_2d(base.log_prob, -2.0, 3.0, 1000) - 1) < 1e-3


def _sinh_substituted(log_prob):
    """The density of ``u`` with ``z = sinh(u)``: heavy polynomial tails become exponential."""

    def log_density(u: torch.Tensor) -> torch.Tensor:
        return log_prob(torch.sinh(u)) + torch.log(torch.cosh(u)).sum(1)

    return log_density


@pytest.mark.parametrize("df", [0.8, 1.5, 5.0])
def test_heavy_tailed_student_t_integrates_to_one_1d(df: float) -> None:
    # In u = asinh(z) the density decays like exp(-df |u|), so [-60, 60] misses < 1e-10 of it.
    base = StudentT((1,), df=df).double()
    integral = grid_integral_1d(_sinh_substituted(base.log_prob), -60.0, 60.0, 60_000)
    assert abs(integral - 1) < 1e-3


def test_student_t_integrates_to_one_2d() -> None:
    base = StudentT((2,), df=2.0).double()
    with torch.no_grad():  # different tails per dimension
        base.unconstrained_df.copy_(torch.tensor([0.5, 3.0], dtype=torch.float64))
    integral = grid_integral_2d(_sinh_substituted(base.log_prob), -15.0, 15.0, 600)
    assert abs(integral - 1) < 1e-3


@pytest.mark.parametrize("name", ["normal", "diag-normal"])
def test_normal_bases_integrate_to_one_2d(name: str) -> None:
    base = make_base(name, (2,)).double()
    randomize_(base, scale=0.3)
    assert abs(grid_integral_2d(base.log_prob, -9.0, 9.0, 600) - 1) < 1e-3


# -- sampling --------------------------------------------------------------------


def _ks_statistic(samples: torch.Tensor, cdf) -> float:
    """Kolmogorov-Smirnov distance between the empirical CDF of 1-D ``samples`` and ``cdf``."""
    ordered = samples.sort().values
    n = ordered.numel()
    model = cdf(ordered)
    upper = torch.arange(1, n + 1, dtype=ordered.dtype) / n
    lower = torch.arange(0, n, dtype=ordered.dtype) / n
    return torch.maximum(upper - model, model - lower).max().item()


def _numerical_cdf(log_prob, low: float, high: float, points: int):
    """CDF of a 1-D density by the cumulative trapezoid rule on ``[low, high]``."""
    grid = torch.linspace(low, high, points, dtype=torch.float64)
    density = torch.exp(log_prob(grid.unsqueeze(1)))
    steps = 0.5 * (density[1:] + density[:-1]) * (grid[1:] - grid[:-1])
    cumulative = torch.cat([grid.new_zeros(1), steps.cumsum(0)])

    def cdf(values: torch.Tensor) -> torch.Tensor:
        index = torch.searchsorted(grid, values.clamp(low, high)).clamp(1, points - 1)
        weight = (values.clamp(low, high) - grid[index - 1]) / (grid[index] - grid[index - 1])
        return cumulative[index - 1] + weight * (cumulative[index] - cumulative[index - 1])

    return cdf


# Critical value of the KS distance at level 1e-3 is ~1.95 / sqrt(n).
KS_SAMPLES = 40_000
KS_BOUND = 1.95 / math.sqrt(KS_SAMPLES)


@pytest.mark.parametrize("df", [1.2, 4.0])
def test_student_t_samples_follow_the_density(df: float) -> None:
    base = StudentT((2,), df=df).double()
    samples = base.sample(KS_SAMPLES)
    # Mass beyond [-1e4, 1e4] is below 1e-4 for these df; clamping puts it at the ends.
    marginal = StudentT((1,), df=df).double()
    cdf = _numerical_cdf(marginal.log_prob, -1e4, 1e4, 2_000_001)
    for column in samples.T:
        assert _ks_statistic(column, cdf) < KS_BOUND


def test_normal_and_uniform_samples_follow_the_density() -> None:
    normal = StandardNormal((1,)).double().sample(KS_SAMPLES)[:, 0]
    assert _ks_statistic(normal, torch.distributions.Normal(0.0, 1.0).cdf) < KS_BOUND
    box = BoxUniform((1,), low=-2.0, high=3.0).double().sample(KS_SAMPLES)[:, 0]
    assert _ks_statistic(box, lambda v: (v + 2) / 5) < KS_BOUND
    assert box.min() >= -2 and box.max() <= 3


def test_sample_moments() -> None:
    n = 200_000
    t = StudentT((3,), df=8.0).double().sample(n)
    torch.testing.assert_close(t.mean(0), torch.zeros(3, dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(
        t.var(0), torch.full((3,), 8 / 6, dtype=torch.float64), atol=0.05, rtol=0
    )
    diag = DiagonalNormal((2,)).double()
    with torch.no_grad():
        diag.loc.copy_(torch.tensor([1.0, -2.0]))
        diag.log_scale.copy_(torch.tensor([0.0, math.log(3.0)]))
    d = diag.sample(n)
    torch.testing.assert_close(d.mean(0), diag.loc.detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(
        d.std(0), torch.tensor([1.0, 3.0], dtype=torch.float64), atol=0.03, rtol=0
    )


def test_sample_does_not_track_gradients_and_rsample_does() -> None:
    base = StudentT((2,), df=3.0)
    assert not base.sample(5).requires_grad
    assert base.rsample(5).requires_grad


# -- gradients through samples -----------------------------------------------------


@pytest.mark.parametrize("df", [0.6, 3.0, 50.0])
def test_student_t_rsample_gradient_reaches_df(df: float) -> None:
    base = StudentT((4,), df=df).double()
    samples = base.rsample(256)
    assert torch.isfinite(samples).all()
    # |z| grows as df falls; a bounded statistic keeps the gradient finite for any df.
    torch.atan(samples).square().mean().backward()
    grad = base.unconstrained_df.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad != 0).all()


def test_student_t_reparameterised_gradient_is_unbiased() -> None:
    # E[z^2] = df / (df - 2), so d E[z^2] / d df = -2 / (df - 2)^2 = -1/32 at df = 10.
    base = StudentT((1,), df=10.0).double()
    samples = base.rsample(400_000)
    (grad_raw,) = torch.autograd.grad(samples.square().mean(), base.unconstrained_df)
    grad_df = grad_raw / torch.sigmoid(base.unconstrained_df.detach())  # d softplus = sigmoid
    assert abs(grad_df.item() - (-1 / 32)) < 0.0015  # estimator std is ~3e-4


# -- dtype, device, registry, save/load ------------------------------------------------


@pytest.mark.parametrize("name", BASES)
def test_float64_end_to_end(name: str) -> None:
    base = make_base(name, (3,)).double()
    assert base.dtype == torch.float64
    samples = base.rsample(6)
    assert samples.dtype == torch.float64 and samples.shape == (6, 3)
    values = base.log_prob(samples)
    assert values.dtype == torch.float64 and values.shape == (6,)
    assert torch.isfinite(values).all()


@pytest.mark.parametrize("name", BASES)
def test_event_shape_with_several_dimensions(name: str) -> None:
    base = make_base(name, (2, 3, 4))
    samples = base.sample(5)
    assert samples.shape == (5, 2, 3, 4)
    flat = make_base(name, (24,))
    flat.load_state_dict({k: v.reshape(-1) for k, v in base.state_dict().items()})
    torch.testing.assert_close(base.log_prob(samples), flat.log_prob(samples.reshape(5, -1)))


@pytest.mark.parametrize("name", BASES)
def test_state_dict_round_trip(name: str) -> None:
    kwargs = {"low": [-2.0, 0.0, 1.0], "high": [0.0, 3.0, 1.5]} if name == "uniform" else {}
    base = make_base(name, 3, **kwargs).double()
    randomize_(base, scale=0.5)
    fresh = make_base(name, 3).double()
    fresh.load_state_dict(base.state_dict())
    z = base.sample(8)
    torch.testing.assert_close(fresh.log_prob(z), base.log_prob(z), atol=0, rtol=0)
    torch.manual_seed(3)
    first = base.sample(4)
    torch.manual_seed(3)
    torch.testing.assert_close(fresh.sample(4), first, atol=0, rtol=0)


def test_make_base_names_and_errors() -> None:
    assert set(BASES) == {"normal", "diag-normal", "uniform", "student-t"}
    assert type(make_base("normal", 2)) is StandardNormal
    assert type(make_base("diag-normal", 2)) is DiagonalNormal
    assert type(make_base("uniform", 2)) is BoxUniform
    assert type(make_base("student-t", 2, df=3.0)) is StudentT
    with pytest.raises(ValueError, match="valid bases: normal, diag-normal, uniform, student-t"):
        make_base("gaussian", 2)
    with pytest.raises(ValueError, match="did you mean 'student-t'"):
        make_base("studentt", 2)


@given(
    name=st.sampled_from(BASES),
    batch=st.integers(1, 5),
    features=st.integers(1, 6),
    magnitude=st.sampled_from([0.0, 1.0, 1e2, 1e4]),
    double=st.booleans(),
)
def test_log_prob_has_no_nan_for_large_inputs(
    name: str, batch: int, features: int, magnitude: float, double: bool
) -> None:
    dtype = torch.float64 if double else torch.float32
    base = make_base(name, (features,)).to(dtype)
    z = magnitude * (2 * torch.rand(batch, features, dtype=dtype) - 1)
    values = base.log_prob(z)
    assert values.shape == (batch,) and values.dtype == dtype
    assert not torch.isnan(values).any()
    assert not torch.isposinf(values).any()
    if name != "uniform":
        assert torch.isfinite(values).all()
