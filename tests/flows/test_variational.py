"""The registered planar, radial and Sylvester flows, beyond the model contract sweep.

The sweep (``tests/test_model_contract.py``) and ``tests/flows/test_flows.py`` run
them through shapes, dtypes, save/load and normalisation with small weights; here:
the densities of strongly non-trivial flows integrating to one, the log-density of a
flow's own samples against the change of variables by the autograd Jacobian, the
start at the identity, amortisation by the context, and the builders' options.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import Tensor

import pushforward
import pushforward.nn.amortized
import pushforward.transforms.variational
from pushforward.flows import Flow
from pushforward.transforms.variational import Planar, Radial, Sylvester
from tests.contract import grid_integral_2d, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["planar", "radial", "sylvester"]
LAYERS = {"planar": Planar, "radial": Radial, "sylvester": Sylvester}


def make(name: str, features: int = 2, context: int = 0, scale: float = 0.5, **options) -> Flow:
    """A float64 flow with random weights (``scale`` of noise on every parameter), in eval mode."""
    torch.manual_seed(0)
    model = pushforward.build(
        name, features=features, context=context, transforms=3, hidden=[8], **options
    )
    model.double()
    randomize_(model, scale, torch.Generator().manual_seed(1))
    return model.eval()


def standard_normal_log_prob(x: Tensor) -> Tensor:
    return -0.5 * x.square().sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_layers(name):
    model = pushforward.build(name, features=3)
    options = model.config["options"]
    assert options["transforms"] == {"planar": 8, "radial": 8, "sylvester": 4}[name]
    assert options["context"] == 0 and options["base"] == "normal"
    assert len(model.transform) == options["transforms"]
    assert all(type(layer) is LAYERS[name] for layer in model.transform.transforms)
    assert model.has_log_prob and model.has_rsample and model.trains_from_data
    assert model.transform.cheap_inverse  # sampling is one pass
    assert model.transform.cheap_forward == (name == "radial")


def test_sylvester_columns():
    model = pushforward.build("sylvester", features=4, transforms=1)
    assert model.transform[0].columns == 4
    assert pushforward.build("sylvester", features=4, columns=2).transform[0].columns == 2
    with pytest.raises(ValueError, match="'columns' must be at most features=4, got 5"):
        pushforward.build("sylvester", features=4, columns=5)
    with pytest.raises(ValueError, match="'columns' must be an integer >= 1"):
        pushforward.build("sylvester", features=4, columns=0)


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_flow_is_its_base(name, context):
    # The layers start at the identity, and the hypernetworks at the same layer for every context.
    model = pushforward.build(name, features=3, context=context).double()
    x = 2 * torch.randn(10, 3, dtype=torch.float64)
    c = torch.randn(10, context, dtype=torch.float64) if context else None
    torch.testing.assert_close(
        model.log_prob(x, c), standard_normal_log_prob(x), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("name", NAMES)
def test_the_density_of_a_strongly_warped_flow_integrates_to_one(name, context):
    model = make(name, context=context)
    c = torch.tensor([0.5, -1.0], dtype=torch.float64) if context else None

    def log_density(points: Tensor) -> Tensor:
        with torch.no_grad():
            return model.log_prob(points, c)

    x = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert (log_density(x) - standard_normal_log_prob(x)).abs().mean() > 0.2
    assert abs(grid_integral_2d(log_density, -12.0, 12.0, 400) - 1.0) < 1e-4


@pytest.mark.parametrize(
    ("name", "features", "context", "options"),
    [
        ("sylvester", 3, 0, {}),
        ("sylvester", 4, 0, {"columns": 2}),
        ("sylvester", 3, 2, {}),
        ("planar", 3, 2, {}),
        ("radial", 3, 0, {}),
    ],
)
def test_the_log_density_of_own_samples_is_the_change_of_variables(
    name, features, context, options
):
    model = make(name, features, context, **options)
    c = torch.randn(context, dtype=torch.float64) if context else None
    torch.manual_seed(7)
    x, log_q = model.rsample_and_log_prob(12, c)
    torch.manual_seed(7)
    z = model.base.rsample(12)  # the base draws behind x
    one_row = c.unsqueeze(0) if c is not None else None

    def generate(point: Tensor) -> Tensor:
        return model.transform.inverse(point.unsqueeze(0), one_row)[0].squeeze(0)

    for point, sample, log_density in zip(z, x, log_q, strict=True):
        torch.testing.assert_close(generate(point), sample, atol=1e-12, rtol=0)
        jacobian = torch.autograd.functional.jacobian(generate, point)
        expected = model.base.log_prob(point.unsqueeze(0))[0] - torch.linalg.slogdet(jacobian)[1]
        torch.testing.assert_close(log_density, expected, atol=1e-10, rtol=0)
    # And the exact inverse gives the same density at the samples.
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x, c), log_q.detach(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_the_context_amortises_the_layers(name):
    model = make(name, features=2, context=2)
    z = torch.randn(6, 2, dtype=torch.float64)
    c = torch.randn(6, 2, dtype=torch.float64)
    with torch.no_grad():
        x, _ = model.transform.inverse(z, c)
        # Row i under context i is row i of the batch under all contexts at once.
        for i in range(6):
            alone, _ = model.transform.inverse(z[i : i + 1], c[i])
            torch.testing.assert_close(alone[0], x[i], atol=1e-14, rtol=0)
        other, _ = model.transform.inverse(z, c.flip(0))
    assert (other - x).abs().max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_round_trip(name, tmp_path):
    model = make(name, features=3, context=2)
    pushforward.save(model, tmp_path)
    loaded = pushforward.load(tmp_path)
    assert type(loaded) is Flow and loaded.config == model.config
    x, c = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    torch.testing.assert_close(loaded.log_prob(x, c), model.log_prob(x, c), atol=0, rtol=0)
    torch.manual_seed(3)
    first = model.sample(5, c[0])
    torch.manual_seed(3)
    torch.testing.assert_close(loaded.sample(5, c[0]), first, atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reverse_kl_moves_the_flow_towards_a_target(name):
    # The use these flows were made for: fitting an unnormalised density by its own samples.
    torch.manual_seed(0)
    model = pushforward.build(name, features=2, transforms=4).double()
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64)

    def reverse_kl() -> Tensor:
        x, log_q = model.rsample_and_log_prob(256)
        log_target = -0.5 * ((x - mean) / 0.7).square().sum(1)
        return (log_q - log_target).mean()

    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    with torch.no_grad():
        before = reverse_kl().item()
    for _ in range(150):
        optimizer.zero_grad()
        reverse_kl().backward()
        optimizer.step()
    with torch.no_grad():
        after = sum(reverse_kl().item() for _ in range(4)) / 4
    # The objective is KL(q || p) - log Z with log Z = log(2 pi 0.49) = 1.124: about 0.6
    # at the base, -1.124 at the target itself; -1.0 is within 0.13 nats of it.
    assert before > 0.5 and after < -1.0


@pytest.mark.parametrize(
    "module",
    [
        pushforward.flows.variational,
        pushforward.transforms.variational,
        pushforward.nn.amortized,
    ],
)
def test_the_examples_in_the_docstrings_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
