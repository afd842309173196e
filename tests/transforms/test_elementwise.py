"""Element-wise layers with their own parameters: what the transform sweep does not check.

Invertibility, the Jacobian, dtypes, context and normalisation are swept for every
layer in ``tests/transforms/test_transform_contract.py``.
"""

from __future__ import annotations

import pytest
import torch

from pushforward.transforms.elementwise import ElementwiseAffine, ElementwiseSpline, Logit
from tests.contract import TRANSFORMS, randomize_, real_inputs


def real(batch: int, features: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return real_inputs(batch, features, dtype, torch.Generator().manual_seed(1))


def test_images_use_per_channel_parameters():
    images = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    affine = ElementwiseAffine((3, 1, 1)).double()
    randomize_(affine)
    y, logabsdet = affine(images)
    assert y.shape == images.shape and logabsdet.shape == (2,)
    # Per-channel log-scales, each applied to 4 x 4 pixels.
    log_scales = 5 * torch.tanh(affine.unconstrained_scale.detach() / 5)
    torch.testing.assert_close(logabsdet, 16 * log_scales.sum().expand(2))


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_starts_at_the_identity(kind):
    layer = ElementwiseAffine(4) if kind == "affine" else ElementwiseSpline(4)
    x = real(8, 4, torch.float32)
    y, logabsdet = layer(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(logabsdet, torch.zeros(8), atol=1e-5, rtol=0)


def test_state_dict_round_trip():
    layer = TRANSFORMS["elementwise-spline"].build(3, 0, torch.float64)
    copy = ElementwiseSpline(3, bins=6, tail_bound=3.0).double()
    copy.load_state_dict(layer.state_dict())
    x = real(5, 3)
    torch.testing.assert_close(copy(x), layer(x), atol=0, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ElementwiseSpline(3, bins=0)
    with pytest.raises(ValueError):
        ElementwiseSpline(3, tail_bound=0.0)
    with pytest.raises(ValueError):
        Logit(alpha=0.5)
    with pytest.raises(ValueError):
        ElementwiseAffine(0)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_outputs_follow_the_input_dtype(kind):
    layer = ElementwiseAffine(3) if kind == "affine" else ElementwiseSpline(3)  # float32
    x = real(4, 3)  # float64
    for output in (*layer(x), *layer.inverse(x)):
        assert output.dtype == torch.float64
