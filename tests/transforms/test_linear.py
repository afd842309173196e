"""LULinear: W = P L U, log|det W| from the diagonal of U, inverse by triangular solves.

Invertibility, the Jacobian, dtypes and normalisation are swept for every transform
in ``tests/transforms/test_transform_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.transforms.linear import LULinear
from tests.contract import TRANSFORMS, randomize_

FEATURES = [1, 2, 3, 5, 8]


def _random_layer(features: int) -> LULinear:
    layer = TRANSFORMS["lu-linear"].build(features, 0, torch.float64)
    assert isinstance(layer, LULinear)
    return layer


@pytest.mark.parametrize("features", FEATURES)
def test_logdet_equals_slogdet_of_the_assembled_matrix(features: int) -> None:
    layer = _random_layer(features)
    sign, expected = torch.linalg.slogdet(layer.weight())
    assert sign.abs().item() == pytest.approx(1.0)
    torch.testing.assert_close(layer.logabsdet(), expected)
    x = torch.randn(3, features, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[1], expected.expand(3))


def test_factors_have_the_promised_structure() -> None:
    layer = _random_layer(5)
    lower, upper = layer.factors()
    torch.testing.assert_close(lower, lower.tril())
    torch.testing.assert_close(lower.diagonal(), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(upper, upper.triu())
    assert (upper.diagonal() > 0).all()
    permutation_matrix = torch.eye(5, dtype=torch.float64)[layer.permutation]
    torch.testing.assert_close(layer.weight(), permutation_matrix @ lower @ upper)
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[0], x @ layer.weight().T + layer.bias)


def test_identity_init_is_a_permutation() -> None:
    layer = LULinear(6).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x[:, layer.permutation])
    torch.testing.assert_close(logdet, torch.zeros(4, dtype=torch.float64), atol=1e-7, rtol=0)


def test_every_parameter_gets_a_gradient() -> None:
    layer = _random_layer(4)
    x = torch.randn(5, 4, dtype=torch.float64)
    y, logdet = layer(x)
    (y.square().sum() + logdet.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and (parameter.grad != 0).any(), name
    layer.zero_grad()
    x_back, inverse_logdet = layer.inverse(x)
    (x_back.square().sum() + inverse_logdet.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_wrong_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"built for inputs \(batch, 3\)"):
        LULinear(3)(torch.randn(2, 4))


def test_state_dict_round_trip_keeps_the_permutation() -> None:
    saved = _random_layer(6)
    loaded = LULinear(6, generator=torch.Generator().manual_seed(99)).double()
    assert not torch.equal(loaded.permutation, saved.permutation)
    loaded.load_state_dict(saved.state_dict())
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(loaded(x)[0], saved(x)[0], atol=0, rtol=0)
    torch.testing.assert_close(loaded.inverse(x)[0], saved.inverse(x)[0], atol=0, rtol=0)
    torch.testing.assert_close(loaded(x)[1], saved(x)[1], atol=0, rtol=0)


@given(
    batch=st.integers(1, 6),
    features=st.integers(1, 8),
    magnitude=st.sampled_from([1.0, 1e2, 1e4]),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_finite_and_invertible(
    batch: int, features: int, magnitude: float, double: bool, seed: int
) -> None:
    dtype = torch.float64 if double else torch.float32
    layer = LULinear(features, identity_init=False, generator=torch.Generator().manual_seed(seed))
    layer = layer.to(dtype)
    randomize_(layer, scale=0.3, generator=torch.Generator().manual_seed(seed))
    x = magnitude * torch.randn(batch, features, generator=torch.Generator().manual_seed(seed))
    x = x.to(dtype)
    with torch.no_grad():
        y, logdet = layer(x)
        x_back, inverse_logdet = layer.inverse(y)
    assert y.dtype == dtype and logdet.shape == (batch,)
    for value in (y, logdet, x_back, inverse_logdet):
        assert torch.isfinite(value).all()
    tolerance = (1e-10 if double else 1e-4) * magnitude
    torch.testing.assert_close(x_back, x, atol=tolerance, rtol=0)
    torch.testing.assert_close(logdet + inverse_logdet, torch.zeros_like(logdet), atol=1e-5, rtol=0)
