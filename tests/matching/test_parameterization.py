"""Parameterisations: exact conversions between velocity, data and noise predictions."""

from __future__ import annotations

import itertools

import pytest
import torch

from pushforward.matching.parameterization import PARAMETERIZATIONS, convert, regression_target
from pushforward.matching.path import AffinePath, PathSample
from pushforward.matching.schedulers import SCHEDULERS, Scheduler, make_scheduler

PAIRS = list(itertools.permutations(PARAMETERIZATIONS, 2))


def _sample(name: str, shape: tuple[int, ...]) -> tuple[Scheduler, PathSample]:
    scheduler = make_scheduler(name)
    x0 = torch.randn(shape, dtype=torch.float64)
    x1 = torch.randn(shape, dtype=torch.float64)
    t = torch.rand(shape[0], dtype=torch.float64) * 0.8 + 0.1
    return scheduler, AffinePath(scheduler).sample(x0, x1, t)


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("pair", PAIRS, ids="->".join)
@pytest.mark.parametrize("shape", [(16, 3), (4, 2, 3, 3)], ids=str)
def test_exact_target_converts_to_exact_target(
    name: str, pair: tuple[str, str], shape: tuple[int, ...]
) -> None:
    source, target = pair
    scheduler, sample = _sample(name, shape)
    coefficients = scheduler(sample.t)
    converted = convert(regression_target(sample, source), source, target, sample.x_t, coefficients)
    torch.testing.assert_close(converted, regression_target(sample, target), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("pair", PAIRS, ids="->".join)
def test_round_trip(name: str, pair: tuple[str, str]) -> None:
    source, target = pair
    scheduler, sample = _sample(name, (16, 3))
    coefficients = scheduler(sample.t)
    # An arbitrary prediction (not the exact target) must come back unchanged too.
    prediction = torch.randn_like(sample.x_t)
    there = convert(prediction, source, target, sample.x_t, coefficients)
    back = convert(there, target, source, sample.x_t, coefficients)
    torch.testing.assert_close(back, prediction, atol=1e-8, rtol=1e-8)


def test_velocity_from_data_written_out_for_the_linear_path() -> None:
    # On the linear path v = (x1_hat - x_t) / (1 - t): an independent closed form.
    scheduler, sample = _sample("cond-ot", (8, 2))
    data = torch.randn_like(sample.x_t)
    velocity = convert(data, "data", "velocity", sample.x_t, scheduler(sample.t))
    expected = (data - sample.x_t) / (1 - sample.t)[:, None]
    torch.testing.assert_close(velocity, expected, atol=1e-12, rtol=1e-12)


def test_broadcast_coefficients_accepted() -> None:
    scheduler, sample = _sample("cosine", (4, 2, 3, 3))
    flat = scheduler(sample.t)
    expanded = flat.broadcast_like(sample.x_t)
    assert expanded.alpha.shape == (4, 1, 1, 1)
    prediction = torch.randn_like(sample.x_t)
    a = convert(prediction, "noise", "velocity", sample.x_t, flat)
    b = convert(prediction, "noise", "velocity", sample.x_t, expanded)
    assert torch.equal(a, b)


def test_same_parameterization_is_identity() -> None:
    scheduler, sample = _sample("vp", (4, 3))
    prediction = torch.randn_like(sample.x_t)
    for name in PARAMETERIZATIONS:
        assert convert(prediction, name, name, sample.x_t, scheduler(sample.t)) is prediction


def test_regression_targets() -> None:
    _, sample = _sample("cond-ot", (4, 3))
    assert regression_target(sample, "velocity") is sample.dx_t
    assert regression_target(sample, "data") is sample.x1
    assert regression_target(sample, "noise") is sample.x0


def test_unknown_names() -> None:
    scheduler, sample = _sample("cond-ot", (4, 3))
    c = scheduler(sample.t)
    with pytest.raises(ValueError, match=r"unknown source parameterization 'eps'.*velocity, data"):
        convert(sample.x_t, "eps", "velocity", sample.x_t, c)
    with pytest.raises(ValueError, match="unknown target parameterization 'score'"):
        convert(sample.x_t, "data", "score", sample.x_t, c)
    with pytest.raises(ValueError, match=r"unknown parameterization 'x0'.*noise"):
        regression_target(sample, "x0")
    with pytest.raises(ValueError, match=r"prediction has shape \(4, 2\)"):
        convert(torch.zeros(4, 2, dtype=torch.float64), "data", "noise", sample.x_t, c)
