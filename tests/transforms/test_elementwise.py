"""Element-wise layers with their own parameters, through the shared transform contract."""

from __future__ import annotations

import pytest
import torch

from pushforward.transforms.base import Inverse
from pushforward.transforms.elementwise import (
    ElementwiseAffine,
    ElementwiseSpline,
    Logit,
    Sigmoid,
)
from tests.contract import (
    LOG_2PI,
    assert_invertible,
    assert_logdet_matches_jacobian,
    grid_integral_1d,
    randomize_,
)

REAL_LAYERS = ["affine", "spline", "sigmoid"]  # forward takes inputs on the real line


def make(kind: str, features: int, dtype=torch.float64, seed: int = 0, scale: float = 1.0):
    layer = {
        "affine": lambda: ElementwiseAffine(features),
        "spline": lambda: ElementwiseSpline(features, bins=6, tail_bound=3.0),
        "sigmoid": lambda: Sigmoid(),
        "sigmoid_alpha": lambda: Sigmoid(alpha=0.05),
        "logit": lambda: Logit(),
        "logit_alpha": lambda: Logit(alpha=0.05),
    }[kind]().to(dtype)
    randomize_(layer, scale=scale, generator=torch.Generator().manual_seed(seed))
    return layer


def real_inputs(batch, features, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(batch, features, generator=generator, dtype=dtype)
    x[batch // 2 :] *= 5  # some outside the spline's bounds
    return x


def unit_inputs(batch, features, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, features, generator=generator, dtype=dtype).clamp(0.02, 0.98)


@pytest.mark.parametrize("features", [1, 3, 8])
@pytest.mark.parametrize("kind", REAL_LAYERS)
def test_invertible_float64(kind, features):
    layer = make(kind, features)
    x = real_inputs(16, features)
    if kind == "sigmoid":
        x = x.clamp(-8, 8)  # keep sigmoid(x) away from 1 so the logit round trip is exact
    assert_invertible(layer, x, atol=1e-10)


@pytest.mark.parametrize("kind", ["logit", "logit_alpha", "sigmoid_alpha"])
def test_invertible_bounded(kind):
    layer = make(kind, 4)
    x = unit_inputs(16, 4) if kind.startswith("logit") else real_inputs(16, 4).clamp(-8, 8)
    assert_invertible(layer, x, atol=1e-10)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_invertible_float32(kind):
    # Moderate parameters: a nearly flat bin (slope ~1e-3) makes y -> x too
    # ill-conditioned for float32 whatever the kernel does.
    layer = make(kind, 5, dtype=torch.float32, scale=0.5)
    assert_invertible(layer, real_inputs(32, 5, dtype=torch.float32), atol=1e-4)


@pytest.mark.parametrize("features", [1, 4, 8])
@pytest.mark.parametrize("kind", ["affine", "spline", "sigmoid", "logit_alpha"])
def test_logdet_matches_jacobian(kind, features):
    layer = make(kind, features)
    x = unit_inputs(6, features) if kind.startswith("logit") else real_inputs(6, features)
    assert_logdet_matches_jacobian(layer, x, atol=1e-6)


def test_context_is_ignored_and_images_work():
    layer = make("spline", 3)
    x = real_inputs(4, 3)
    context = torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x, context), layer(x))
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
    x = real_inputs(8, 4, dtype=torch.float32)
    y, logabsdet = layer(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(logabsdet, torch.zeros(8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["affine", "spline", "sigmoid", "logit"])
def test_density_integrates_to_one(kind):
    # One dimension, log p(x) = log p_base(f(x)) + log|f'(x)|, integrated over the
    # data domain: the real line (a wide grid) or, for the logit, the unit interval.
    layer = make(kind, 1, seed=3)

    def log_density(x):
        z, logabsdet = layer(x)
        if kind == "sigmoid":  # base: uniform on [0, 1], log density 0 there
            return logabsdet
        return -0.5 * (z.squeeze(1).square() + LOG_2PI) + logabsdet

    low, high, points = (0.0, 1.0, 20000) if kind == "logit" else (-60.0, 60.0, 60000)
    assert abs(grid_integral_1d(log_density, low, high, points) - 1.0) < 1e-3


def test_inverse_wrapper_and_state_dict_round_trip():
    layer = make("spline", 3)
    copy = ElementwiseSpline(3, bins=6, tail_bound=3.0).double()
    copy.load_state_dict(layer.state_dict())
    x = real_inputs(5, 3)
    torch.testing.assert_close(copy(x), layer(x), atol=0, rtol=0)
    assert_invertible(Inverse(layer), x, atol=1e-10)


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
    x = real_inputs(4, 3)  # float64
    for output in (*layer(x), *layer.inverse(x)):
        assert output.dtype == torch.float64
