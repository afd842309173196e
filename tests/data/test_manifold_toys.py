"""The built-in sets on S^2, T^2, SO(3) and a box: normalisation, symmetry, samplers."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from pushforward.data import (
    MANIFOLD_TOYS,
    MANIFOLDS,
    ManifoldToy,
    builtin_names,
    load_dataset,
    manifold_toys,
)
from pushforward.data.manifold_densities import (
    log_vmf_mode_density,
    log_vmf_normalizer,
    sample_vmf,
)

NAMES = sorted(MANIFOLD_TOYS)
SPACES = {
    "vmf-mixture": "sphere",
    "von-mises-torus": "torus",
    "rotation-mixture": "so3",
    "box-edges": "box",
}


def _midpoints(low: float, high: float, cells: int) -> tuple[torch.Tensor, float]:
    width = (high - low) / cells
    return low + width * (torch.arange(cells, dtype=torch.float64) + 0.5), width


def _uniform_quaternions(n: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return z / z.norm(dim=1, keepdim=True)


def _on_the_space(toy: ManifoldToy, x: torch.Tensor) -> bool:
    if toy.manifold in ("sphere", "so3"):
        return bool(((x.norm(dim=1) - 1).abs() < 1e-12).all())
    if toy.manifold == "torus":
        return bool(((x >= -math.pi) & (x < math.pi)).all())
    low, high = torch.tensor(toy.low), torch.tensor(toy.high)
    return bool(((x >= low) & (x <= high)).all())


def test_registry():
    assert {name: toy.manifold for name, toy in MANIFOLD_TOYS.items()} == SPACES
    assert {toy.features for toy in MANIFOLD_TOYS.values()} == {2, 3, 4}
    assert set(SPACES.values()) == set(MANIFOLDS)
    assert set(NAMES) <= set(builtin_names())


@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
    toy = MANIFOLD_TOYS[name]
    x = toy.sample(500, seed=1)
    assert x.shape == (500, toy.features) and x.dtype == torch.float64
    assert torch.equal(x, toy.sample(500, seed=1)) and not torch.equal(x, toy.sample(500, seed=2))
    assert _on_the_space(toy, x)
    log_p = toy.log_prob(x)
    assert log_p.shape == (500,) and torch.isfinite(log_p).all()
    single = toy.log_prob(x.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), log_p, atol=1e-3, rtol=1e-4)
    assert toy.sample(0).shape == (0, toy.features)
    with pytest.raises(ValueError, match=rf"shape \(n, {toy.features}\)"):
        toy.log_prob(torch.zeros(3, toy.features + 1))
    with pytest.raises(ValueError, match="non-negative integer"):
        toy.sample(-1)


@pytest.mark.parametrize("name", NAMES)
def test_the_entropy_rule_integrates_the_density_to_one(name):
    toy = MANIFOLD_TOYS[name]
    points, weights = toy.quadrature()
    assert float((weights * toy.log_prob(points).exp()).sum()) == pytest.approx(1, abs=1e-10)


def test_vmf_mixture_integrates_to_one_on_the_sphere():
    # (u, phi) = (cos theta, phi) has the area element du dphi.
    u, du = _midpoints(-1, 1, 800)
    phi, dphi = _midpoints(-math.pi, math.pi, 1600)
    uu, pp = torch.meshgrid(u, phi, indexing="ij")
    r = torch.sqrt(1 - uu.square())
    x = torch.stack([r * torch.cos(pp), r * torch.sin(pp), uu], dim=-1).reshape(-1, 3)
    mass = float(MANIFOLD_TOYS["vmf-mixture"].log_prob(x).exp().sum()) * du * dphi
    assert mass == pytest.approx(1, rel=0.01)


def test_von_mises_torus_integrates_to_one():
    angle, width = _midpoints(-math.pi, math.pi, 800)
    grid = torch.cartesian_prod(angle, angle)
    mass = float(MANIFOLD_TOYS["von-mises-torus"].log_prob(grid).exp().sum()) * width**2
    assert mass == pytest.approx(1, rel=0.01)


def test_box_edges_integrates_to_one():
    axis, width = _midpoints(0, 1, 1000)
    mass = float(MANIFOLD_TOYS["box-edges"].log_prob(torch.cartesian_prod(axis, axis)).exp().sum())
    assert mass * width**2 == pytest.approx(1, rel=0.01)


def test_rotation_mixture_integrates_to_one_by_monte_carlo():
    # E_uniform[p(q)] * vol(S^3) = 1, with vol(S^3) = 2 pi^2.
    q = _uniform_quaternions(1_000_000, seed=0)
    values = MANIFOLD_TOYS["rotation-mixture"].log_prob(q).exp() * (2 * math.pi**2)
    assert float(values.mean()) == pytest.approx(1, abs=0.02)
    assert float(values.std()) / 1000 < 0.005  # the estimate's standard error


def test_rotation_mixture_is_antipodally_symmetric():
    toy = MANIFOLD_TOYS["rotation-mixture"]
    q = torch.cat([_uniform_quaternions(2000, seed=1), toy.sample(2000, seed=2)])
    torch.testing.assert_close(toy.log_prob(-q), toy.log_prob(q), atol=1e-10, rtol=0)
    assert float(toy.sample(20_000, seed=3)[:, 0].gt(0).double().mean()) == pytest.approx(
        0.5, abs=0.02
    )


def test_uniform_limits():
    # kappa -> 0 gives the uniform density of each space.
    tiny = torch.tensor(1e-9, dtype=torch.float64)
    assert float(log_vmf_normalizer(tiny, 2)) == pytest.approx(-math.log(2 * math.pi))
    assert float(log_vmf_normalizer(tiny, 3)) == pytest.approx(-math.log(4 * math.pi))
    assert float(log_vmf_normalizer(tiny, 4)) == pytest.approx(-math.log(2 * math.pi**2))


@pytest.mark.parametrize("kappa", [0.1, 50.0])
def test_vmf_normalisers_against_numeric_integration(kappa):
    # p at the mode times the integral of exp(kappa (cos - 1)) over the sphere is 1; the
    # integral reduces to one angle: 2 pi I_0-type on S^1, 2 pi du on S^2, 4 pi sin^2 on S^3.
    angle, width = _midpoints(0, math.pi, 200_000)
    falloff = torch.exp(kappa * (torch.cos(angle) - 1))
    integrals = {
        2: 2 * float(falloff.sum()) * width,
        3: 2 * math.pi * float((falloff * torch.sin(angle)).sum()) * width,
        4: 4 * math.pi * float((falloff * torch.sin(angle).square()).sum()) * width,
    }
    closed = {
        2: 1 / (2 * math.pi * torch.special.i0(torch.tensor(kappa)).item()),
        3: kappa / (4 * math.pi * math.sinh(kappa)),
        4: kappa / (4 * math.pi**2 * torch.special.i1(torch.tensor(kappa)).item()),
    }
    k = torch.tensor(kappa, dtype=torch.float64)
    for dim, integral in integrals.items():
        mode = float(log_vmf_mode_density(k, dim))
        assert math.exp(mode) * integral == pytest.approx(1, rel=1e-8), dim
        assert math.exp(float(log_vmf_normalizer(k, dim))) == pytest.approx(closed[dim], rel=1e-6)


def test_vmf_normalisers_are_finite_for_large_kappa():
    kappa = torch.tensor([1e3, 1e5], dtype=torch.float64)
    for dim in (2, 3, 4):
        mode = log_vmf_mode_density(kappa, dim)
        # Laplace: C_d e^kappa ~ (kappa / 2 pi)^((d - 1) / 2).
        expected = (dim - 1) / 2 * torch.log(kappa / (2 * math.pi))
        torch.testing.assert_close(mode, expected, atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="d in"):
        log_vmf_mode_density(kappa, 5)


@pytest.mark.parametrize("dim", [2, 3, 4])
@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0])
def test_vmf_sampler_mean_resultant(dim, kappa):
    # E[x] = A_d(kappa) mu with A_d = I_{d/2} / I_{d/2 - 1} (Mardia & Jupp 2000, section 9.3).
    k = torch.tensor(kappa, dtype=torch.float64)
    i0e, i1e = torch.special.i0e(k).item(), torch.special.i1e(k).item()
    resultant = {2: i1e / i0e, 3: 1 / math.tanh(kappa) - 1 / kappa, 4: i0e / i1e - 2 / kappa}
    generator = torch.Generator().manual_seed(dim * 100 + int(kappa))
    mean = torch.randn(dim, generator=generator, dtype=torch.float64)
    mean = mean / mean.norm()
    x = sample_vmf(mean, kappa, 20_000, generator)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(20_000, dtype=torch.float64))
    error = x.mean(dim=0) - resultant[dim] * mean
    standard_error = x.std(dim=0) / math.sqrt(20_000)
    assert bool((error.abs() < 5 * standard_error + 1e-12).all()), (error, standard_error)


@pytest.mark.parametrize("name", NAMES)
def test_samples_have_the_entropy_as_mean_negative_log_density(name):
    toy = MANIFOLD_TOYS[name]
    log_p = toy.log_prob(toy.sample(40_000, seed=11))
    standard_error = float(log_p.std()) / math.sqrt(log_p.numel())
    assert abs(-float(log_p.mean()) - toy.entropy) < 4 * standard_error


def _features(toy: ManifoldToy, x: torch.Tensor) -> torch.Tensor:
    """Smooth test functions of a point: coordinates and their pairwise products."""
    if toy.manifold == "torus":
        x = torch.cat([torch.cos(x), torch.sin(x)], dim=1)
    pairs = torch.triu_indices(x.shape[1], x.shape[1])
    return torch.cat([x, x[:, pairs[0]] * x[:, pairs[1]]], dim=1)


@pytest.mark.parametrize("name", NAMES)
def test_sample_moments_match_the_density(name):
    toy = MANIFOLD_TOYS[name]
    samples = _features(toy, toy.sample(40_000, seed=5))
    points, weights = toy.quadrature()
    exact = ((weights * toy.log_prob(points).exp())[:, None] * _features(toy, points)).sum(0)
    standard_error = samples.std(dim=0) / math.sqrt(samples.shape[0])
    error = samples.mean(dim=0) - exact
    assert bool((error.abs() < 5 * standard_error + 1e-9).all()), (error, standard_error)


def _unit_square(toy: ManifoldToy) -> tuple[object, object, float]:
    """Maps from points to ``[0, 1)^2`` and back, with the constant volume factor."""
    if toy.manifold == "sphere":

        def forward(x):
            u, phi = x[:, 2], torch.atan2(x[:, 1], x[:, 0])
            return torch.stack([(u + 1) / 2, (phi + math.pi) / (2 * math.pi)], dim=1)

        def back(c):
            u, phi = 2 * c[:, 0] - 1, 2 * math.pi * c[:, 1] - math.pi
            r = torch.sqrt(1 - u.square())
            return torch.stack([r * torch.cos(phi), r * torch.sin(phi), u], dim=1)

        return forward, back, 4 * math.pi
    if toy.manifold == "torus":
        return (
            lambda x: (x + math.pi) / (2 * math.pi),
            lambda c: 2 * math.pi * c - math.pi,
            (2 * math.pi) ** 2,
        )
    return (lambda x: x, lambda c: c, 1.0)


@pytest.mark.parametrize("name", ["vmf-mixture", "von-mises-torus", "box-edges"])
def test_binned_samples_match_the_density(name):
    # Chi-square of 20,000 samples in 12 x 12 cells of a parametrisation whose volume
    # element is constant; cell masses by a 16 x 16 midpoint rule inside each cell.
    toy = MANIFOLD_TOYS[name]
    forward, back, volume = _unit_square(toy)
    cells, fine = 12, 16
    centres, width = _midpoints(0, 1, cells * fine)
    grid = torch.cartesian_prod(centres, centres)
    density = toy.log_prob(back(grid)).exp() * volume * width**2
    masses = density.reshape(cells, fine, cells, fine).sum(dim=(1, 3)).reshape(-1)
    assert float(masses.sum()) == pytest.approx(1, abs=2e-3)
    c = forward(toy.sample(20_000, seed=9)).clamp(0, 1 - 1e-12)
    index = (c * cells).long()
    counts = torch.bincount(index[:, 0] * cells + index[:, 1], minlength=cells**2).double()
    expected = masses / masses.sum() * counts.sum()
    keep = expected >= 5
    observed = torch.cat([counts[keep], counts[~keep].sum().reshape(1)])
    wanted = torch.cat([expected[keep], expected[~keep].sum().reshape(1)])
    wanted = wanted[wanted > 0]
    observed = observed[: wanted.numel()]
    statistic = float(((observed - wanted).square() / wanted).sum())
    dof = wanted.numel() - 1
    assert statistic < dof + 5 * math.sqrt(2 * dof), (statistic, dof)


def test_box_edges_is_finite_on_the_closed_box_and_zero_outside():
    toy = MANIFOLD_TOYS["box-edges"]
    assert toy.low == (0.0, 0.0) and toy.high == (1.0, 1.0)
    edges = torch.tensor([[0, 0], [1, 1], [0, 1], [1, 0], [0.5, 0], [1, 0.5]], dtype=torch.float64)
    edges.requires_grad_(True)
    log_p = toy.log_prob(edges)
    assert torch.isfinite(log_p).all()
    (gradient,) = torch.autograd.grad(log_p.sum(), edges)
    assert torch.isfinite(gradient).all()
    outside = torch.tensor([[-1e-9, 0.5], [0.5, 1 + 1e-9], [2.0, 2.0]], dtype=torch.float64)
    assert torch.equal(toy.log_prob(outside), torch.full((3,), -math.inf, dtype=torch.float64))
    # Mass piles up at the edges and corners: the density there beats the centre's.
    centre = toy.log_prob(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    assert bool((log_p.detach() > centre).all())


def test_von_mises_torus_is_periodic():
    toy = MANIFOLD_TOYS["von-mises-torus"]
    theta = toy.sample(1000, seed=4)
    shifted = theta + 2 * math.pi * torch.tensor([1.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(toy.log_prob(shifted), toy.log_prob(theta))


@pytest.mark.parametrize("name", NAMES)
def test_load_dataset(name):
    data = load_dataset(f"builtin:{name}", n=100, seed=1)
    toy = MANIFOLD_TOYS[name]
    assert data.toy is toy and data.domain == toy.manifold and data.event_shape == (toy.features,)
    assert torch.equal(data.values, toy.sample(100, seed=1))
    assert isinstance(data.toy.entropy, float)  # what eval reads for kl = nll - entropy
    assert len(load_dataset(f"builtin:{name}")) == 20_000


def test_unknown_names_say_did_you_mean():
    with pytest.raises(ValueError, match=r"'vmf-mix'.*did you mean 'vmf-mixture'"):
        load_dataset("builtin:vmf-mix")
    with pytest.raises(ValueError, match=r"'rotation-mixtures'.*did you mean 'rotation-mixture'"):
        load_dataset("builtin:rotation-mixtures")
    assert load_dataset("builtin:moons", n=4).domain is None


def test_docstring_examples():
    assert doctest.testmod(manifold_toys).failed == 0
