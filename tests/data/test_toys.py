"""Built-in 2-D toys: seeded samplers agree with their exact densities and entropies."""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from pushforward.data import TOYS, get_toy, sample_toy
from pushforward.data.densities import IsotropicGaussianMixture, grid_entropy
from pushforward.data.toys import NoisyCirclesToy, NoisyCurveToy

NAMES = sorted(TOYS)
EXPECTED = {
    *("moons", "circles", "8gaussians", "checkerboard"),
    *("pinwheel", "swissroll", "2spirals", "rings"),
}
BIN_CELLS = 8  # grid cells per histogram bin side
GRID_SPACING = 0.07  # at most; the midpoint rule is exact to ~1e-8 at this spacing for sd >= 0.08


def test_every_usual_toy_is_built_in():
    assert set(NAMES) == EXPECTED


@cache
def density_grid(name: str) -> tuple[torch.Tensor, float, float]:
    """Density at the midpoints of a grid ``(points, points)`` on ``[-w, w]^2``; spacing; ``w``."""
    toy = get_toy(name)
    half_width = toy.density.half_width
    points = BIN_CELLS * math.ceil(2 * half_width / (BIN_CELLS * GRID_SPACING))
    width = 2 * half_width / points
    centres = -half_width + width * (torch.arange(points, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(centres, centres, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    density = torch.exp(toy.log_prob(grid)).reshape(points, points)
    return density, width, half_width


@pytest.mark.parametrize("name", NAMES)
def test_samples_are_seeded_float64(name):
    toy = get_toy(name)
    a, b, c = toy.sample(300, seed=3), toy.sample(300, seed=3), toy.sample(300, seed=4)
    assert a.shape == (300, 2) and a.dtype == torch.float64
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert toy.sample(0).shape == (0, 2)
    assert torch.equal(sample_toy(name, 50, seed=7), toy.sample(50, seed=7))


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one(name):
    density, width, _ = density_grid(name)
    assert density.sum().item() * width**2 == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_histogram_of_samples_matches_density(name):
    """Pearson's chi-square of 20,000 samples binned against the density's bin masses."""
    density, width, half_width = density_grid(name)
    points = density.shape[0]
    bins = points // BIN_CELLS
    mass = density.reshape(bins, BIN_CELLS, bins, BIN_CELLS).sum(dim=(1, 3)) * width**2
    n = 20_000
    x = get_toy(name).sample(n, seed=11)
    index = ((x + half_width) / (width * BIN_CELLS)).floor().long().clamp(0, bins - 1)
    counts = torch.zeros(bins, bins, dtype=torch.float64)
    ones = torch.ones(n, dtype=torch.float64)
    counts.index_put_((index[:, 0], index[:, 1]), ones, accumulate=True)
    expected = n * mass.reshape(-1)
    observed = counts.reshape(-1)
    big = expected >= 5
    # Pool the sparse bins into one, as the chi-square approximation requires.
    expected = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    observed = torch.cat([observed[big], observed[~big].sum().reshape(1)])
    statistic = ((observed - expected).square() / expected.clamp(min=1e-12)).sum().item()
    dof = expected.numel() - 1
    assert statistic < dof + 5 * math.sqrt(2 * dof), (statistic, dof)


@pytest.mark.parametrize("name", NAMES)
def test_mean_log_prob_of_samples_is_minus_entropy(name):
    toy = get_toy(name)
    log_p = toy.log_prob(toy.sample(20_000, seed=5))
    assert torch.isfinite(log_p).all()
    standard_error = log_p.std().item() / math.sqrt(log_p.numel())
    assert abs(-log_p.mean().item() - toy.entropy) <= 3 * standard_error + 1e-9


@pytest.mark.parametrize("name", [n for n in NAMES if n != "checkerboard"])
def test_entropy_grid_is_converged(name):
    density = get_toy(name).density
    coarser = grid_entropy(density.log_prob, density.half_width, density.scale / 1.5)
    assert coarser == pytest.approx(density.entropy, abs=1e-6)


def test_entropies_with_closed_forms():
    assert get_toy("checkerboard").entropy == pytest.approx(math.log(8), abs=1e-12)
    # A mixture's entropy is at most log K + the components' entropy, with equality when
    # they do not overlap; these, 7.6 sd apart, overlap a little.
    bound = math.log(8) + math.log(2 * math.pi * math.e * 0.2**2)
    assert 0 < bound - get_toy("8gaussians").entropy < 1e-3


def test_checkerboard_density_is_uniform_on_its_squares():
    toy = get_toy("checkerboard")
    inside = torch.tensor([[-1.5, 0.5], [-0.5, 1.5], [0.5, -1.5], [1.5, -0.5]], dtype=torch.float64)
    outside = torch.tensor([[-1.5, 1.5], [0.5, 1.5], [3.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(toy.log_prob(inside), torch.full((4,), -math.log(8), dtype=torch.float64))
    assert torch.isneginf(toy.log_prob(outside)).all()


@pytest.mark.parametrize("name", [n for n in NAMES if isinstance(TOYS[n], NoisyCurveToy)])
def test_curve_quadrature_is_converged(name):
    toy = TOYS[name]
    x = toy.sample(1000, seed=2)
    finer = toy.quadrature_density(toy.scale / 2, order=10)
    torch.testing.assert_close(finer.log_prob(x), toy.log_prob(x), atol=1e-8, rtol=0)
    assert finer.log_weights.exp().sum().item() == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("name", [n for n in NAMES if isinstance(TOYS[n], NoisyCirclesToy)])
def test_circle_closed_form_matches_angular_quadrature(name):
    """The Bessel closed form against the periodic trapezoid rule over the angle."""
    toy = TOYS[name]
    angle = torch.arange(2048, dtype=torch.float64) * (2 * math.pi / 2048)
    centres, log_weights = [], []
    for radius, weight in zip(toy.radii, toy.weights, strict=True):
        centres.append(radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1))
        log_weights.append(torch.full_like(angle, math.log(weight / 2048)))
    mixture = IsotropicGaussianMixture(torch.cat(centres), torch.cat(log_weights), toy.scale)
    x = torch.cat([toy.sample(500, seed=1), torch.zeros(1, 2, dtype=torch.float64)])
    torch.testing.assert_close(toy.log_prob(x), mixture.log_prob(x), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_follows_dtype_and_stays_finite_far_away(name):
    toy = get_toy(name)
    x = toy.sample(200, seed=9)
    log_p32 = toy.log_prob(x.float())
    assert log_p32.dtype == torch.float32
    torch.testing.assert_close(log_p32.double(), toy.log_prob(x), atol=1e-3, rtol=1e-4)
    if name != "checkerboard":  # zero density off its squares: -inf is exact there
        far = torch.tensor([[1e4, -1e4], [0.0, 0.0], [-50.0, 3.0]], dtype=torch.float64)
        assert torch.isfinite(toy.log_prob(far)).all()


def test_unknown_toy_names_the_closest():
    with pytest.raises(ValueError, match=r"'moon'.*did you mean 'moons'.*valid toys: .*rings"):
        get_toy("moon")
    with pytest.raises(ValueError, match="unknown toy"):
        sample_toy("nope", 10)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="non-negative integer"):
        get_toy("moons").sample(-1)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        get_toy("rings").log_prob(torch.zeros(3, 3, dtype=torch.float64))
