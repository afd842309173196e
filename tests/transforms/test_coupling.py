"""Coupling transforms (RealNVP, spline coupling) and their masks: their own behaviours.

Invertibility (also through ``Inverse``), the Jacobian, dtypes, context handling and
normalisation are swept for every transform in
``tests/transforms/test_transform_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.transforms.coupling import Coupling, alternating_mask, random_mask
from pushforward.transforms.maps import AffineMap, RationalQuadraticSplineMap
from tests.contract import (
    MAPS,
    assert_invertible,
    assert_logdet_matches_jacobian,
    randomize_,
    real_inputs,
)


def make_transform(
    features: int,
    kind: str,
    context: int,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    scale: float = 0.3,
) -> Coupling:
    generator = torch.Generator().manual_seed(seed + 31 * features + context)
    mask = random_mask(features, generator) if seed % 2 else alternating_mask(features, seed // 2)
    transform = Coupling(features, MAPS[kind](), mask, hidden=(16, 16), context=context).to(dtype)
    randomize_(transform, scale=scale, generator=generator)
    return transform


def inputs(batch: int, features: int, context: int, dtype: torch.dtype, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = real_inputs(batch, features, dtype, generator)
    c = torch.randn(batch, context, generator=generator, dtype=dtype) if context else None
    return x, c


@pytest.mark.parametrize("kind", list(MAPS))
def test_identity_features_pass_through_and_start_at_identity(kind):
    mask = torch.tensor([True, False, False, True, False])
    transform = Coupling(5, MAPS[kind](), mask, context=2).double()
    x, c = inputs(8, 5, 2, torch.float64)
    for direction in (transform.forward, transform.inverse):
        y, logabsdet = direction(x, c)
        torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
        assert logabsdet.abs().max() < 1e-12
    randomize_(transform, generator=torch.Generator().manual_seed(0))
    y, _ = transform(x, c)
    assert torch.equal(y[:, ~mask], x[:, ~mask])
    assert not torch.allclose(y[:, mask], x[:, mask])
    # The transformed features read only the identity ones: changing a transformed
    # input changes nothing else.
    bumped = x.clone()
    bumped[:, 0] += 1.0
    assert torch.equal(transform(bumped, c)[0][:, 1:], y[:, 1:])


def test_single_feature_coupling_is_a_learned_elementwise_map():
    transform = Coupling(1, RationalQuadraticSplineMap(), alternating_mask(1, 1)).double()
    randomize_(transform, generator=torch.Generator().manual_seed(4))
    x = torch.linspace(-6, 6, 25, dtype=torch.float64).unsqueeze(1)
    y, _ = transform(x)
    assert (y.diff(dim=0) > 0).all()  # monotone in its only input
    assert not torch.allclose(y, x)
    assert_invertible(transform, x)
    assert_logdet_matches_jacobian(transform, x[::5])
    # With a context, the single feature's map depends on it.
    conditional = Coupling(1, AffineMap(), [True], context=2).double()
    randomize_(conditional, generator=torch.Generator().manual_seed(5))
    c = torch.randn(25, 2, dtype=torch.float64)
    assert not torch.allclose(conditional(x, c)[0], conditional(x, c.flip(0))[0])


def test_masks():
    assert alternating_mask(5, 0).tolist() == [True, False, True, False, True]
    assert alternating_mask(5, 1).tolist() == [False, True, False, True, False]
    assert alternating_mask(1, 0).tolist() == [True] == alternating_mask(1, 1).tolist()
    for features in range(1, 10):
        mask = random_mask(features, torch.Generator().manual_seed(features))
        assert mask.dtype == torch.bool and mask.shape == (features,)
        assert int(mask.sum()) == (features + 1) // 2
        assert features == 1 or not mask.all()
    a = random_mask(12, torch.Generator().manual_seed(3))
    b = random_mask(12, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_errors_speak_the_users_language():
    with pytest.raises(ValueError, match="transforms no feature"):
        Coupling(3, AffineMap(), [False, False, False])
    with pytest.raises(ValueError, match="mask has shape"):
        Coupling(3, AffineMap(), [True, False])
    transform = Coupling(3, AffineMap(), alternating_mask(3), context=2)
    with pytest.raises(ValueError, match="pass context"):
        transform(torch.randn(4, 3))
    with pytest.raises(ValueError, match="expected input of shape"):
        transform(torch.randn(4, 2), torch.randn(4, 2))


def test_contract_attributes():
    transform = make_transform(4, "affine", 2)
    assert transform.cheap_forward and transform.cheap_inverse and transform.conditional
    assert not make_transform(4, "affine", 0).conditional


def test_state_dict_round_trip_carries_the_mask():
    mask = random_mask(7, torch.Generator().manual_seed(1))
    transform = Coupling(7, MAPS["spline"](), mask, hidden=(16,), context=2).double()
    randomize_(transform, generator=torch.Generator().manual_seed(2))
    # Another mask with as many transformed features: loading must restore the saved one.
    other = random_mask(7, torch.Generator().manual_seed(9))
    assert not torch.equal(other, mask)
    reloaded = Coupling(7, MAPS["spline"](), other, hidden=(16,), context=2).double()
    reloaded.load_state_dict(transform.state_dict())
    x, c = inputs(10, 7, 2, torch.float64)
    for direction in ("forward", "inverse"):
        expected = getattr(transform, direction)(x, c)
        actual = getattr(reloaded, direction)(x, c)
        for a, b in zip(expected, actual, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@given(
    batch=st.integers(1, 16),
    features=st.integers(1, 8),
    context=st.integers(0, 3),
    kind=st.sampled_from(list(MAPS)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    magnitude=st.sampled_from([1.0, 100.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_finite_for_large_inputs(batch, features, context, kind, dtype, magnitude, seed):
    transform = make_transform(features, kind, context, dtype=dtype, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    x = magnitude * (2 * torch.rand(batch, features, generator=generator, dtype=dtype) - 1)
    c = torch.randn(batch, context, generator=generator, dtype=dtype) if context else None
    for direction in (transform.forward, transform.inverse):
        y, logabsdet = direction(x, c)
        assert y.shape == x.shape and y.dtype == dtype
        assert logabsdet.shape == (batch,)
        assert torch.isfinite(y).all() and torch.isfinite(logabsdet).all()
