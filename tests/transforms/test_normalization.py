"""ActNorm and BatchNorm as bijections: initialisation, running statistics, images.

Invertibility, the Jacobian, dtypes and normalisation on vectors are swept for every
transform in ``tests/transforms/test_transform_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pushforward.transforms.normalization import ActNorm, BatchNorm
from tests.contract import (
    TRANSFORMS,
    assert_invertible,
    assert_logdet_matches_jacobian,
    randomize_,
    unstandardized,
)

CASES = {ActNorm: "actnorm", BatchNorm: "batchnorm"}


def _warm_up(layer, x: torch.Tensor) -> None:
    """One training-mode pass on ``x``: ActNorm initialises from it, BatchNorm takes statistics."""
    if isinstance(layer, ActNorm):
        layer.initialize_on_next_forward()
    layer.train()
    layer(x)


def _fitted(cls: type, features: int, dtype: torch.dtype = torch.float64):
    """The catalogue's layer: fitted to data, random parameters, in eval mode."""
    layer = TRANSFORMS[CASES[cls]].build(features, 0, dtype)
    return layer.eval()


# -- both layers -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ActNorm, BatchNorm])
def test_images_use_per_channel_statistics(cls: type) -> None:
    layer = cls(2).double()
    _warm_up(layer, torch.randn(16, 2, 3, 3, dtype=torch.float64) * 3 + 1)
    randomize_(layer, scale=0.3)
    layer.eval()
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    assert_invertible(layer, x, atol=1e-10)
    assert_logdet_matches_jacobian(layer, x, atol=1e-6)


@pytest.mark.parametrize("cls", [ActNorm, BatchNorm])
def test_wrong_feature_count_is_a_clear_error(cls: type) -> None:
    with pytest.raises(ValueError, match="built for 3 features"):
        cls(3)(torch.randn(4, 2))


@pytest.mark.parametrize("cls", [ActNorm, BatchNorm])
def test_state_dict_round_trip(cls: type) -> None:
    saved = _fitted(cls, 4)
    loaded = cls(4).double()
    loaded.load_state_dict(saved.state_dict())
    x = unstandardized(6, 4)
    for mode in ("eval", "train"):
        getattr(saved, mode)()
        getattr(loaded, mode)()
        y_saved, logdet_saved = saved(x)
        y_loaded, logdet_loaded = loaded(x)
        torch.testing.assert_close(y_loaded, y_saved, atol=0, rtol=0)
        torch.testing.assert_close(logdet_loaded, logdet_saved, atol=0, rtol=0)
        torch.testing.assert_close(loaded.inverse(x)[0], saved.inverse(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("cls", [ActNorm, BatchNorm])
@given(
    batch=st.integers(2, 6),
    features=st.integers(1, 8),
    magnitude=st.sampled_from([1.0, 1e2, 1e4]),
    double=st.booleans(),
    training=st.booleans(),
)
def test_property_finite(
    cls: type, batch: int, features: int, magnitude: float, double: bool, training: bool
) -> None:
    dtype = torch.float64 if double else torch.float32
    layer = _fitted(cls, features, dtype)
    layer.train(training)
    x = magnitude * torch.randn(batch, features, dtype=dtype)
    with torch.no_grad():
        y, logdet = layer(x)
        x_back, inverse_logdet = layer.inverse(y)
    assert y.dtype == dtype and logdet.shape == (batch,) and inverse_logdet.shape == (batch,)
    for value in (y, logdet, x_back, inverse_logdet):
        assert torch.isfinite(value).all()
    if not training:
        torch.testing.assert_close(x_back, x, atol=(1e-10 if double else 1e-4) * magnitude, rtol=0)


# -- ActNorm ---------------------------------------------------------------------------


def test_actnorm_initialises_to_zero_mean_unit_variance() -> None:
    layer = ActNorm(5).double()
    assert not layer.initialized and layer.awaits_data
    x = unstandardized(256, 5)
    layer.initialize(x)
    assert layer.initialized and not layer.awaits_data
    y, logdet = layer(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(
        y.var(0, unbiased=False), torch.ones(5, dtype=torch.float64), atol=1e-5, rtol=0
    )
    expected = -0.5 * torch.log(x.var(0, unbiased=False)).sum()
    torch.testing.assert_close(logdet, expected.expand(256), atol=1e-5, rtol=0)


def test_actnorm_initialises_only_once() -> None:
    layer = ActNorm(3).double()
    layer.initialize_on_next_forward()
    layer(unstandardized(100, 3))
    assert layer.initialized
    before = [p.detach().clone() for p in layer.parameters()]
    layer(10 * torch.randn(100, 3, dtype=torch.float64))
    for parameter, old in zip(layer.parameters(), before, strict=True):
        torch.testing.assert_close(parameter.detach(), old, atol=0, rtol=0)


def test_actnorm_image_initialisation_is_per_channel() -> None:
    layer = ActNorm(3).double()
    x = (
        torch.randn(8, 3, 4, 4, dtype=torch.float64)
        * torch.tensor([1.0, 2.0, 5.0]).reshape(3, 1, 1).double()
        + 4
    )
    layer.initialize(x)
    y, logdet = layer(x)
    torch.testing.assert_close(
        y.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0
    )
    torch.testing.assert_close(
        y.var((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(logdet, 16 * layer.log_scale.sum().detach().expand(8))


def test_actnorm_before_initialisation_is_the_identity_and_does_not_initialise() -> None:
    layer = ActNorm(4).double()
    z = torch.randn(6, 4, dtype=torch.float64)
    x, logdet = layer.inverse(z)  # sampling before training
    torch.testing.assert_close(x, z, atol=0, rtol=0)
    torch.testing.assert_close(logdet, torch.zeros(6, dtype=torch.float64))
    # Neither mode initialises as a side effect: the layer stays the identity.
    for mode in ("eval", "train"):
        getattr(layer, mode)()
        data = unstandardized(32, 4)
        y, logdet = layer(data)
        assert not layer.initialized
        torch.testing.assert_close(y, data, atol=0, rtol=0)
        torch.testing.assert_close(logdet, torch.zeros(32, dtype=torch.float64))
    # The explicit step does, in either mode, on the next forward only.
    layer.eval()
    layer.initialize_on_next_forward()
    layer.inverse(z)
    assert not layer.initialized
    y, _ = layer(unstandardized(32, 4))
    assert layer.initialized
    torch.testing.assert_close(y.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)


def test_actnorm_reloaded_model_does_not_reinitialise() -> None:
    saved = ActNorm(3).double()
    saved.initialize(unstandardized(50, 3))
    loaded = ActNorm(3).double()
    loaded.load_state_dict(saved.state_dict())
    assert loaded.initialized
    x = 7 * torch.randn(20, 3, dtype=torch.float64)
    torch.testing.assert_close(loaded(x)[0], saved(x)[0], atol=0, rtol=0)
    # And loading an uninitialised state into an initialised layer makes it await data again.
    saved.load_state_dict(ActNorm(3).double().state_dict())
    assert not saved.initialized and saved.awaits_data
    torch.testing.assert_close(saved(x)[0], x, atol=0, rtol=0)
    saved.initialize_on_next_forward()
    y, _ = saved(x)
    assert saved.initialized
    torch.testing.assert_close(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)


def test_actnorm_batch_of_one_only_centres() -> None:
    layer = ActNorm(3).double()
    x = torch.tensor([[1.0, -2.0, 5.0]], dtype=torch.float64)
    layer.initialize(x)
    y, logdet = layer(x)
    torch.testing.assert_close(y, torch.zeros_like(y))
    torch.testing.assert_close(logdet, torch.zeros(1, dtype=torch.float64))


# -- BatchNorm ---------------------------------------------------------------------------


def test_batchnorm_matches_torch_batchnorm() -> None:
    # With gamma = 1 and beta = 0 the map and the running averages are torch's own.
    ours = BatchNorm(4, momentum=0.2, eps=1e-5).double()
    reference = torch.nn.BatchNorm1d(4, momentum=0.2, eps=1e-5, affine=False).double()
    for _ in range(3):
        x = unstandardized(32, 4)
        y, logdet = ours(x)
        torch.testing.assert_close(y, reference(x))
        expected = -0.5 * torch.log(x.var(0, unbiased=False) + 1e-5).sum()
        torch.testing.assert_close(logdet, expected.expand(32))
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    ours.eval()
    reference.eval()
    x = unstandardized(8, 4)
    torch.testing.assert_close(ours(x)[0], reference(x))


def test_batchnorm_images_match_torch_batchnorm2d() -> None:
    ours = BatchNorm(3).double()
    reference = torch.nn.BatchNorm2d(3, affine=False).double()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(ours(x)[0], reference(x))
    torch.testing.assert_close(ours.running_var, reference.running_var)


def test_batchnorm_eval_mode_uses_running_statistics() -> None:
    layer = BatchNorm(3).double()
    layer(unstandardized(64, 3))
    randomize_(layer)
    layer.eval()
    before = (layer.running_mean.clone(), layer.running_var.clone())
    x = 10 + torch.randn(16, 3, dtype=torch.float64)
    y, logdet = layer(x)
    scale = torch.exp(layer.log_gamma) / torch.sqrt(layer.running_var + layer.eps)
    torch.testing.assert_close(y, (x - layer.running_mean) * scale + layer.beta)
    torch.testing.assert_close(logdet, torch.log(scale).sum().expand(16))
    assert torch.equal(layer.running_mean, before[0]) and torch.equal(layer.running_var, before[1])
    # In training mode the same batch is normalised by its own statistics instead.
    layer.train()
    y_train, _ = layer(x)
    assert not torch.allclose(y_train, y)


def test_batchnorm_inverse_uses_running_statistics_in_training_mode() -> None:
    layer = _fitted(BatchNorm, 3)
    z = torch.randn(5, 3, dtype=torch.float64)
    eval_inverse = layer.inverse(z)
    layer.train()
    train_inverse = layer.inverse(z)
    torch.testing.assert_close(train_inverse[0], eval_inverse[0], atol=0, rtol=0)
    torch.testing.assert_close(train_inverse[1], eval_inverse[1], atol=0, rtol=0)


def test_batchnorm_batch_of_one_in_training_mode_raises() -> None:
    layer = BatchNorm(3)
    with pytest.raises(ValueError, match="at least 2 values per feature"):
        layer(torch.randn(1, 3))
    layer.eval()
    y, logdet = layer(torch.randn(1, 3))
    assert torch.isfinite(y).all() and logdet.shape == (1,)
