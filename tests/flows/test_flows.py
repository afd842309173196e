"""Every registered flow through the transform contract: invertibility, Jacobians, finiteness.

The flows are the registered models of vectors that build a
:class:`~pushforward.flows.Flow`, with the small options of ``tests.contract`` (one entry
per registered model; the flows of manifold points have theirs in
``tests/flows/test_manifold_flows.py``);
shapes, save/load, normalisation, sampling and bad inputs are checked for every
model by ``tests/test_model_contract.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pushforward
from pushforward.flows import Flow
from pushforward.flows.energy import EnergyFlow
from pushforward.registry import data_kind, keywords
from pushforward.transforms.maps import RationalQuadraticSplineMap
from tests.contract import (
    VARIANTS,
    assert_invertible,
    assert_logdet_matches_jacobian,
    randomize_,
    registered_name,
    small_options,
)


def _builds_a_flow(name: str) -> bool:
    return isinstance(pushforward.build(name, features=2, **small_options(name)), Flow)


FLOWS = [
    name
    for name in pushforward.available()
    if data_kind(name) == "vectors" and _builds_a_flow(name)
]
CASES = FLOWS + [case for case in VARIANTS if registered_name(case) in FLOWS]


def make(
    name: str,
    features: int,
    context: int = 0,
    dtype=torch.float64,
    seed: int = 0,
    scale: float = 0.3,
    **extra,
):
    """A small flow with random weights (``scale`` of noise on every parameter), in eval mode."""
    torch.manual_seed(seed)
    model = pushforward.build(
        registered_name(name),
        features=features,
        context=context,
        **{**small_options(name, features), **extra},
    )
    model.to(dtype)
    randomize_(model, scale=scale)
    # Data-dependent layers (ActNorm) start from a batch, as in training.
    x = torch.randn(64, features, dtype=dtype)
    c = torch.randn(64, context, dtype=dtype) if context else None
    model.initialize(x, c)
    model.eval()
    return model


def test_the_registered_flows_are_found():
    assert {"maf", "iaf", "nsf", "nsf-ar", "realnvp"} <= set(FLOWS)
    assert "fm" not in FLOWS


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("features", [1, 2, 5])
def test_invertible_float64(name, context, features):
    # Large random weights push splines to their minimum bin sizes, where |dx/dy| reaches
    # 1e5 and the inverse loses digits whatever the implementation; 0.15 still gives
    # clearly non-identity maps.
    model = make(name, features, context, scale=0.15)
    x = torch.randn(32, features, dtype=torch.float64)
    x[:8] *= 10  # outside the spline bounds
    c = torch.randn(32, context, dtype=torch.float64) if context else None
    assert_invertible(model.transform, x, c, atol=1e-10)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("context", [0, 2])
def test_invertible_float32(name, context):
    model = make(name, 4, context, dtype=torch.float32, scale=0.1)
    x = torch.randn(64, 4)
    x[:8] *= 10
    c = torch.randn(64, context) if context else None
    y, _ = model.transform(x, c)
    back, _ = model.transform.inverse(y, c)
    # 1e-4 absolute at unit scale; the 10x points get 1e-4 relative, since an affine
    # coupling's shift grows with them and float32 rounds the sum at that magnitude.
    error = (back - x).abs() / x.abs().clamp_min(1.0)
    assert error.max().item() < 1e-4


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("features,context", [(2, 0), (3, 2), (8, 0)])
def test_logdet_matches_jacobian(name, features, context):
    model = make(name, features, context)
    x = torch.randn(6, features, dtype=torch.float64) * 1.5
    c = torch.randn(6, context, dtype=torch.float64) if context else None
    assert_logdet_matches_jacobian(model.transform, x, c, atol=1e-6)


def test_directions_are_cheap_where_asked():
    maf = pushforward.build("maf", features=4)
    iaf = pushforward.build("iaf", features=4)
    nsf = pushforward.build("nsf", features=4)
    assert maf.transform.cheap_forward and not maf.transform.cheap_inverse
    assert iaf.transform.cheap_inverse and not iaf.transform.cheap_forward
    assert nsf.transform.cheap_forward and nsf.transform.cheap_inverse


@pytest.mark.parametrize("name", CASES)
def test_loss_is_mean_negative_log_likelihood(name):
    model = make(name, 2)
    if isinstance(model, EnergyFlow) and not model.objective.normalized:
        pytest.skip("an energy-based flow trains by score matching; objective='ml' is the NLL")
    x = torch.randn(20, 2, dtype=torch.float64)
    torch.testing.assert_close(model.loss(x), -model.log_prob(x).mean())


def test_unknown_model_and_option_names():
    with pytest.raises(ValueError, match=r"unknown model 'nfs'.*did you mean [^)]*'nsf'"):
        pushforward.build("nfs", features=2)
    with pytest.raises(ValueError, match=r"unknown option 'bin' .*did you mean 'bins'"):
        pushforward.build("nsf", features=2, bin=4)
    with pytest.raises(ValueError, match="needs option"):
        pushforward.build("nsf")
    with pytest.raises(ValueError, match="'transforms' must be an integer"):
        pushforward.build("maf", features=2, transforms=0)
    with pytest.raises(ValueError, match="base"):
        pushforward.build("nsf", features=2, base="cauchy")


# -- spline options --------------------------------------------------------------------------


def spline_maps(model):
    return [m for m in model.modules() if isinstance(m, RationalQuadraticSplineMap)]


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
@pytest.mark.parametrize("parameterization", ["minimum", "soft-clip"])
def test_spline_parameterization_reaches_every_map(name, parameterization):
    model = pushforward.build(
        name, features=3, transforms=2, hidden=[8], spline_parameterization=parameterization
    )
    maps = spline_maps(model)
    assert len(maps) == 2 and all(m.parameterization == parameterization for m in maps)
    assert model.config["options"]["spline_parameterization"] == parameterization


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
def test_last_layer_init(name):
    x = torch.randn(50, 3, dtype=torch.float64)
    standard = -0.5 * x.square().sum(1) - 1.5 * math.log(2 * math.pi)
    for init in ("zero", "random"):
        torch.manual_seed(0)
        model = pushforward.build(name, features=3, transforms=2, last_layer_init=init).double()
        last_layers = [
            module.last if hasattr(module, "last") else module[-1]
            for module in model.modules()
            if type(module).__name__ in ("MADE", "MLP")
        ]
        assert len(last_layers) == 2
        with torch.no_grad():
            log_prob = model.log_prob(x)
        if init == "zero":
            # Zero conditioner outputs are the identity spline: the flow is its base.
            torch.testing.assert_close(log_prob, standard, atol=1e-12, rtol=0)
            assert all((layer.weight == 0).all() for layer in last_layers)
        else:
            assert (log_prob - standard).abs().mean() > 1e-3
            assert all(layer.weight.abs().min() > 0 for layer in last_layers)


def test_spline_options_errors_list_the_valid_values():
    with pytest.raises(ValueError, match=r"'spline_parameterization' must be one of .*'soft-clip'"):
        pushforward.build("nsf", features=2, spline_parameterization="zuko")
    with pytest.raises(ValueError, match=r"'last_layer_init' must be one of 'zero', 'random'"):
        pushforward.build("nsf-ar", features=2, last_layer_init="kaiming")


# -- properties ------------------------------------------------------------------------------


@given(
    name=st.sampled_from(CASES),
    features=st.integers(1, 6),
    context=st.integers(0, 3),
    batch=st.integers(1, 40),
    magnitude=st.sampled_from([1e-3, 1.0, 10.0, 1e2, 1e4]),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_finite_everywhere(name, features, context, batch, magnitude, double, seed):
    dtype = torch.float64 if double else torch.float32
    torch.manual_seed(seed)
    options = {**small_options(name, features), "transforms": 2}
    if "hidden" in keywords(registered_name(name)):
        options["hidden"] = [8]
    model = pushforward.build(registered_name(name), features=features, context=context, **options)
    model.to(dtype)
    randomize_(model, 0.2)
    model.eval()
    x = torch.randn(batch, features, dtype=dtype) * magnitude
    c = torch.randn(batch, context, dtype=dtype) if context else None
    log_prob = model.log_prob(x, c)
    assert log_prob.shape == (batch,) and log_prob.dtype == dtype
    assert torch.isfinite(log_prob).all()
    samples = model.sample(batch, c)
    assert samples.shape == (batch, features) and torch.isfinite(samples).all()
    model.train()
    loss = model.loss(x, c)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
