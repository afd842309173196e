"""Permutation: a reordering of features with zero log-determinant.

Invertibility, the Jacobian, dtypes and normalisation are swept for every transform
in ``tests/transforms/test_transform_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.transforms.permutation import Permutation
from tests.contract import assert_invertible


def test_forward_reorders_features() -> None:
    x = torch.arange(12.0).reshape(3, 4)
    y, logdet = Permutation([2, 0, 3, 1])(x)
    torch.testing.assert_close(y, x[:, [2, 0, 3, 1]])
    torch.testing.assert_close(logdet, torch.zeros(3))
    y, _ = Permutation.reverse(4)(x)
    torch.testing.assert_close(y, x.flip(1))


def test_random_is_seeded_by_the_generator() -> None:
    first = Permutation.random(10, generator=torch.Generator().manual_seed(1))
    second = Permutation.random(10, generator=torch.Generator().manual_seed(1))
    other = Permutation.random(10, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first.permutation, second.permutation)
    assert not torch.equal(first.permutation, other.permutation)


def test_rejects_what_is_not_a_permutation() -> None:
    with pytest.raises(ValueError, match="permutation"):
        Permutation([0, 0, 1])
    with pytest.raises(ValueError, match="permutation"):
        Permutation([1, 2, 3])


def test_wrong_feature_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="built for 3 features"):
        Permutation.reverse(3)(torch.randn(2, 4))


def test_permutes_image_channels() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    transform = Permutation([1, 2, 0])
    y, _ = transform(x)
    torch.testing.assert_close(y, x[:, [1, 2, 0]])
    assert_invertible(transform, x)


def test_state_dict_round_trip_keeps_the_permutation() -> None:
    saved = Permutation.random(7, generator=torch.Generator().manual_seed(3))
    loaded = Permutation.random(7, generator=torch.Generator().manual_seed(4))
    loaded.load_state_dict(saved.state_dict())
    x = torch.randn(5, 7)
    torch.testing.assert_close(loaded(x)[0], saved(x)[0], atol=0, rtol=0)
    torch.testing.assert_close(loaded.inverse(x)[0], saved.inverse(x)[0], atol=0, rtol=0)


@given(
    batch=st.integers(1, 6),
    features=st.integers(1, 9),
    magnitude=st.sampled_from([1.0, 1e2, 1e4]),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_exact_and_finite(
    batch: int, features: int, magnitude: float, double: bool, seed: int
) -> None:
    dtype = torch.float64 if double else torch.float32
    transform = Permutation.random(features, generator=torch.Generator().manual_seed(seed))
    x = magnitude * torch.randn(batch, features, dtype=dtype)
    y, logdet = transform(x)
    assert y.dtype == dtype and logdet.dtype == dtype and logdet.shape == (batch,)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    torch.testing.assert_close(transform.inverse(y)[0], x, atol=0, rtol=0)
