"""``circular-nsf`` on the torus and ``sphere-nsf`` on S^2: exact densities of points.

The points-model sweep (``tests/test_points_model_contract.py``) checks both for shapes,
save/load, normalisation with a context and bad inputs; here: the autoregressive and
one-angle variants, continuity across the torus seam and the sphere's date line, the
poles, the coordinates' round trip, training against the exact built-in densities, and
errors in the user's words.
"""

from __future__ import annotations

import doctest
import math
from types import ModuleType

import pytest
import torch

import pushforward
from pushforward.data.dataset import load_dataset
from pushforward.flows import CylindricalSphereFlow, ManifoldFlow
from pushforward.flows import circular as circular_module
from pushforward.flows import manifold as manifold_module
from pushforward.flows import sphere as sphere_module
from pushforward.geometry import cylinder as cylinder_module
from pushforward.geometry import cylinder_to_sphere, sphere_to_cylinder
from pushforward.transforms import circular as layers_module
from pushforward.transforms.functional import circular_spline, interval_spline
from tests.contract import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"transforms": 4, "hidden": [16], "bins": 5}


def torus_flow(
    features: int = 2, context: int = 0, seed: int = 0, scale: float = 0.3, **options
) -> ManifoldFlow:
    """A small flow with random weights; 0.3 makes log-densities steep (slopes ~500)."""
    torch.manual_seed(seed)
    model = pushforward.build(
        "circular-nsf", features=features, context=context, **{**SMALL, **options}
    )
    randomize_(model.double(), scale, torch.Generator().manual_seed(seed + 1))
    assert isinstance(model, ManifoldFlow)
    return model.eval()


def sphere_flow(context: int = 0, seed: int = 0, **options) -> CylindricalSphereFlow:
    torch.manual_seed(seed)
    model = pushforward.build("sphere-nsf", features=3, context=context, **{**SMALL, **options})
    randomize_(model.double(), 0.3, torch.Generator().manual_seed(seed + 1))
    assert isinstance(model, CylindricalSphereFlow)
    return model.eval()


def midpoints(n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * (torch.arange(n, dtype=torch.float64) + 0.5) / n


# -- densities integrate to one -----------------------------------------------------------


@pytest.mark.parametrize("layers", ["coupling", "autoregressive"])
def test_torus_density_integrates_to_one(layers):
    model = torus_flow(layers=layers)
    angles = midpoints(160, -math.pi, math.pi)
    grid = torch.cartesian_prod(angles, angles)
    with torch.no_grad():
        log_density = model.log_prob(grid)
    assert float(log_density.max() - log_density.min()) > 0.5  # not the uniform
    total = float(log_density.exp().sum()) * (2 * math.pi / 160) ** 2
    assert abs(total - 1.0) < 1e-2


def test_one_angle_integrates_to_one_and_samples_on_the_circle():
    model = torus_flow(features=1, context=2)
    grid = midpoints(4000, -math.pi, math.pi).unsqueeze(1)
    c = torch.tensor([0.3, -0.8], dtype=torch.float64)
    with torch.no_grad():
        total = float(model.log_prob(grid, c).exp().sum()) * 2 * math.pi / 4000
    assert abs(total - 1.0) < 1e-3
    samples = model.sample(500, c)
    assert samples.shape == (500, 1)
    assert bool((samples >= -math.pi).all() and (samples < math.pi).all())


def test_sphere_density_integrates_to_one_on_a_cylinder_grid():
    model = sphere_flow()
    z, phi = torch.cartesian_prod(midpoints(400, -1, 1), midpoints(400, -math.pi, math.pi)).T
    grid = cylinder_to_sphere(torch.stack([z, phi], dim=1))
    with torch.no_grad():
        log_density = model.log_prob(grid)
    assert float(log_density.max() - log_density.min()) > 0.5
    total = float(log_density.exp().sum()) * 4 * math.pi / 400**2
    assert abs(total - 1.0) < 1e-2


# -- seams and poles ------------------------------------------------------------------------


def seam_gaps(model: ManifoldFlow, eps: float, seed: int = 3) -> list[float]:
    """The largest change of log_prob from -pi + eps to pi - eps, one angle at a time."""
    generator = torch.Generator().manual_seed(seed)
    x = (2 * torch.rand(8, 3, generator=generator, dtype=torch.float64) - 1) * math.pi
    c = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    gaps = []
    with torch.no_grad():
        for column in range(3):
            below, above = x.clone(), x.clone()
            below[:, column] = math.pi - eps
            above[:, column] = -math.pi + eps
            gaps.append(float((model.log_prob(below, c) - model.log_prob(above, c)).abs().max()))
    return gaps


@pytest.mark.parametrize("layers", ["coupling", "autoregressive"])
def test_the_torus_density_is_continuous_across_the_seam(layers):
    model = torus_flow(features=3, context=2, scale=0.1, layers=layers)
    assert max(seam_gaps(model, 1e-6)) < 1e-4
    # However steep the density, the gap closes with eps: no jump at the seam.
    steep = torus_flow(features=3, context=2, layers=layers)
    for wide, narrow in zip(seam_gaps(steep, 1e-6), seam_gaps(steep, 1e-9), strict=True):
        assert narrow < 2e-3 * wide + 1e-12
    # A turn away is the same point: inputs are wrapped.
    x = torch.tensor([[3.0, -1.0, 0.5]], dtype=torch.float64)
    c = torch.tensor([0.2, 0.4], dtype=torch.float64)
    turned = x + torch.tensor([2 * math.pi, -4 * math.pi, 0.0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(turned, c), model.log_prob(x, c))


def test_the_sphere_density_is_continuous_across_the_date_line():
    model = sphere_flow(context=2)
    eps = 1e-6
    z = torch.linspace(-0.95, 0.95, 9, dtype=torch.float64)
    west = cylinder_to_sphere(torch.stack([z, torch.full_like(z, math.pi - eps)], dim=1))
    east = cylinder_to_sphere(torch.stack([z, torch.full_like(z, -math.pi + eps)], dim=1))
    c = torch.tensor([0.5, 1.0], dtype=torch.float64)
    with torch.no_grad():
        difference = model.log_prob(west, c) - model.log_prob(east, c)
    assert float(difference.abs().max()) < 1e-4


def test_the_poles_give_finite_values_and_gradients():
    model = sphere_flow()
    poles = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    x = poles.clone().requires_grad_(True)
    log_prob = model.log_prob(x)
    assert bool(torch.isfinite(log_prob).all())
    log_prob.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    # Near a pole the density is finite too, and samples are unit vectors.
    near = cylinder_to_sphere(torch.tensor([[1 - 1e-12, 0.3], [-1 + 1e-12, -2.0]]).double())
    with torch.no_grad():
        assert bool(torch.isfinite(model.log_prob(near)).all())
    samples = model.sample(2000)
    torch.testing.assert_close(samples.norm(dim=1), torch.ones(2000, dtype=torch.float64))


def test_cylindrical_coordinates_round_trip_and_preserve_area():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1000, 3, generator=generator, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    cylinder = sphere_to_cylinder(x)
    assert bool((cylinder[:, 1] >= -math.pi).all() and (cylinder[:, 1] < math.pi).all())
    torch.testing.assert_close(cylinder_to_sphere(cylinder), x)
    # A uniform sphere is a uniform cylinder: the heights are uniform on [-1, 1].
    heights = sphere_to_cylinder(pushforward.build("sphere-nsf", features=3).base.sample(20000))
    assert abs(float(heights[:, 0].mean())) < 0.02
    assert abs(float(heights[:, 0].square().mean()) - 1 / 3) < 0.02


def test_the_untrained_flows_are_the_uniform_distributions():
    torus = pushforward.build("circular-nsf", features=2, hidden=[8])
    sphere = pushforward.build("sphere-nsf", features=3, hidden=[8])
    with torch.no_grad():
        torch.testing.assert_close(
            torus.log_prob(torus.sample(5)), torch.full((5,), -2 * math.log(2 * math.pi))
        )
        torch.testing.assert_close(
            sphere.log_prob(sphere.sample(5)), torch.full((5,), -math.log(4 * math.pi))
        )


# -- training --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "model", "uniform"),
    [
        ("builtin:von-mises-torus", "circular-nsf", 2 * math.log(2 * math.pi)),
        ("builtin:vmf-mixture", "sphere-nsf", math.log(4 * math.pi)),
    ],
    ids=["torus", "sphere"],
)
def test_a_short_run_learns_the_built_in_density(tmp_path, data, model, uniform):
    result = pushforward.train_run(
        tmp_path / "run",
        data,
        model,
        train={"steps": 300, "batch_size": 256, "n": 4000, "seed": 0},
        options={"transforms": 4, "hidden": [32, 32]},
        quiet=True,
    )
    assert result is not None
    trained = pushforward.load(tmp_path / "run")
    toy = load_dataset(data, n=1).toy
    assert toy is not None
    x = toy.sample(4000, seed=7).float()
    with torch.no_grad():
        kl = -float(trained.log_prob(x).double().mean()) - toy.entropy
    uniform_kl = uniform - toy.entropy
    assert uniform_kl > 1.0
    assert kl < 0.25 * uniform_kl, (kl, uniform_kl)


# -- errors ------------------------------------------------------------------------------------


def test_bad_points_are_errors_in_the_users_words():
    sphere = pushforward.build("sphere-nsf", features=3, hidden=[8])
    rows = torch.tensor([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0], [0.0, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"data row 2 has norm 0\.707"):
        sphere.log_prob(rows)
    normalised = sphere.check_points(rows, normalize=True)
    torch.testing.assert_close(normalised[2], torch.tensor([0.0, 1.0, 1.0]) / math.sqrt(2))
    with pytest.raises(ValueError, match="data has 2 features, the model was built for 3"):
        sphere.log_prob(torch.zeros(2, 2))
    nan = rows[:2].clone()
    nan[1, 2] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        sphere.loss(nan)
    torus = pushforward.build("circular-nsf", features=2, hidden=[8])
    with pytest.raises(ValueError, match="NaN"):
        torus.log_prob(torch.tensor([[0.0, math.inf]]))
    with pytest.raises(ValueError, match="data has 3 features, the model was built for 2"):
        torus.log_prob(torch.zeros(1, 3))


def test_the_wrong_manifold_is_refused_by_name():
    with pytest.raises(ValueError, match="circular-nsf models points of a torus"):
        pushforward.build("circular-nsf", features=3, manifold="sphere")
    with pytest.raises(ValueError, match="sphere-nsf models points of the sphere S\\^2"):
        pushforward.build("sphere-nsf", features=2)
    with pytest.raises(ValueError, match="did you mean 'torus'"):
        pushforward.build("circular-nsf", features=2, manifold="tours")
    with pytest.raises(ValueError, match="'layers'"):
        pushforward.build("circular-nsf", features=2, layers="residual")


@pytest.mark.parametrize(
    "module",
    [
        circular_module,
        manifold_module,
        sphere_module,
        cylinder_module,
        layers_module,
        circular_spline,
        interval_spline,
    ],
    ids=lambda module: module.__name__.rsplit(".", 1)[-1],
)
def test_the_examples_in_the_docstrings_run(module: ModuleType):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
