"""The kernelised coupling layer and the ``kernel-flow`` builder (English et al. 2024)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pushforward
from pushforward.data.toys import get_toy
from pushforward.flows.kernel import kernel_flow
from pushforward.nn.kernel import KernelConditioner
from pushforward.transforms.coupling import Coupling, alternating_mask, random_mask
from pushforward.transforms.maps import AffineMap, ElementwiseMap, RationalQuadraticSplineMap
from tests.contract import (
    assert_invertible,
    assert_logdet_matches_jacobian,
    flow_log_density,
    grid_integral_2d,
    randomize_,
    standard_normal,
)

MAPS: dict[str, Callable[[], ElementwiseMap]] = {
    "affine": AffineMap,
    "spline": partial(RationalQuadraticSplineMap, bins=6, tail_bound=4.0),
}


def kernel_coupling(
    features: int, context: int, map: str, kernel: str = "rbf", seed: int = 0
) -> Coupling:
    generator = torch.Generator().manual_seed(seed)
    mask = random_mask(features, generator) if features > 2 else alternating_mask(features)
    torch.manual_seed(seed)
    layer = Coupling(
        features,
        MAPS[map](),
        mask,
        context=context,
        conditioner=partial(KernelConditioner, inducing=7, kernel=kernel),
    ).double()
    randomize_(layer, 0.4, generator)
    return layer


def flow(map: str, features: int = 2, context: int = 0, seed: int = 0) -> pushforward.Model:
    torch.manual_seed(seed)
    model = kernel_flow(features, context=context, transforms=3, inducing=6, map=map).double()
    randomize_(model, 0.3, torch.Generator().manual_seed(seed))
    return model


@pytest.mark.parametrize("kernel", ["rbf", "matern32", "matern52"])
@pytest.mark.parametrize("map", sorted(MAPS))
@pytest.mark.parametrize(("features", "context"), [(1, 0), (2, 0), (5, 0), (3, 2)])
def test_coupling_is_invertible_and_its_logdet_is_the_jacobians(map, kernel, features, context):
    layer = kernel_coupling(features, context, map, kernel)
    generator = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(16, features, generator=generator, dtype=torch.float64)
    c = torch.randn(16, context, generator=generator, dtype=torch.float64) if context else None
    assert_invertible(layer, x, c, atol=1e-10)
    assert_logdet_matches_jacobian(layer, x[:4], None if c is None else c[:4], atol=1e-8)
    if context:
        assert layer.conditional
        assert not torch.allclose(layer(x, c)[0], layer(x, c.flip(0))[0])


def test_coupling_starts_at_the_identity_and_keeps_the_mlp_default():
    layer = Coupling(3, AffineMap(), [True, False, True], conditioner=KernelConditioner)
    x = torch.randn(5, 3)
    y, logabsdet = layer(x)
    assert torch.equal(y, x) and torch.equal(logabsdet, torch.zeros(5))
    assert isinstance(layer.conditioner, KernelConditioner)
    assert layer.conditioner.in_features == 1 and layer.conditioner.out_features == 4
    # Without a conditioner the MLP and its weight names are unchanged.
    plain = Coupling(3, AffineMap(), [True, False, True], hidden=(8,))
    assert sorted(plain.state_dict()) == [
        "conditioner.0.bias",
        "conditioner.0.weight",
        "conditioner.2.bias",
        "conditioner.2.weight",
        "identity_index",
        "mask",
        "transformed_index",
    ]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        Coupling(3, AffineMap(), [True, False, True], conditioner=lambda i, o: None)  # type: ignore[arg-type, return-value]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.1, 20.0),
    map=st.sampled_from(sorted(MAPS)),
)
def test_flow_is_invertible_on_random_inputs(seed, scale, map):
    model = flow(map, features=3, seed=seed % 1000)
    x = scale * torch.randn(
        8, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    assert_invertible(model.transform, x, atol=1e-6 * (1 + scale))


@pytest.mark.parametrize("map", sorted(MAPS))
def test_density_integrates_to_one_on_the_plane(map):
    model = flow(map, features=2, seed=3)
    log_density = flow_log_density(model.transform, standard_normal(2))
    total = grid_integral_2d(log_density, -8.0, 8.0, 320)
    assert abs(total - 1.0) < 0.02
    # And the model's own log_prob agrees with the transform's change of variables.
    x = torch.randn(7, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x), log_density(x))


def test_conditional_density_integrates_to_one_for_a_context():
    model = flow("spline", features=2, context=2, seed=4)
    c = torch.tensor([[0.7, -1.2]], dtype=torch.float64)
    log_density = flow_log_density(model.transform, standard_normal(2), c)
    assert abs(grid_integral_2d(log_density, -8.0, 8.0, 320) - 1.0) < 0.02


@pytest.mark.parametrize("map", sorted(MAPS))
def test_training_lowers_the_loss_on_a_small_data_set(map):
    torch.manual_seed(0)
    data = get_toy("moons").sample(256, seed=0).to(torch.float64)
    data = (data - data.mean(0)) / data.std(0)
    model = kernel_flow(2, transforms=4, inducing=16, map=map).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        start = model.loss(data).item()
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.loss(data)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        end = model.loss(data).item()
    # A standard normal fit of standardised data is about 2.84 nats; moons is far lower.
    assert start == pytest.approx(2.84, abs=0.2)
    assert end < start - 0.4


def test_builder_options_and_errors():
    model = pushforward.build("kernel-flow", features=3, context=1, transforms=2, inducing=4)
    assert model.config["model"] == "kernel-flow"
    assert model.config["options"]["kernel"] == "rbf"
    couplings = [m for m in model.modules() if isinstance(m, Coupling)]
    assert len(couplings) == 2
    assert all(isinstance(c.conditioner, KernelConditioner) for c in couplings)
    assert all(c.conditioner.inducing == 4 for c in couplings)
    # Fewer parameters than the neural spline flow: M (|A| + P) + |A| per coupling layer.
    nsf = pushforward.build("nsf", features=3, context=1)
    default = pushforward.build("kernel-flow", features=3, context=1)
    assert default.config["options"]["map"] == "spline"
    count = sum(p.numel() for p in default.parameters())
    assert count < sum(p.numel() for p in nsf.parameters()) / 3
    affine = pushforward.build("kernel-flow", features=3, context=1, map="affine")
    assert sum(p.numel() for p in affine.parameters()) < count / 5
    with pytest.raises(ValueError, match="'rbf', 'matern32', 'matern52'"):
        pushforward.build("kernel-flow", features=2, kernel="cosine")
    with pytest.raises(ValueError, match="'affine', 'spline'"):
        pushforward.build("kernel-flow", features=2, map="sigmoid")
    with pytest.raises(ValueError, match="inducing"):
        pushforward.build("kernel-flow", features=2, inducing=0)
    with pytest.raises(ValueError, match="unknown option 'hidden'"):
        pushforward.build("kernel-flow", features=2, hidden=[8])


def test_data_initialisation_through_the_model_and_reload():
    torch.manual_seed(0)
    model = pushforward.build(
        "kernel-flow", features=2, transforms=2, inducing=4, inducing_init="data"
    )
    conditioners = [m for m in model.modules() if isinstance(m, KernelConditioner)]
    assert all(c.awaits_data for c in conditioners)
    x = 5 + torch.randn(64, 2)
    model.initialize(x)
    assert not any(c.awaits_data for c in conditioners)
    # The first coupling's points are rows of what it saw.
    first = conditioners[0].inducing_points.detach()
    assert first.min() > 0
    reloaded = pushforward.build(
        "kernel-flow", features=2, transforms=2, inducing=4, inducing_init="data"
    )
    reloaded.load_state_dict(model.state_dict())
    assert not any(m.awaits_data for m in reloaded.modules() if isinstance(m, KernelConditioner))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.log_prob(x), model.log_prob(x))
