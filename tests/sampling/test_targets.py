"""The built-in targets: normalisation, exact constants, exact samples, dtypes, modes."""

from __future__ import annotations

import doctest
import functools
import importlib
import math

import numpy as np
import pytest
import torch
import torch.distributions as D
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from pushforward.sampling.target import Target
from pushforward.sampling.targets import (
    BUILTIN_TARGETS,
    DoubleWell,
    FABGaussianMixture,
    GaussianGrid,
    ManyWell,
    NealFunnel,
    PhiFour,
    ToyTarget,
    builtin_target,
)

SAMPLES = 20_000


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kink_profile(sites: int, a: float) -> torch.Tensor:
    """A field near the +1 mode of phi^4: two tanh walls of width sqrt(2) a at the ends."""
    x = torch.arange(1, sites + 1, dtype=torch.float64) / sites
    width = math.sqrt(2) * a
    return torch.tanh(x / width) * torch.tanh((1 - x) / width)


def typical_points(target: Target, n: int = 64) -> torch.Tensor:
    """Points where the target has its mass: exact samples, or noisy phi^4 mode fields."""
    if target.has_sample:
        return target.sample(n, generator(1))
    assert isinstance(target, PhiFour)
    profile = kink_profile(target.features, target.a)
    signs = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0).to(torch.float64)
    noise = 0.05 * torch.randn(n, target.features, generator=generator(1), dtype=torch.float64)
    return signs[:, None] * profile + noise


def grid_integral(
    log_prob, bounds: tuple[tuple[float, float], tuple[float, float]], spacing: tuple[float, float]
) -> tuple[float, float]:
    """Midpoint-rule integrals of p and of p log p over a 2-D box, in float64."""
    axes = []
    for (low, high), step in zip(bounds, spacing, strict=True):
        count = math.ceil((high - low) / step)
        width = (high - low) / count
        axes.append((low + width * (torch.arange(count, dtype=torch.float64) + 0.5), width))
    (first, w0), (second, w1) = axes
    xx, yy = torch.meshgrid(first, second, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    log_p = torch.cat([log_prob(chunk) for chunk in points.split(65536)])
    p = torch.exp(log_p)
    cell = w0 * w1
    return float(p.sum()) * cell, float((p * log_p).sum()) * cell


# --- the contract every built-in target keeps -------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_builtin_names_and_instances(name: str) -> None:
    target = builtin_target(name)
    assert isinstance(target, Target)
    assert target.name == name
    assert builtin_target(name) is not target  # a fresh instance each time


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_log_prob_follows_dtype(name: str) -> None:
    target = builtin_target(name)
    x = typical_points(target)
    exact = target.log_prob(x)
    single = target.log_prob(x.float())
    assert exact.dtype == torch.float64 and single.dtype == torch.float32
    assert exact.shape == (x.shape[0],)
    assert torch.isfinite(exact).all()
    scale = exact.abs().clamp(min=1.0)
    assert ((single.double() - exact).abs() / scale).max() < 1e-4


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_gradient_is_finite_at_typical_points(name: str) -> None:
    target = builtin_target(name)
    x = typical_points(target).requires_grad_()
    (gradient,) = torch.autograd.grad(target.log_prob(x).sum(), x)
    assert torch.isfinite(gradient).all()
    assert gradient.abs().sum() > 0


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_wrong_shape_is_a_clear_error(name: str) -> None:
    target = builtin_target(name)
    with pytest.raises(ValueError, match=rf"\(batch, {target.features}\)"):
        target.log_prob(torch.zeros(3, target.features + 1))
    with pytest.raises(ValueError, match="floating-point"):
        target.log_prob(torch.zeros(3, target.features, dtype=torch.long))


@pytest.mark.parametrize("name", [n for n in BUILTIN_TARGETS if builtin_target(n).has_sample])
def test_samples_are_reproducible_and_leave_the_global_rng(name: str) -> None:
    target = builtin_target(name)
    state = torch.get_rng_state()
    first = target.sample(100, generator(3))
    second = target.sample(100, generator(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert first.dtype == torch.float64 and first.shape == (100, target.features)
    assert torch.equal(first, second)
    assert not torch.equal(first, target.sample(100, generator(4)))


@pytest.mark.parametrize("name", [n for n in BUILTIN_TARGETS if builtin_target(n).has_sample])
def test_sample_counts(name: str) -> None:
    target = builtin_target(name)
    assert target.sample(0, generator()).shape == (0, target.features)
    with pytest.raises(ValueError, match="non-negative integer"):
        target.sample(-1, generator())


def test_unknown_builtin_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'gmm-40'.*valid: gmm-40, grid-9"):
        builtin_target("gmm40")


def test_docstring_examples() -> None:
    names = ["fab_mixture", "funnel", "gaussian_mixture", "grid_mixture", "many_well"]
    names += ["phi_four", "registry", "toy_target"]
    for name in names:
        module = importlib.import_module(f"pushforward.sampling.targets.{name}")
        result = doctest.testmod(module)
        assert result.failed == 0, name
        assert result.attempted > 0, name


# --- normalisation on a grid -------------------------------------------------------------

NORMALISED_2D = {
    "gmm-40": (((-55.0, 55.0), (-55.0, 55.0)), (0.2, 0.2)),
    "grid-9": (((-9.0, 9.0), (-9.0, 9.0)), (0.05, 0.05)),
    "two-moons": (((-5.0, 5.0), (-4.5, 4.5)), (0.05, 0.05)),
    "rings": (((-4.0, 4.0), (-4.0, 4.0)), (0.02, 0.02)),
}


@functools.cache
def normalised_grid_integrals(name: str) -> tuple[float, float]:
    """The grid integrals of p and p log p of a normalised 2-D target (computed once)."""
    bounds, spacing = NORMALISED_2D[name]
    return grid_integral(builtin_target(name).log_prob, bounds, spacing)


@pytest.mark.parametrize("name", sorted(NORMALISED_2D))
def test_two_dimensional_targets_integrate_to_one(name: str) -> None:
    assert builtin_target(name).log_z == 0.0
    mass, _ = normalised_grid_integrals(name)
    assert mass == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(NORMALISED_2D))
def test_mean_log_prob_of_samples_is_minus_the_entropy(name: str) -> None:
    target = builtin_target(name)
    _, negative_entropy = normalised_grid_integrals(name)
    values = target.log_prob(target.sample(SAMPLES, generator(5)))
    error = float(values.std()) / math.sqrt(SAMPLES)
    assert abs(float(values.mean()) - negative_entropy) < 4 * error


def test_two_dimensional_many_well_integrates_to_its_z() -> None:
    target = ManyWell(wells=1)
    shifted = lambda x: target.log_prob(x) - target.log_z  # noqa: E731
    mass, _ = grid_integral(shifted, ((-3.5, 3.5), (-9.0, 9.0)), (0.005, 0.05))
    assert mass == pytest.approx(1.0, abs=1e-6)


def test_two_dimensional_funnel_integrates_to_one() -> None:
    # In (x0, z) with x1 = e^{x0/2} z the neck is as wide as the mouth, so a grid resolves it.
    target = NealFunnel(features=2)

    def pulled_back(points: torch.Tensor) -> torch.Tensor:
        neck, z = points[:, 0], points[:, 1]
        x = torch.stack([neck, torch.exp(0.5 * neck) * z], dim=1)
        return target.log_prob(x) + 0.5 * neck

    mass, _ = grid_integral(pulled_back, ((-30.0, 30.0), (-9.0, 9.0)), (0.05, 0.05))
    assert mass == pytest.approx(1.0, abs=1e-6)


# --- gmm-40 --------------------------------------------------------------------------------


def test_gmm_means_are_fabs_bit_for_bit() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        expected = (torch.rand((40, 2)) - 0.5) * 2 * 40
    state = torch.get_rng_state()
    target = FABGaussianMixture()
    assert torch.equal(torch.get_rng_state(), state)  # built without touching the global RNG
    assert expected.dtype == torch.float32
    assert torch.equal(target.modes, expected.to(torch.float64))
    assert target.modes[0].tolist() == pytest.approx([-0.2994728088, 21.4577445984], abs=1e-9)
    assert target.scale == pytest.approx(math.log1p(math.e), rel=1e-15)
    assert target.scale == pytest.approx(1.3132616875182228, rel=1e-15)


def _fab_reference(target: FABGaussianMixture) -> D.Distribution:
    """FAB's own construction with torch.distributions, as an independent reference."""
    count = target.means.shape[0]
    scale_tril = torch.diag_embed(torch.full((count, 2), target.scale, dtype=torch.float64))
    components = D.MultivariateNormal(target.means, scale_tril=scale_tril, validate_args=False)
    mixture = D.Categorical(torch.ones(count, dtype=torch.float64), validate_args=False)
    return D.MixtureSameFamily(mixture, components, validate_args=False)


@given(st.lists(st.floats(-200.0, 200.0), min_size=2, max_size=2), st.integers(0, 3))
def test_gmm_log_prob_matches_torch_distributions(point: list[float], seed: int) -> None:
    target = FABGaussianMixture(seed=seed)
    x = torch.tensor([point], dtype=torch.float64)
    assert target.log_prob(x).item() == pytest.approx(_fab_reference(target).log_prob(x).item())


def test_gmm_modes_are_their_own_components() -> None:
    target = builtin_target("gmm-40")
    assert target.modes is not None
    assert torch.equal(target.mode_of(target.modes), torch.arange(40))
    assert torch.equal(target.mode_of(target.modes.float()), torch.arange(40))


def test_gmm_samples_have_the_mixture_moments() -> None:
    target = FABGaussianMixture()
    x = target.sample(SAMPLES, generator(6))
    means = target.modes
    mean = means.mean(dim=0)
    covariance = torch.cov(means.T, correction=0) + target.scale**2 * torch.eye(2)
    error = torch.sqrt(torch.diagonal(covariance) / SAMPLES)
    assert ((x.mean(dim=0) - mean).abs() < 4 * error).all()
    assert torch.allclose(torch.cov(x.T), covariance, rtol=0.05)


# --- grid-9 --------------------------------------------------------------------------------


def test_grid_means_and_scale_are_the_pis_benchmark() -> None:
    target = GaussianGrid()
    expected = {(u, v) for u in (-5.0, 0.0, 5.0) for v in (-5.0, 0.0, 5.0)}
    assert target.modes is not None
    assert {tuple(row) for row in target.modes.tolist()} == expected
    assert target.scale**2 == pytest.approx(0.3, rel=1e-15)
    assert torch.equal(target.mode_of(target.modes), torch.arange(9))
    x = torch.tensor([[0.3, -4.1], [-4.0, 4.0]], dtype=torch.float64)
    reference = D.MixtureSameFamily(
        D.Categorical(torch.ones(9, dtype=torch.float64)),
        D.Independent(
            D.Normal(target.modes, torch.full((9, 2), math.sqrt(0.3), dtype=torch.float64)), 1
        ),
    )
    assert torch.allclose(target.log_prob(x), reference.log_prob(x), rtol=1e-12)


def test_grid_samples_fill_every_mode_equally_with_the_right_spread() -> None:
    target = GaussianGrid()
    x = target.sample(SAMPLES, generator(7))
    assert target.modes is not None
    component = target.mode_of(x)
    counts = torch.bincount(component, minlength=9).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    residual = (x - target.modes[component]) / math.sqrt(0.3)
    assert stats.kstest(residual[:, 0].numpy(), "norm").pvalue > 1e-3
    assert stats.kstest(residual[:, 1].numpy(), "norm").pvalue > 1e-3


# --- many-well-32 --------------------------------------------------------------------------


def _scipy_well(a: float = -0.5, b: float = -6.0, c: float = 1.0):
    return lambda x: np.exp(-(a * x + b * x**2 + c * x**4))


def test_many_well_log_z_by_independent_quadrature() -> None:
    target = builtin_target("many-well-32")
    assert isinstance(target, ManyWell)
    z1, _ = integrate.quad(_scipy_well(), -np.inf, np.inf, epsabs=0, epsrel=1e-13, limit=200)
    assert round(z1, 5) == 11784.50927  # FAB's constant
    expected = 16 * (math.log(z1) + 0.5 * math.log(2 * math.pi))
    assert target.log_z is not None
    assert target.log_z == pytest.approx(expected, abs=1e-10)
    assert round(target.log_z, 5) == 164.69568


def test_many_well_left_well_mass_by_independent_quadrature() -> None:
    target = ManyWell()
    left, _ = integrate.quad(_scipy_well(), -np.inf, 0.0, epsabs=0, epsrel=1e-13, limit=200)
    total, _ = integrate.quad(_scipy_well(), -np.inf, np.inf, epsabs=0, epsrel=1e-13, limit=200)
    assert target.left_well_mass == pytest.approx(left / total, abs=1e-12)
    assert round(target.left_well_mass, 6) == 0.155693
    # The right well (x > 0) is the deeper one: a = -1/2 lowers the energy there.
    assert target.log_prob(torch.tensor([[1.7, 0.0]] * 16).reshape(1, 32)) > target.log_prob(
        torch.tensor([[-1.7, 0.0]] * 16).reshape(1, 32)
    )


@given(st.floats(-2.0, 2.0), st.floats(-8.0, 4.0), st.floats(0.5, 3.0))
def test_double_well_log_z_for_any_coefficients(a: float, b: float, c: float) -> None:
    z, _ = integrate.quad(_scipy_well(a, b, c), -np.inf, np.inf, epsabs=0, epsrel=1e-12)
    assert DoubleWell(a, b, c).log_z == pytest.approx(math.log(z), abs=1e-9)


@pytest.mark.parametrize(("a", "b", "c"), [(-0.5, -6.0, 1.0), (1.5, 2.0, 0.5), (0.0, -20.0, 3.0)])
def test_double_well_envelope_bounds_the_density(a: float, b: float, c: float) -> None:
    # The rejection sampler is exact only if every cell's constant bounds the density.
    well = DoubleWell(a, b, c)
    edges, log_envelope, width = well._envelope
    offsets = torch.linspace(0.0, 1.0, 33, dtype=torch.float64)
    x = edges[:-1, None] + width * offsets[None]
    log_density = -well.energy(x) - well.peak
    assert (log_density <= log_envelope[:, None]).all()
    # ... and is tight enough that nearly every proposal is accepted.
    acceptance = math.exp(well.log_z - well.peak) / (width * float(log_envelope.exp().sum()))
    assert acceptance > 0.9


def test_many_well_pairs_coordinates_as_fab() -> None:
    target = ManyWell(wells=2)
    x = torch.tensor([[1.0, 2.0, -1.5, 0.5]], dtype=torch.float64)
    energy = lambda u: -0.5 * u - 6 * u**2 + u**4  # noqa: E731
    expected = -(energy(1.0) + 0.5 * 2.0**2) - (energy(-1.5) + 0.5 * 0.5**2)
    assert target.log_prob(x).item() == pytest.approx(expected, rel=1e-14)


def _double_well_cdf() -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(-4.0, 4.0, 400_001)
    density = _scipy_well()(grid)
    cdf = integrate.cumulative_trapezoid(density, grid, initial=0.0)
    return grid, cdf / cdf[-1]


def test_many_well_samples_match_the_density() -> None:
    target = ManyWell()
    x = target.sample(SAMPLES, generator(8))
    grid, cdf = _double_well_cdf()
    wells = x[:, 0::2].reshape(-1).numpy()  # 320k draws of the double well, pooled
    assert stats.kstest(wells, lambda u: np.interp(u, grid, cdf)).pvalue > 1e-3
    assert stats.kstest(x[:, 1::2].reshape(-1).numpy(), "norm").pvalue > 1e-3
    left = target.left_well(x).double().mean().item()
    error = math.sqrt(0.155693 * (1 - 0.155693) / wells.size)
    assert abs(left - target.left_well_mass) < 4 * error


def test_many_well_mean_log_prob_of_samples() -> None:
    target = ManyWell()
    values = target.log_prob(target.sample(SAMPLES, generator(9)))
    p = _scipy_well()
    z, _ = integrate.quad(p, -np.inf, np.inf, epsabs=0, epsrel=1e-13)
    log_p = lambda u: -(-0.5 * u - 6 * u**2 + u**4)  # noqa: E731
    mean_well, _ = integrate.quad(lambda u: p(u) * log_p(u) / z, -np.inf, np.inf, epsrel=1e-12)
    expected = 16 * (mean_well - 0.5)  # E[-x^2 / 2] = -1/2 for each Gaussian factor
    error = float(values.std()) / math.sqrt(SAMPLES)
    assert abs(float(values.mean()) - expected) < 4 * error


def test_double_well_rejects_an_unnormalisable_well() -> None:
    with pytest.raises(ValueError, match="option 'c' must be positive"):
        ManyWell(c=0.0)
    with pytest.raises(ValueError, match="option 'wells'"):
        ManyWell(wells=0)


# --- funnel-10 -----------------------------------------------------------------------------


def test_funnel_samples_match_the_density() -> None:
    target = builtin_target("funnel-10")
    x = target.sample(SAMPLES, generator(10))
    neck = x[:, 0]
    assert stats.kstest(neck.numpy() / 3, "norm").pvalue > 1e-3
    standard = x[:, 1:] * torch.exp(-0.5 * neck)[:, None]
    assert stats.kstest(standard.reshape(-1).numpy(), "norm").pvalue > 1e-3
    narrow = (neck < -3).double().mean().item()
    phi = stats.norm.cdf(-1.0)
    assert phi == pytest.approx(0.1587, abs=1e-4)
    assert abs(narrow - phi) < 4 * math.sqrt(phi * (1 - phi) / SAMPLES)
    # E[log p] = -H, and H = 1/2 log(2 pi e 9) + (d - 1)/2 log(2 pi e) since E[x0] = 0.
    entropy = 0.5 * math.log(2 * math.pi * math.e * 9) + 4.5 * math.log(2 * math.pi * math.e)
    values = target.log_prob(x)
    assert abs(float(values.mean()) + entropy) < 4 * float(values.std()) / math.sqrt(SAMPLES)


@given(st.lists(st.floats(-12.0, 12.0), min_size=4, max_size=4))
def test_funnel_log_prob_matches_torch_distributions(point: list[float]) -> None:
    target = NealFunnel(features=4)
    x = torch.tensor([point], dtype=torch.float64)
    neck = x[0, 0]
    zero = torch.zeros((), dtype=torch.float64)
    expected = D.Normal(zero, 3 + zero).log_prob(neck)
    expected = expected + D.Normal(zero, torch.exp(0.5 * neck)).log_prob(x[0, 1:]).sum()
    assert target.log_prob(x).item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_funnel_deep_in_the_neck_has_no_nan(dtype: torch.dtype) -> None:
    target = NealFunnel(features=3)
    x = torch.tensor([[-200.0, 0.0, 0.0], [-100.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    x.requires_grad_()
    values = target.log_prob(x)
    (gradient,) = torch.autograd.grad(values.sum(), x)
    assert torch.isfinite(values).all()
    assert torch.isfinite(gradient).all()
    # Off the axis so deep in the neck the density underflows: -inf, never NaN.
    far = target.log_prob(torch.tensor([[-200.0, 1.0, 0.0]], dtype=dtype))
    assert not torch.isnan(far).any() and far.item() < -1e30


# --- two-moons and rings -------------------------------------------------------------------


def test_toy_targets_are_the_toys() -> None:
    from pushforward.data.toys import get_toy

    for name, toy in (("two-moons", "moons"), ("rings", "rings")):
        target = builtin_target(name)
        assert isinstance(target, ToyTarget)
        x = get_toy(toy).sample(50, seed=1)
        expected = get_toy(toy).log_prob
        assert expected is not None
        assert torch.allclose(target.log_prob(x), expected(x), rtol=1e-12, atol=1e-12)


def test_toy_target_without_generator_follows_the_global_seed() -> None:
    target = builtin_target("rings")
    torch.manual_seed(11)
    first = target.sample(10)
    torch.manual_seed(11)
    assert torch.equal(first, target.sample(10))


# --- phi4-64 -------------------------------------------------------------------------------


def _reference_energy(phi: np.ndarray, a: float, b: float) -> float:
    """U written out site by site, as in the flonaco code, for one field."""
    sites = phi.size
    padded = [0.0, *phi.tolist(), 0.0]
    coupling = sum((padded[i] - padded[i - 1]) ** 2 / 2 for i in range(1, sites + 2))
    local = sum((1 - v**2) ** 2 / 4 + b * v for v in phi.tolist())
    return a * sites * coupling + local / (a * sites)


@pytest.mark.parametrize(("sites", "a", "b", "beta"), [(64, 0.1, 0.0, 20.0), (9, 0.3, 0.2, 2.5)])
def test_phi_four_energy_matches_a_written_out_reference(
    sites: int, a: float, b: float, beta: float
) -> None:
    target = PhiFour(sites, a, b, beta)
    fields = torch.randn(5, sites, generator=generator(12), dtype=torch.float64)
    expected = [-beta * _reference_energy(row.numpy(), a, b) for row in fields]
    assert target.log_prob(fields).tolist() == pytest.approx(expected, rel=1e-12)


def test_phi_four_zero_field_and_the_kink_energy() -> None:
    target = builtin_target("phi4-64")
    assert target.log_z is None and not target.has_sample
    zero = torch.zeros(1, 64, dtype=torch.float64)
    assert target.log_prob(zero).item() == pytest.approx(-20 / (4 * 0.1), rel=1e-14)
    # Near a mode the field rises from the walls in two half kinks, each of continuum
    # energy int_0^1 (1 - u^2) du / sqrt(2) = sqrt(2) / 3 for this scaling (the
    # Bogomolny bound, met by tanh(x / (sqrt(2) a))), far below U(0) = 2.5.
    assert isinstance(target, PhiFour)
    profile = kink_profile(64, 0.1)[None]
    assert target.energy(profile).item() == pytest.approx(2 * math.sqrt(2) / 3, rel=2e-3)


@given(st.lists(st.floats(-3.0, 3.0), min_size=64, max_size=64))
def test_phi_four_is_symmetric_without_a_field(values: list[float]) -> None:
    target = PhiFour()
    for dtype in (torch.float32, torch.float64):
        phi = torch.tensor([values], dtype=dtype)
        assert torch.equal(target.log_prob(phi), target.log_prob(-phi))


@given(st.lists(st.floats(-3.0, 3.0), min_size=16, max_size=16), st.floats(-1.0, 1.0))
def test_phi_four_field_tilts_the_modes(values: list[float], b: float) -> None:
    target = PhiFour(sites=16, b=b)
    phi = torch.tensor([values], dtype=torch.float64)
    difference = (target.log_prob(phi) - target.log_prob(-phi)).item()
    # Only b phi is odd: log p(phi) - log p(-phi) = -2 beta (dx / a) b sum(phi).
    expected = -2 * 20.0 * (1 / 16) / 0.1 * b * sum(values)
    assert difference == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_phi_four_mode_sign() -> None:
    target = PhiFour()
    profile = kink_profile(64, 0.1)
    fields = torch.stack([profile, -profile, profile - 0.2, torch.ones(64) * -0.01])
    assert target.mode_sign(fields).tolist() == [1, -1, 1, -1]
    assert target.mode_sign(fields).dtype == torch.int64


def test_phi_four_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="option 'a'"):
        PhiFour(a=0.0)
    with pytest.raises(ValueError, match="option 'beta'"):
        PhiFour(beta=-1.0)
    with pytest.raises(ValueError, match="option 'sites'"):
        PhiFour(sites=0)
    with pytest.raises(ValueError, match="option 'b'"):
        PhiFour(b=math.nan)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_funnel_is_never_nan_far_down_or_up_its_neck(dtype):
    target = builtin_target("funnel-10")
    big = torch.finfo(dtype).max / 10
    x = torch.zeros(6, 10, dtype=dtype)
    x[:, 0] = torch.tensor([-big, -big, big, -1e20, -300.0, 300.0], dtype=dtype)
    x[0, 1:] = 1.0
    values = target.log_prob(x)
    assert not bool(torch.isnan(values).any()) and not bool((values == float("inf")).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["many-well-32", "phi4-64", "gmm-40", "grid-9", "rings"])
def test_built_in_targets_give_minus_inf_never_nan_far_away(name, dtype):
    target = builtin_target(name)
    big = 10 * torch.finfo(dtype).max ** 0.5
    x = torch.zeros(4, target.features, dtype=dtype)
    x[0], x[1], x[2, 0], x[3, -1] = big, -big, big, -big
    values = target.log_prob(x)
    assert bool((values == float("-inf")).all()), values
