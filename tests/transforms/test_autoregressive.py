"""Masked autoregressive transforms (MAF, autoregressive NSF) and IAF: their own behaviours.

Invertibility (also through ``Inverse``), the Jacobian, dtypes, context handling and
normalisation are swept for every transform in
``tests/transforms/test_transform_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.transforms.autoregressive import MaskedAutoregressive
from pushforward.transforms.base import Inverse
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
    residual: bool = False,
    seed: int = 0,
    scale: float = 0.3,
) -> MaskedAutoregressive:
    generator = torch.Generator().manual_seed(seed + 31 * features + context)
    order = torch.randperm(features, generator=generator)
    transform = MaskedAutoregressive(
        features, MAPS[kind](), hidden=(16, 16), context=context, order=order, residual=residual
    ).to(dtype)
    randomize_(transform, scale=scale, generator=generator)
    return transform


def inputs(batch: int, features: int, context: int, dtype: torch.dtype, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = real_inputs(batch, features, dtype, generator)
    c = torch.randn(batch, context, generator=generator, dtype=dtype) if context else None
    return x, c


@pytest.mark.parametrize("kind", list(MAPS))
def test_starts_at_identity(kind):
    transform = MaskedAutoregressive(4, MAPS[kind](), context=2).double()
    x, c = inputs(8, 4, 2, torch.float64)
    for direction in (transform.forward, transform.inverse):
        y, logabsdet = direction(x, c)
        torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
        assert logabsdet.abs().max() < 1e-12


def test_contract_attributes_and_order_buffer():
    transform = MaskedAutoregressive(3, AffineMap(), order=[2, 0, 1])
    assert transform.cheap_forward and not transform.cheap_inverse
    assert not transform.conditional
    assert MaskedAutoregressive(3, AffineMap(), context=1).conditional
    # Inverse swaps the cheap directions: the IAF samples in one pass.
    iaf = Inverse(MaskedAutoregressive(3, AffineMap(), context=1))
    assert iaf.cheap_inverse and not iaf.cheap_forward and iaf.conditional
    assert transform.order.tolist() == [2, 0, 1]
    assert "made.order" in transform.state_dict()


@pytest.mark.parametrize("context", [0, 2])
def test_inverse_passes_per_distinct_order_value(context):
    """One MADE pass per distinct order value; without a context the first rank reads
    nothing, so its parameters come from the last bias and that pass is skipped."""
    order = torch.tensor([1, 0, 1, 2, 0, 2])  # three groups
    transform = MaskedAutoregressive(
        6, RationalQuadraticSplineMap(), order=order, context=context
    ).double()
    # Milder weights with a context: with it the conditioner outputs grow and the
    # spline's minimum bins would cost the 1e-10 round trip its digits.
    scale = 0.3 if context == 0 else 0.15
    randomize_(transform, scale=scale, generator=torch.Generator().manual_seed(2))
    calls = []
    # The first masked layer runs once per MADE pass.
    transform.made.first.register_forward_hook(lambda *_: calls.append(1))
    x, c = inputs(8, 6, context, torch.float64)
    y, _ = transform(x, c)
    calls.clear()
    transform.inverse(y, c)
    assert len(calls) == (2 if context == 0 else 3)
    # Rows reach 20 in places: 1e-8 absolute is 1e-9 relative there (another CPU's
    # rounding, an AMD EPYC's, gave 6.6e-9 at 13.7).
    assert_invertible(transform, x, c, atol=1e-8)
    assert_logdet_matches_jacobian(transform, x[:3], None if c is None else c[:3])


@pytest.mark.parametrize("residual", [False, True])
def test_state_dict_round_trip(residual):
    transform = make_transform(5, "spline", 2, residual=residual, seed=7)
    # A different order at construction: the saved buffers must win.
    reloaded = MaskedAutoregressive(
        5, MAPS["spline"](), hidden=(16, 16), context=2, residual=residual
    ).double()
    reloaded.load_state_dict(transform.state_dict())
    x, c = inputs(10, 5, 2, torch.float64)
    for a, b in zip(transform(x, c), reloaded(x, c), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    for a, b in zip(transform.inverse(x, c), reloaded.inverse(x, c), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_wrong_shape_is_a_clear_error():
    transform = make_transform(3, "affine", 2)
    c = torch.randn(6, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="expected input of shape"):
        transform(torch.randn(6, 4, dtype=torch.float64), c)


@given(
    batch=st.integers(1, 16),
    features=st.integers(1, 8),
    context=st.integers(0, 3),
    kind=st.sampled_from(list(MAPS)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    magnitude=st.sampled_from([1.0, 100.0, 1e4]),
    residual=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_finite_for_large_inputs(batch, features, context, kind, dtype, magnitude, residual, seed):
    transform = make_transform(features, kind, context, dtype=dtype, residual=residual, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    x = magnitude * (2 * torch.rand(batch, features, generator=generator, dtype=dtype) - 1)
    c = torch.randn(batch, context, generator=generator, dtype=dtype) if context else None
    for direction in (transform.forward, transform.inverse):
        y, logabsdet = direction(x, c)
        assert y.shape == x.shape and y.dtype == dtype
        assert logabsdet.shape == (batch,)
        assert torch.isfinite(y).all() and torch.isfinite(logabsdet).all()
