"""Every registered model of points on a domain through one contract.

The models whose data are points of a manifold or a bounded domain
(``data_kind(name) == "points"``, never standardised) join by registration, with an
entry in ``tests.contract.SMALL_OPTIONS`` and one in :data:`DOMAINS` below (how to draw
valid points, a quadrature of the domain, and a row off it). With two features the
sweep's domains are the circle (as unit vectors), the torus T^2 or the square; a model
of one size only names its features in ``SMALL_OPTIONS`` (``sphere-nsf``: S^2, three).
Checked for every
model: shapes and dtypes, samples on the domain, float64 end to end, save/load
identity, ``sample_and_log_prob`` against ``log_prob``, the density integrating to one
by quadrature, and errors on bad inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.model import Model
from pushforward.registry import data_kind
from tests.contract import SMALL_OPTIONS, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = [name for name in pushforward.available() if data_kind(name) == "points"]
FEATURES = 2
CONTEXT = 2


@dataclass(frozen=True)
class Domain:
    """What the sweep needs to know of a model's domain."""

    quadrature: Callable[[Model, int], tuple[Tensor, Tensor]]
    """``(model, side) -> (points, weights)``: the midpoint rule over the domain with
    ``side`` cells along each axis."""
    off: Tensor | None
    """A row that is not a point of the domain, or ``None`` where every finite row is one
    (angles of the torus, which are wrapped)."""
    sides: tuple[int, ...] = (64, 128)
    """The grids of the normalisation test: two for Richardson's extrapolation, or one
    fine grid where the density peaks too sharply for the coarse one to be in the
    rule's asymptotic regime (a randomised sphere flow)."""


def circle_quadrature(model: Model, n: int) -> tuple[Tensor, Tensor]:
    angles = (torch.arange(n, dtype=torch.float64) + 0.5) * (2 * math.pi / n)
    points = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    return points, torch.full((n,), 2 * math.pi / n, dtype=torch.float64)


def box_quadrature(model: Model, side: int) -> tuple[Tensor, Tensor]:
    low, high = model.low.double(), model.high.double()  # type: ignore[attr-defined]
    unit = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    a = low[0] + (high[0] - low[0]) * unit
    b = low[1] + (high[1] - low[1]) * unit
    points = torch.cartesian_prod(a, b)
    area = float((high - low).prod()) / side**2
    return points, torch.full((side * side,), area, dtype=torch.float64)


def torus_quadrature(model: Model, side: int) -> tuple[Tensor, Tensor]:
    """The midpoint rule on [-pi, pi)^2 (spectrally accurate for a smooth periodic density)."""
    angles = (torch.arange(side, dtype=torch.float64) + 0.5) * (2 * math.pi / side) - math.pi
    grid = torch.cartesian_prod(angles, angles)
    return grid, torch.full((side * side,), (2 * math.pi / side) ** 2, dtype=torch.float64)


def sphere_quadrature(model: Model, side: int) -> tuple[Tensor, Tensor]:
    """The midpoint rule in the area-preserving coordinates (z, phi) of S^2 (dA = dz dphi)."""
    heights = (torch.arange(side, dtype=torch.float64) + 0.5) * (2 / side) - 1
    angles = (torch.arange(side, dtype=torch.float64) + 0.5) * (2 * math.pi / side) - math.pi
    z, phi = torch.cartesian_prod(heights, angles).unbind(1)
    radius = (1 - z * z).sqrt()
    grid = torch.stack([radius * torch.cos(phi), radius * torch.sin(phi), z], dim=1)
    return grid, torch.full((side * side,), 4 * math.pi / side**2, dtype=torch.float64)


DOMAINS = {
    "rfm": Domain(circle_quadrature, torch.tensor([2.0, 0.0])),
    "reflected-fm": Domain(box_quadrature, torch.tensor([3.0, 0.0])),
    "circular-nsf": Domain(torus_quadrature, None),
    "sphere-nsf": Domain(sphere_quadrature, torch.tensor([0.0, 0.0, 2.0]), (400,)),
}


def features_of(name: str) -> int:
    """The sweep's two features, unless the model's small options name its own."""
    return int(SMALL_OPTIONS[name].get("features", FEATURES))


def make(name: str, context: int = 0, dtype: torch.dtype = torch.float64, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    options = {"features": FEATURES, "context": context, **SMALL_OPTIONS[name]}
    model = pushforward.build(name, **options)
    model.to(dtype)
    randomize_(model, 0.3, torch.Generator().manual_seed(seed + 1))
    return model


def points(model: Model, n: int, seed: int = 1) -> Tensor:
    """Valid points of the model's domain: draws of its source distribution."""
    return model.base.sample(n, generator=torch.Generator().manual_seed(seed))


def contexts(n: int, dtype: torch.dtype = torch.float64, seed: int = 2) -> Tensor:
    return torch.randn(n, CONTEXT, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_every_points_model_has_a_domain_in_the_sweep():
    assert NAMES, "no registered model of points"
    missing = sorted(set(NAMES) - set(DOMAINS))
    assert not missing, f"points models without a DOMAINS entry (add them): {missing}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("context", [0, CONTEXT])
@pytest.mark.parametrize("name", NAMES)
def test_answers_have_the_right_shapes_and_samples_stay_on_the_domain(name, context, dtype):
    model = make(name, context, dtype)
    x = points(model, 16)
    c = contexts(16, dtype) if context else None
    loss = model.loss(x, c)
    assert loss.shape == () and loss.dtype == dtype and bool(torch.isfinite(loss))
    loss.backward()
    samples = model.sample(16, c)
    assert samples.shape == (16, features_of(name)) and samples.dtype == dtype
    torch.testing.assert_close(model.check_points(samples.detach()), samples.detach())
    if model.has_log_prob:
        log_prob = model.log_prob(x, c)
        assert log_prob.shape == (16,) and log_prob.dtype == dtype
        assert bool(torch.isfinite(log_prob).all())


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_identical_answers(name, tmp_path):
    model = make(name, CONTEXT).eval()
    pushforward.save(model, tmp_path)
    loaded = pushforward.load(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    x, c = points(model, 8), contexts(8)
    if model.has_log_prob:
        torch.testing.assert_close(loaded.log_prob(x, c), model.log_prob(x, c), atol=0, rtol=0)
    torch.manual_seed(5)
    first = model.sample(7, c[0])
    torch.manual_seed(5)
    torch.testing.assert_close(loaded.sample(7, c[0]), first, atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_sample_and_log_prob_agrees_with_log_prob(name):
    model = make(name, CONTEXT)
    if not model.has_log_prob:
        pytest.skip(f"{name} has no density")
    c = contexts(1)[0]
    samples, log_prob = model.sample_and_log_prob(32, c)
    torch.testing.assert_close(model.log_prob(samples, c), log_prob, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("context", [0, CONTEXT])
@pytest.mark.parametrize("name", NAMES)
def test_the_density_integrates_to_one_over_the_domain(name, context):
    model = make(name, context, seed=1).eval()
    if not model.has_log_prob:
        pytest.skip(f"{name} has no density")
    c = torch.tensor([0.7, -1.2], dtype=torch.float64) if context else None
    totals = []
    for side in DOMAINS[name].sides:
        grid, weights = DOMAINS[name].quadrature(model, side)
        with torch.no_grad():
            log_density = model.log_prob(grid, c)
            reference = model.base.log_prob(grid)
        totals.append(float((log_density.exp() * weights).sum()))
    # Not the source distribution itself: the test could not fail then.
    assert float((log_density - reference).abs().max()) > 0.05
    # The midpoint rule's error falls as the square of the cell size (and faster for a
    # smooth periodic density): Richardson's extrapolation removes that term.
    total = totals[0] if len(totals) == 1 else (4 * totals[1] - totals[0]) / 3
    assert abs(total - 1.0) < 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_are_errors_in_the_users_words(name):
    model = make(name, CONTEXT, torch.float32)
    x, c = points(model, 4).float(), contexts(4, torch.float32)
    features = features_of(name)
    off = None
    if DOMAINS[name].off is not None:
        off = x.clone()
        off[2] = DOMAINS[name].off
    answers = [model.loss]
    if model.has_log_prob:
        answers.append(model.log_prob)
    for answer in answers:
        if off is not None:
            with pytest.raises(ValueError, match="row 2"):
                answer(off, c)
        wrong = f"data has {features + 1} features, the model was built for {features}"
        with pytest.raises(ValueError, match=wrong):
            answer(torch.randn(4, features + 1), c)
        broken = x.clone()
        broken[1, 0] = math.nan
        with pytest.raises(ValueError, match="NaN"):
            answer(broken, c)
        with pytest.raises(ValueError, match="context has 3 features"):
            answer(x, torch.randn(4, 3))
    if off is not None:
        with pytest.raises(ValueError, match="row 2"):
            model.check_points(off)
