"""Time samplers: samples follow their densities; densities are normalised and safe at the ends."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from pushforward.matching.losses import (
    LOSS_WEIGHTINGS,
    NoWeighting,
    UniformTimeWeighting,
    make_loss_weighting,
)
from pushforward.matching.time_sampling import (
    TIME_SAMPLERS,
    LogitNormalTime,
    UniformTime,
    UShapedTime,
    make_time_sampler,
    sample_times,
    time_density,
)

CASES: list[tuple[str, dict[str, Any]]] = [(kind, {}) for kind in TIME_SAMPLERS] + [
    ("logit-normal", {"location": -0.5, "scale": 0.7}),
    ("u-shaped", {"a": 1.5}),
    ("power", {"exponent": 0.5}),
]
IDS = [f"{kind}{params or ''}" for kind, params in CASES]


def _cdf(kind: str, params: dict[str, Any], t: np.ndarray) -> np.ndarray:
    """Closed-form CDFs written independently of the library."""
    if kind == "uniform":
        return t
    if kind == "logit-normal":
        m, s = params.get("location", 0.0), params.get("scale", 1.0)
        with np.errstate(divide="ignore"):
            return stats.norm.cdf((np.log(t) - np.log1p(-t) - m) / s)
    if kind == "u-shaped":
        # Lee et al.'s construction: an even mixture of the truncated exponential
        # q(t) = a e^{at} / (e^a - 1) and its mirror image q(1 - t).
        a = params.get("a", 4.0)
        rising = np.expm1(a * t) / np.expm1(a)
        falling = 1 - np.expm1(a * (1 - t)) / np.expm1(a)
        return 0.5 * (rising + falling)
    if kind == "power":
        return t ** (1.0 + params.get("exponent", 4.0))
    raise AssertionError(f"no CDF written for {kind!r}: add one")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_samples_follow_the_density(case: tuple[str, dict[str, Any]]) -> None:
    kind, params = case
    generator = torch.Generator().manual_seed(0)
    t = sample_times(20000, kind, dtype=torch.float64, device="cpu", generator=generator, **params)
    assert t.shape == (20000,) and t.dtype == torch.float64
    assert (t >= 0).all() and (t <= 1).all()
    samples = t.numpy()
    assert stats.kstest(samples, lambda x: _cdf(kind, params, x)).pvalue > 1e-3
    # Histogram against the bin masses of time_density itself (fine midpoint rule).
    edges = np.linspace(0, 1, 21)
    counts, _ = np.histogram(samples, edges)
    fine = (np.arange(20 * 400) + 0.5) / (20 * 400)
    density = time_density(torch.from_numpy(fine), kind, **params).numpy()
    expected = density.reshape(20, 400).mean(axis=1) / 20 * len(samples)
    assert expected.sum() == pytest.approx(len(samples), rel=1e-4)
    assert stats.chisquare(counts, expected * len(samples) / expected.sum()).pvalue > 1e-3


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_density_integrates_to_one_and_is_the_cdf_derivative(
    case: tuple[str, dict[str, Any]],
) -> None:
    kind, params = case
    grid = np.linspace(0, 1, 20001)
    density = time_density(torch.from_numpy(grid), kind, **params).numpy()
    assert np.isfinite(density).all()
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)
    inner = np.linspace(0.02, 0.98, 25)
    h = 1e-5
    slope = (_cdf(kind, params, inner + h) - _cdf(kind, params, inner - h)) / (2 * h)
    got = time_density(torch.from_numpy(inner), kind, **params).numpy()
    np.testing.assert_allclose(got, slope, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_density_outside_and_at_the_ends(case: tuple[str, dict[str, Any]]) -> None:
    kind, params = case
    t = torch.tensor([-0.5, 0.0, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    density = time_density(t, kind, **params)
    assert density[0].item() == 0.0 and density[3].item() == 0.0
    assert torch.isfinite(density).all()
    if density.requires_grad:
        (gradient,) = torch.autograd.grad(density.sum(), t)
        assert torch.isfinite(gradient).all()
    if kind == "logit-normal":
        assert density[1].item() == density[2].item() == 0.0


def test_u_shaped_density_closed_form() -> None:
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    a = 4.0
    mixture = 0.5 * a * (torch.exp(a * t) + torch.exp(a * (1 - t))) / math.expm1(a)
    torch.testing.assert_close(time_density(t, "u-shaped"), mixture)


@pytest.mark.parametrize("kind", TIME_SAMPLERS)
def test_dtype_device_and_generator(kind: str) -> None:
    a = sample_times(5, kind, dtype=torch.float32, device="cpu")
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    b = sample_times(9, kind, dtype=torch.float64, device="cpu", generator=g1)
    c = sample_times(9, kind, dtype=torch.float64, device="cpu", generator=g2)
    assert torch.equal(b, c)
    assert time_density(a, kind).dtype == torch.float32
    assert sample_times(0, kind, dtype=torch.float32, device="cpu").shape == (0,)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown time sampler 'lognormal'.*logit-normal"):
        sample_times(3, "lognormal", dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="unknown time sampler"):
        time_density(torch.rand(3), "beta")
    with pytest.raises(ValueError, match=r"unknown option 'mean'.*valid options: location, scale"):
        sample_times(3, "logit-normal", dtype=torch.float32, device="cpu", mean=0.0)
    with pytest.raises(ValueError, match="'scale' of 'logit-normal' must be positive"):
        time_density(torch.rand(3), "logit-normal", scale=0.0)
    with pytest.raises(ValueError, match="'a' of 'u-shaped' must be positive"):
        time_density(torch.rand(3), "u-shaped", a=-1.0)
    with pytest.raises(ValueError, match="takes no options"):
        time_density(torch.rand(3), "uniform", a=1.0)
    with pytest.raises(ValueError, match="non-negative integer"):
        sample_times(-1, "uniform", dtype=torch.float32, device="cpu")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sampler_objects_are_the_functions_and_rebuild_by_name(
    case: tuple[str, dict[str, Any]],
) -> None:
    kind, params = case
    sampler = make_time_sampler(kind, **params)
    assert sampler.name == kind and type(sampler) is TIME_SAMPLERS[kind]
    like = torch.zeros(3, dtype=torch.float64)
    drawn = sampler.sample(50, like, torch.Generator().manual_seed(2))
    expected = sample_times(
        50, kind, dtype=torch.float64, device="cpu", generator=torch.Generator().manual_seed(2),
        **params,
    )  # fmt: skip
    assert torch.equal(drawn, expected) and drawn.dtype == torch.float64
    t = torch.linspace(-0.1, 1.1, 13)
    assert torch.equal(sampler.density(t), time_density(t, kind, **params))
    rebuilt = make_time_sampler(sampler.name, **sampler.options())
    assert rebuilt == sampler and hash(rebuilt) == hash(sampler)


def test_sampler_objects_options_and_errors() -> None:
    assert LogitNormalTime(location=-0.5, scale=0.7).options() == {"location": -0.5, "scale": 0.7}
    assert UShapedTime().options() == {"a": 4.0} and UniformTime().options() == {}
    assert LogitNormalTime() != LogitNormalTime(scale=2.0)
    assert repr(UShapedTime(a=1.5)) == "UShapedTime(a=1.5)"
    with pytest.raises(ValueError, match=r"unknown time sampler 'u_shaped'.*'u-shaped'"):
        make_time_sampler("u_shaped")
    with pytest.raises(ValueError, match="'scale' of 'logit-normal' must be positive"):
        LogitNormalTime(scale=-1.0)
    with pytest.raises(ValueError, match="non-negative integer"):
        UniformTime().sample(-2, torch.zeros(1))
    with pytest.raises(TypeError, match="floating-point"):
        UniformTime().density(torch.arange(3))


def test_loss_weightings() -> None:
    per_row = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    sampler = UShapedTime(a=2.0)
    assert not NoWeighting.reweights and UniformTimeWeighting.reweights
    assert NoWeighting()(per_row, t, sampler) is per_row
    # 1 / p(t) with p(t) = a cosh(a (t - 1/2)) / (2 sinh(a / 2)), written out here.
    density = 2.0 * torch.cosh(2.0 * (t - 0.5)) / (2.0 * math.sinh(1.0))
    torch.testing.assert_close(UniformTimeWeighting()(per_row, t, sampler), per_row / density)
    assert list(LOSS_WEIGHTINGS) == ["none", "uniform-time"]
    assert make_loss_weighting("uniform-time") == UniformTimeWeighting()
    with pytest.raises(ValueError, match=r"unknown loss weighting 'uniform'.*'uniform-time'"):
        make_loss_weighting("uniform")
