"""Standardisation as a bijection folded into the model."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pushforward
from pushforward.data import Standardize, fit_standardization
from pushforward.flows import Flow
from pushforward.transforms.base import Compose
from tests.contract import (
    assert_invertible,
    assert_logdet_matches_jacobian,
    grid_integral_2d,
    randomize_,
)


def make(shape: tuple[int, ...], seed: int = 0, dtype=torch.float64) -> Standardize:
    generator = torch.Generator().manual_seed(seed)
    mean = 3 * torch.randn(shape, generator=generator, dtype=dtype)
    std = torch.exp(torch.randn(shape, generator=generator, dtype=dtype))
    return Standardize(mean, std)


@pytest.mark.parametrize(
    ("stats_shape", "event_shape"),
    [((1,), (1,)), ((3,), (3,)), ((8,), (8,)), ((2, 1, 1), (2, 3, 2)), ((2, 3, 2), (2, 3, 2))],
)
def test_contract(stats_shape, event_shape):
    transform = make(stats_shape)
    x = 4 * torch.randn(16, *event_shape, dtype=torch.float64)
    assert_invertible(transform, x)
    assert_logdet_matches_jacobian(transform, x)
    _, logdet = transform(x)
    expected = -torch.log(transform.std).expand(event_shape).sum()
    torch.testing.assert_close(logdet, expected.expand(16))


@given(
    st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4),
    st.lists(st.floats(1e-3, 1e3), min_size=4, max_size=4),
)
def test_invertible_for_any_statistics(mean, std):
    transform = Standardize(np.array(mean), np.array(std))
    x = torch.randn(8, 4, dtype=torch.float64) * torch.tensor(std) + torch.tensor(mean)
    assert_invertible(transform, x, atol=1e-10 * (1 + max(abs(m) for m in mean)))


def test_float32_inputs_with_float64_buffers_stay_float32():
    transform = make((3,))
    x = torch.randn(5, 3)
    y, logdet = transform(x)
    assert y.dtype == torch.float32 and logdet.dtype == torch.float32
    assert_invertible(transform, x, atol=1e-4)


def test_state_dict_round_trip():
    transform = make((2, 1, 1))
    restored = Standardize.identity((2, 1, 1))
    restored.load_state_dict(transform.state_dict())
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    assert torch.equal(restored(x)[0], transform(x)[0])
    assert set(transform.state_dict()) == {"mean", "std"}
    assert not list(transform.parameters())


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_std_is_refused(bad):
    with pytest.raises(ValueError, match="positive and finite"):
        Standardize(torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, bad]))
    with pytest.raises(ValueError, match="shape"):
        Standardize(torch.zeros(2), torch.ones(3))


def test_fit_standardization_matches_numpy():
    data = np.random.default_rng(0).normal([1.0, -5.0, 30.0], [0.5, 2.0, 10.0], size=(500, 3))
    mean, std = fit_standardization(data)
    assert mean.dtype == torch.float64 and mean.shape == (3,)
    np.testing.assert_allclose(mean.numpy(), data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std.numpy(), data.std(axis=0), rtol=1e-12)
    standardized, _ = Standardize(mean, std)(torch.from_numpy(data))
    np.testing.assert_allclose(standardized.mean(0).numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(standardized.std(0, correction=0).numpy(), 1, atol=1e-12)
    mean32, _ = fit_standardization(torch.from_numpy(data).float())
    assert mean32.dtype == torch.float32
    images = torch.rand(10, 1, 4, 4, dtype=torch.float64)
    assert fit_standardization(images)[1].shape == (1, 4, 4)


def test_constant_columns_get_scale_one_with_a_warning():
    data = np.column_stack([np.arange(5.0), np.full(5, 7.0), np.full(5, 0.1 + 1e-17)])
    with pytest.warns(UserWarning, match=r"2 constant features \(flat index 1, 2\)"):
        mean, std = fit_standardization(data)
    np.testing.assert_array_equal(std.numpy()[1:], [1.0, 1.0])
    assert mean[1].item() == 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_standardization(np.random.default_rng(1).normal(size=(4, 2)))


def test_fit_standardization_refuses_bad_data():
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_standardization(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="at least one row"):
        fit_standardization(np.zeros((0, 2)))


def test_flow_composed_with_standardize_is_normalised_in_original_units():
    torch.manual_seed(0)
    inner = pushforward.build("nsf", features=2, transforms=2, hidden=[8])
    inner.to(torch.float64)
    randomize_(inner, scale=0.2)
    mean = torch.tensor([1.0, -1.0], dtype=torch.float64)
    std = torch.tensor([0.5, 0.8], dtype=torch.float64)
    model = Flow(Compose([Standardize(mean, std), inner.transform]), inner.base)
    model.eval()
    # [-6, 6]^2 holds the mean +- 6 standard deviations in the original units.
    with torch.no_grad():
        total = grid_integral_2d(model.log_prob, -6.0, 6.0, 200)
        assert total == pytest.approx(1.0, abs=1e-3)
        x = mean + std * torch.randn(64, 2, dtype=torch.float64)
        expected = inner.log_prob((x - mean) / std) - torch.log(std).sum()
        torch.testing.assert_close(model.log_prob(x), expected)
        torch.manual_seed(1)
        samples = model.sample(4)
        torch.manual_seed(1)
        torch.testing.assert_close(samples, mean + std * inner.sample(4))
