"""Riemannian flow matching: the likelihood integration against fields whose transport
is known in closed form (no training), densities that integrate to one over the sphere,
the torus and SO(3), the double cover of SO(3), guidance, and errors in the user's words."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.data.dataset import load_dataset
from pushforward.geometry import SO3, FlatTorus, Sphere, make_manifold
from pushforward.matching.riemannian import RiemannianFlowMatching
from pushforward.nn.manifold_velocity import ManifoldVelocity

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
LAMBDA = 1.5


class SphereAttraction(ManifoldVelocity):
    """:math:`u(x) = \\lambda(\\mu - (\\mu \\cdot x) x)`, the gradient flow of
    :math:`\\lambda\\,\\mu \\cdot x` on :math:`S^2`."""

    def __init__(self, mu: Tensor) -> None:
        super().__init__(Sphere(2), hidden=(4,))
        self.register_buffer("mu", mu)

    def forward(self, x: Tensor, t: Tensor | float, context: Tensor | None = None) -> Tensor:
        point = self.manifold.project(x)
        return LAMBDA * (self.mu - (point * self.mu).sum(-1, keepdim=True) * point)


class CircleAttraction(ManifoldVelocity):
    """:math:`u(\\varphi) = -\\lambda \\sin(\\varphi - \\mu)` on the circle."""

    def __init__(self, mu: float) -> None:
        super().__init__(FlatTorus(1), hidden=(4,))
        self.mu = mu

    def forward(self, x: Tensor, t: Tensor | float, context: Tensor | None = None) -> Tensor:
        return -LAMBDA * torch.sin(x - self.mu)


def analytic_model(network: ManifoldVelocity) -> RiemannianFlowMatching:
    return RiemannianFlowMatching(network, atol=1e-10, rtol=1e-10).double()


def contracted_angle(angle: Tensor) -> Tensor:
    """Both flows move the angle from the attractor by
    :math:`\\tan(\\theta_t / 2) = \\tan(\\theta_0 / 2)\\, e^{-\\lambda t}`."""
    return 2 * torch.atan(torch.tan(angle / 2) * math.exp(-LAMBDA))


def test_the_sphere_likelihood_matches_the_closed_form_transport_of_the_uniform():
    mu = torch.tensor([0.0, 0.6, 0.8], dtype=F64)
    model = analytic_model(SphereAttraction(mu))
    x = Sphere(2).random(64, generator=torch.Generator().manual_seed(0))
    b = math.tanh(LAMBDA)
    expected = -math.log(4 * math.pi) + math.log(1 - b * b) - 2 * torch.log(1 - b * (x @ mu))
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x), expected, atol=1e-4, rtol=0)
        # Hutchinson's estimator is unbiased: the mean of many draws is the same, within
        # a few of its standard errors.
        estimates = torch.stack([
            model.log_prob(x[:8], divergence="hutchinson", probes=16, solver="rk4", steps=40,
                           generator=torch.Generator().manual_seed(k))
            for k in range(24)
        ])  # fmt: skip
    standard_error = estimates.std(0) / math.sqrt(estimates.shape[0])
    assert bool(((estimates.mean(0) - expected[:8]).abs() < 4 * standard_error + 1e-3).all())
    assert float(standard_error.max()) < 0.1
    # The samples are the closed-form transport of the source points.
    x0 = Sphere(2).random(64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x1 = model.transport(x0, solver="rk4", steps=200)
    angle = torch.acos((x0 @ mu).clamp(-1, 1))
    torch.testing.assert_close(torch.acos((x1 @ mu).clamp(-1, 1)), contracted_angle(angle),
                               atol=1e-6, rtol=0)  # fmt: skip
    # Exponential-map steps converge to the same transport, at second order (the slopes
    # are projected onto the tangent space, not corrected by the inverse of dexp).
    errors = []
    for steps in (25, 50):
        with torch.no_grad():
            moved = model.transport(x0, solver="rk4", steps=steps, step="exp")
        torch.testing.assert_close(moved.norm(dim=-1), torch.ones(64, dtype=F64))
        errors.append(float((moved - x1).norm(dim=-1).max()))
    assert errors[1] < 1e-3
    assert 3.0 < errors[0] / errors[1] < 5.0
    # ... along the great circle through mu: the same azimuth about it.
    normal = torch.linalg.cross(x0, mu.expand_as(x0))
    torch.testing.assert_close((x1 * normal).sum(-1), torch.zeros(64, dtype=F64), atol=1e-6,
                               rtol=0)  # fmt: skip
    torch.testing.assert_close(x1.norm(dim=-1), torch.ones(64, dtype=F64))


def test_the_circle_likelihood_is_the_wrapped_cauchy():
    mu = 0.7
    model = analytic_model(CircleAttraction(mu))
    phi = torch.linspace(-math.pi, math.pi, 101, dtype=F64)[:-1, None]
    rho = math.tanh(LAMBDA / 2)
    denominator = 2 * math.pi * (1 + rho**2 - 2 * rho * torch.cos(phi - mu))
    expected = torch.log((1 - rho**2) / denominator)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(phi), expected[:, 0], atol=1e-4, rtol=0)
        x0 = FlatTorus(1).random(64, generator=torch.Generator().manual_seed(2))
        x1 = model.transport(x0, solver="rk4", steps=200)
    # Angles are wrapped into [-pi, pi), and moved as the closed form says.
    assert float(x1.min()) >= -math.pi and float(x1.max()) < math.pi
    expected_angle = contracted_angle(torch.remainder(x0 - mu + math.pi, 2 * math.pi) - math.pi)
    distance = FlatTorus(1).distance(x1, expected_angle + mu)
    assert float(distance.max()) < 1e-6


def small(manifold: str, features: int, **options) -> RiemannianFlowMatching:
    torch.manual_seed(0)
    model = pushforward.build("rfm", features=features, manifold=manifold, hidden=[32, 32],
                              **options)  # fmt: skip
    return model.double()


def von_mises_fisher_points(n: int, mu: Tensor, kappa: float, seed: int) -> Tensor:
    """Exact vMF draws on S^2 (the height's inverse CDF, then a uniform azimuth)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n, dtype=F64, generator=generator)
    w = 1 + torch.log(u + (1 - u) * math.exp(-2 * kappa)) / kappa
    azimuth = 2 * math.pi * torch.rand(n, dtype=F64, generator=generator)
    r = (1 - w * w).clamp_min(0).sqrt()
    local = torch.stack([r * torch.cos(azimuth), r * torch.sin(azimuth), w], dim=-1)
    # Rotate the pole onto mu (a Householder reflection swapping e_z and mu).
    pole = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    v = pole - mu
    if float(v.norm()) < 1e-12:
        return local
    v = v / v.norm()
    return local - 2 * (local @ v)[:, None] * v


def sphere_grid(n_height: int, n_azimuth: int) -> tuple[Tensor, float]:
    """Midpoints of an equal-area grid of S^2 (height and azimuth) and each cell's area."""
    height = -1 + (torch.arange(n_height, dtype=F64) + 0.5) * (2 / n_height)
    azimuth = (torch.arange(n_azimuth, dtype=F64) + 0.5) * (2 * math.pi / n_azimuth)
    h, a = torch.meshgrid(height, azimuth, indexing="ij")
    r = (1 - h * h).sqrt()
    points = torch.stack([r * torch.cos(a), r * torch.sin(a), h], dim=-1).reshape(-1, 3)
    return points, 4 * math.pi / (n_height * n_azimuth)


@pytest.mark.slow
def test_a_trained_sphere_density_integrates_to_one_and_fits():
    mu = torch.tensor([0.6, 0.0, 0.8], dtype=F64)
    data = von_mises_fisher_points(4000, mu, 6.0, seed=3)
    model = small("sphere", 3)
    pushforward.fit(model, data, steps=300, batch_size=256, lr=3e-3, quiet=True, seed=0)
    model.eval()
    grid, area = sphere_grid(40, 80)
    with torch.no_grad():
        log_density = model.log_prob(grid)
    total = float(log_density.exp().sum() * area)
    assert abs(total - 1.0) < 0.01
    # It learned something: the density is highest near mu, far above uniform.
    best = grid[log_density.argmax()]
    assert float(best @ mu) > 0.9
    assert float(log_density.max()) > -math.log(4 * math.pi) + 1.0


@pytest.mark.slow
def test_a_trained_torus_density_integrates_to_one():
    generator = torch.Generator().manual_seed(4)
    centre = torch.tensor([2.8, -2.9], dtype=F64)  # next to the seam in both angles
    data = FlatTorus(2).project(centre + 0.4 * torch.randn(3000, 2, dtype=F64, generator=generator))
    model = small("torus", 2)
    pushforward.fit(model, data, steps=300, batch_size=256, lr=3e-3, quiet=True, seed=0)
    model.eval()
    n = 60
    edges = -math.pi + (torch.arange(n, dtype=F64) + 0.5) * (2 * math.pi / n)
    grid = torch.cartesian_prod(edges, edges)
    with torch.no_grad():
        log_density = model.log_prob(grid)
    total = float(log_density.exp().sum() * (2 * math.pi / n) ** 2)
    assert abs(total - 1.0) < 0.01
    # The mode wraps across the seam: the density is high on both sides of it.
    assert float(FlatTorus(2).distance(grid[log_density.argmax()], centre)) < 0.5


def test_rotations_have_a_density_symmetric_in_q_and_minus_q_that_integrates_to_one():
    model = small("so3", 4)
    generator = torch.Generator().manual_seed(5)
    for parameter in model.parameters():
        parameter.data.add_(0.15 * torch.randn(parameter.shape, dtype=F64, generator=generator))
    q = SO3().random(256, generator=generator)
    with torch.no_grad():
        forward = model.log_prob(q)
        backward = model.log_prob(-q)
        samples = model.sample(64)
    torch.testing.assert_close(forward, backward, atol=1e-6, rtol=0)
    assert float((forward + math.log(2 * math.pi**2)).abs().max()) > 0.05  # not uniform
    torch.testing.assert_close(samples.norm(dim=-1), torch.ones(64, dtype=F64))
    # Monte Carlo over uniform rotations: E[p / p_uniform] = 1.
    uniform = SO3().random(6_000, generator=generator)
    with torch.no_grad():
        ratio = (model.log_prob(uniform) + math.log(2 * math.pi**2)).exp()
    standard_error = float(ratio.std() / math.sqrt(ratio.numel()))
    assert abs(float(ratio.mean()) - 1.0) < max(0.02, 4 * standard_error)


def test_guided_samples_stay_on_the_manifold_and_products_work():
    torch.manual_seed(1)
    model = pushforward.build("rfm", features=4, context=2, manifold="sphere:2*torus",
                              context_dropout=0.2, hidden=[16])  # fmt: skip
    manifold = make_manifold("sphere:2*torus:1")
    assert model.manifold == manifold
    data = manifold.random(64, dtype=torch.float32)
    context = torch.randn(64, 2)
    pushforward.fit(model, data, context, steps=5, batch_size=32, quiet=True, seed=0)
    for guidance in (0.0, 5.0):
        for solver, step in (("euler", "projected"), ("rk4", "exp"), ("dopri5", "projected")):
            with torch.no_grad():
                x = model.sample(50, context[0], guidance=guidance, solver=solver, steps=3,
                                 step=step)  # fmt: skip
            torch.testing.assert_close(model.check_points(x), x)
            torch.testing.assert_close(x[:, :3].norm(dim=-1), torch.ones(50))
            assert float(x[:, 3].abs().max()) <= math.pi
    log_prob = model.log_prob(data[:8], context[:8])
    log_prob.sum().backward()
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_bad_manifold_options_are_errors_in_the_users_words():
    with pytest.raises(ValueError, match=r"unknown manifold 'spher'.*did you mean 'sphere'"):
        pushforward.build("rfm", features=3, manifold="spher")
    with pytest.raises(ValueError, match=r"so3 manifold have 4 coordinates.*data has 3 columns"):
        pushforward.build("rfm", features=3, manifold="so3")
    model = pushforward.build("rfm", features=3, manifold="sphere", hidden=[8])
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    with pytest.raises(ValueError, match=r"row 1 has norm 0\.5"):
        model.log_prob(rows)
    normalised = model.check_points(rows, normalize=True)
    assert bool(torch.isfinite(model.log_prob(normalised)).all())
    with pytest.raises(ValueError, match="step='exp' needs a fixed-step solver"):
        model.sample(3, solver="dopri5", step="exp")
    with pytest.raises(ValueError, match=r"option 'step' must be one of .*got 'expo'"):
        model.sample(3, step="expo")
    with pytest.raises(TypeError, match="ManifoldVelocity"):
        RiemannianFlowMatching(torch.nn.Linear(3, 3))  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vmf-mixture", "von-mises-torus"])
def test_a_short_training_run_fits_the_built_in_densities(name, tmp_path):
    # bench/manifold_quality.py measures the defaults at the full budget (3000 steps of
    # 512): KL 0.003 on the vMF mixture and 0.03 on the torus mixture; a tenth of the
    # steps with a smaller network already gets close.
    result = pushforward.train_run(tmp_path / "run", f"builtin:{name}", "rfm",
                                   options={"hidden": [256, 256]},
                                   train={"steps": 300, "batch_size": 512}, quiet=True)  # fmt: skip
    test = load_dataset(f"builtin:{name}", n=1000, seed=11)
    with torch.no_grad():
        log_q = result.model.eval().log_prob(test.values.float()).double()
    difference = test.toy.log_prob(test.values) - log_q
    kl, error = float(difference.mean()), float(difference.std() / math.sqrt(1000))
    assert -3 * error < kl < 0.12, (kl, error)


def test_fourier_features_keep_the_density_normalised_and_are_saved(tmp_path):
    # An untrained field on random Fourier features of the point varies on a finer
    # scale than the plain MLP's; its density must still integrate to 1 over S^2.
    model = small("sphere", 3, fourier_features=16, fourier_scale=1.5)
    assert model.network.fourier is not None
    assert tuple(model.network.fourier.projection.shape) == (3, 16)
    totals = []
    for n_height in (40, 80):
        grid, area = sphere_grid(n_height, 2 * n_height)
        with torch.no_grad():
            log_density = model.log_prob(grid)
        totals.append(float(log_density.exp().sum() * area))
    assert float(log_density.std()) > 0.5  # far from the uniform density
    # The midpoint rule is second order: Richardson's extrapolation of the two grids.
    assert abs((4 * totals[1] - totals[0]) / 3 - 1.0) < 0.01, totals
    # The frequencies are a buffer: saved with the weights, the same answers after loading.
    pushforward.save(model, tmp_path / "m")
    loaded = pushforward.load(tmp_path / "m").double()
    x = grid[:50]
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))


def test_fourier_feature_options_are_checked():
    with pytest.raises(ValueError, match="fourier_scale"):
        pushforward.build("rfm", features=3, fourier_features=4, fourier_scale=0.0)
    with pytest.raises(ValueError, match="fourier_features"):
        pushforward.build("rfm", features=3, fourier_features=-1)
