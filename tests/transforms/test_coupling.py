"""Coupling transforms (RealNVP, spline coupling) and their masks through the shared contract."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.distributions.normal import StandardNormal
from pushforward.transforms.base import Compose, Inverse
from pushforward.transforms.coupling import Coupling, alternating_mask, random_mask
from pushforward.transforms.maps import AffineMap, RationalQuadraticSplineMap
from tests.contract import (
    assert_invertible,
    assert_logdet_matches_jacobian,
    flow_log_density,
    grid_integral_2d,
    randomize_,
)

FEATURES = [1, 2, 3, 5, 8]
MAPS = ["affine", "spline", "spline-soft-clip"]
CONTEXTS = [0, 3]


def make_map(kind: str):
    if kind == "affine":
        return AffineMap()
    parameterization = "soft-clip" if kind == "spline-soft-clip" else "minimum"
    return RationalQuadraticSplineMap(bins=6, tail_bound=4.0, parameterization=parameterization)


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
    transform = Coupling(features, make_map(kind), mask, hidden=(16, 16), context=context).to(dtype)
    randomize_(transform, scale=scale, generator=generator)
    return transform


def inputs(batch: int, features: int, context: int, dtype: torch.dtype, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, features, generator=generator, dtype=dtype)
    # Half the rows scaled by 10: far outside the spline's bounds.
    x[batch // 2 :] *= 10
    c = torch.randn(batch, context, generator=generator, dtype=dtype) if context else None
    return x, c


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("kind", MAPS)
@pytest.mark.parametrize("features", FEATURES)
def test_invertible_float64(features, kind, context, seed):
    # Moderate weights (see test_invertible_float32).
    transform = make_transform(features, kind, context, seed=seed, scale=0.15)
    x, c = inputs(16, features, context, torch.float64)
    assert_invertible(transform, x, c, atol=1e-10)
    assert_invertible(Inverse(transform), x, c, atol=1e-10)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("kind", MAPS)
@pytest.mark.parametrize("features", FEATURES)
def test_invertible_float32(features, kind, context):
    # Moderate weights: with larger ones, inputs 10x outside the bounds can drive the
    # spline to its minimum bin sizes, where y -> x is too ill-conditioned for float32.
    transform = make_transform(features, kind, context, dtype=torch.float32, scale=0.1)
    x, c = inputs(16, features, context, torch.float32)
    assert_invertible(transform, x, c, atol=1e-4)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("kind", MAPS)
@pytest.mark.parametrize("features", FEATURES)
def test_logdet_matches_jacobian(features, kind, context):
    transform = make_transform(features, kind, context, seed=features)
    x, c = inputs(4, features, context, torch.float64)
    assert_logdet_matches_jacobian(transform, x, c, atol=1e-6)


@pytest.mark.parametrize("kind", MAPS)
def test_identity_features_pass_through_and_start_at_identity(kind):
    mask = torch.tensor([True, False, False, True, False])
    transform = Coupling(5, make_map(kind), mask, context=2).double()
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


def test_contract_attributes_and_context_handling():
    transform = make_transform(4, "affine", 2)
    assert transform.cheap_forward and transform.cheap_inverse and transform.conditional
    x, c = inputs(6, 4, 2, torch.float64)
    torch.testing.assert_close(transform(x, c[:1])[0], transform(x, c[:1].expand(6, 2))[0])
    plain = make_transform(4, "affine", 0)
    assert not plain.conditional
    torch.testing.assert_close(plain(x, c)[0], plain(x)[0])


def test_state_dict_round_trip_carries_the_mask():
    mask = random_mask(7, torch.Generator().manual_seed(1))
    transform = Coupling(7, make_map("spline"), mask, hidden=(16,), context=2).double()
    randomize_(transform, generator=torch.Generator().manual_seed(2))
    # Another mask with as many transformed features: loading must restore the saved one.
    other = random_mask(7, torch.Generator().manual_seed(9))
    assert not torch.equal(other, mask)
    reloaded = Coupling(7, make_map("spline"), other, hidden=(16,), context=2).double()
    reloaded.load_state_dict(transform.state_dict())
    x, c = inputs(10, 7, 2, torch.float64)
    for direction in ("forward", "inverse"):
        expected = getattr(transform, direction)(x, c)
        actual = getattr(reloaded, direction)(x, c)
        for a, b in zip(expected, actual, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_density_integrates_to_one():
    layers = []
    for parity in (0, 1):
        transform = Coupling(
            2,
            RationalQuadraticSplineMap(bins=5, tail_bound=3.0),
            alternating_mask(2, parity),
            hidden=(16,),
        ).double()
        randomize_(transform, scale=0.3, generator=torch.Generator().manual_seed(parity))
        layers.append(transform)
    flow = Compose(layers)
    total = grid_integral_2d(flow_log_density(flow, StandardNormal((2,)).double()), -7.0, 7.0, 600)
    assert abs(total - 1.0) < 1e-3


@given(
    batch=st.integers(1, 16),
    features=st.integers(1, 8),
    context=st.integers(0, 3),
    kind=st.sampled_from(MAPS),
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
