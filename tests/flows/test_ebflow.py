"""The energy-based normalizing flow (EBFlow) and its score-matching objectives.

Closed forms: the energy plus the linear log-determinants is the flow's density;
sliced score matching averages to Hyvärinen's objective; denoising score matching
fits the data's covariance plus sigma^2 I; a short run by sliced score matching fits
a Gaussian; the density integrates to one; no loss touches a determinant.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pushforward
from pushforward.flows.energy import EnergyFlow, ebflow
from pushforward.flows.flow import Flow
from pushforward.flows.score_matching import (
    OBJECTIVES,
    finite_difference_sliced_score_matching,
    sliced_score_matching,
)
from pushforward.transforms.energy import FullLinear, SmoothLeakyReLU
from pushforward.transforms.functional.smooth_leaky_relu import (
    smooth_leaky_relu,
    smooth_leaky_relu_inverse,
)
from pushforward.transforms.preprocessing import Preprocessing
from pushforward.transforms.standardize import Standardize
from tests.contract import (
    assert_invertible,
    assert_log_derivative,
    assert_logdet_matches_jacobian,
    grid_integral_2d,
    randomize_,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DETERMINANTS = ("slogdet", "det", "logdet")


def model(features: int = 2, context: int = 0, scale: float = 0.3, seed: int = 0, **options):
    torch.manual_seed(seed)
    flow = ebflow(features=features, context=context, **{"transforms": 2, **options}).double()
    randomize_(flow, scale, torch.Generator().manual_seed(seed + 1))
    return flow


def gaussian_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` rows of a correlated 2-D Gaussian, its mean and covariance."""
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    covariance = torch.tensor([[1.5, 0.6], [0.6, 0.8]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return mean + noise @ torch.linalg.cholesky(covariance).T, mean, covariance


def gaussian_log_density(x, mean, covariance):
    return torch.distributions.MultivariateNormal(mean, covariance).log_prob(x)


def model_covariance(flow: EnergyFlow) -> torch.Tensor:
    """The covariance of a flow of one linear layer, ``(W^T W)^{-1}``."""
    (layer,) = flow.layers()
    assert isinstance(layer, FullLinear)
    weight = layer.weight.detach()
    return torch.linalg.inv(weight.T @ weight)


@pytest.fixture
def no_determinants(monkeypatch):
    """Every determinant function of torch raises while the test runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("a determinant was computed")

    for name in DETERMINANTS:
        monkeypatch.setattr(torch.linalg, name, refuse, raising=False)
        monkeypatch.setattr(torch, name, refuse, raising=False)


# -- the layers ------------------------------------------------------------------------------


@pytest.mark.parametrize("context", [0, 3])
def test_full_linear_is_invertible_and_its_logdet_is_the_jacobians(context):
    generator = torch.Generator().manual_seed(0)
    layer = FullLinear(4, context, hidden=(8,), identity_init=False, generator=generator)
    layer = layer.double()
    randomize_(layer, 0.3, generator)
    x = torch.randn(16, 4, generator=generator, dtype=torch.float64)
    c = torch.randn(16, context, generator=generator, dtype=torch.float64) if context else None
    assert_invertible(layer, x, c)
    assert_logdet_matches_jacobian(layer, x, c)
    torch.testing.assert_close(
        layer.logabsdet(), torch.linalg.slogdet(layer.weight)[1], atol=0, rtol=0
    )


def test_smooth_leaky_relu_is_invertible_and_its_logdet_is_the_jacobians():
    layer = SmoothLeakyReLU(5, slope=0.3).double()
    randomize_(layer, 1.0, torch.Generator().manual_seed(1))
    x = torch.randn(32, 5, dtype=torch.float64)
    x[16:] *= 10
    assert_invertible(layer, x)
    assert_logdet_matches_jacobian(layer, x)


@pytest.mark.parametrize("slope", [0.05, 0.5, 1.0, 2.0, 20.0])
def test_the_log_derivative_is_autograds(slope):
    x = torch.linspace(-40, 40, 801, dtype=torch.float64)
    alpha = torch.tensor(slope, dtype=torch.float64)
    assert_log_derivative(lambda v: smooth_leaky_relu(v, alpha), x, atol=1e-12)
    assert_log_derivative(lambda v: smooth_leaky_relu_inverse(v, alpha), x, atol=1e-10)


@given(
    slope=st.floats(0.01, 100.0),
    magnitude=st.sampled_from([1e-3, 1.0, 10.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_the_inverse_recovers_every_input(slope, magnitude, seed):
    generator = torch.Generator().manual_seed(seed)
    x = magnitude * torch.randn(64, generator=generator, dtype=torch.float64)
    alpha = torch.tensor(slope, dtype=torch.float64)
    y, forward = smooth_leaky_relu(x, alpha)
    back, inverse = smooth_leaky_relu_inverse(y, alpha)
    torch.testing.assert_close(back, x, atol=1e-10 * (1 + magnitude), rtol=1e-12)
    torch.testing.assert_close(forward + inverse, torch.zeros_like(x), atol=1e-10, rtol=0)


def test_the_inverse_carries_gradients_to_the_input_and_the_slopes():
    layer = SmoothLeakyReLU(3, slope=0.4).double()
    y = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def inverse(values, log_slope):
        return smooth_leaky_relu_inverse(values, torch.exp(log_slope))[0]

    analytic = torch.autograd.gradcheck(inverse, (y, layer.log_slope.detach().requires_grad_()))
    assert analytic


# -- energy, normaliser, density -------------------------------------------------------------


@pytest.mark.parametrize("context", [0, 2])
def test_energy_plus_the_linear_logdets_is_the_flows_log_prob(context):
    flow = model(3, context)
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    std = torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64)
    flow.set_preprocessing(Preprocessing(Standardize(mean, std)))
    x = mean + std * torch.randn(20, 3, dtype=torch.float64)
    c = torch.randn(20, context, dtype=torch.float64) if context else None
    linear = sum(layer.logabsdet() for layer in flow.transform if isinstance(layer, FullLinear))
    torch.testing.assert_close(flow.log_normalizer(), -linear)
    unnormalized = flow.unnormalized_log_prob(x, c)
    torch.testing.assert_close(flow.log_prob(x, c), unnormalized - flow.log_normalizer())
    torch.testing.assert_close(flow.energy(x, c), -unnormalized)
    # And the plain flow of the same layers and base gives the same density.
    plain = Flow(flow.transform, flow.base, context).set_preprocessing(flow.preprocessing)
    torch.testing.assert_close(plain.log_prob(x, c), flow.log_prob(x, c))


def test_the_normalizer_does_not_depend_on_the_context():
    flow = model(2, context=2)
    x = torch.randn(30, 2, dtype=torch.float64)
    first, second = torch.randn(2, 2, dtype=torch.float64)
    gap_first = flow.log_prob(x, first) - flow.unnormalized_log_prob(x, first)
    gap_second = flow.log_prob(x, second) - flow.unnormalized_log_prob(x, second)
    torch.testing.assert_close(gap_first, gap_second)
    assert (flow.log_prob(x, first) - flow.log_prob(x, second)).abs().max() > 1e-3


@pytest.mark.parametrize("context", [0, 2])
def test_density_integrates_to_one_on_a_2d_grid(context):
    flow = model(2, context, scale=0.4, slope=0.7).eval()
    c = torch.tensor([0.3, -0.8], dtype=torch.float64) if context else None

    def log_density(points):
        with torch.no_grad():
            return flow.log_prob(points, c)

    x = torch.randn(500, 2, dtype=torch.float64)
    standard = -0.5 * x.square().sum(1) - math.log(2 * math.pi)
    assert (log_density(x) - standard).abs().mean() > 0.1  # not the base
    # Slopes near 0.4 give a long tail to the lower left: the box reaches 30.
    assert abs(grid_integral_2d(log_density, -30.0, 30.0, 600) - 1.0) < 0.01


def test_samples_have_the_log_prob_they_are_drawn_with():
    flow = model(3, scale=0.4, slope=0.5)
    samples, log_prob = flow.sample_and_log_prob(200)
    torch.testing.assert_close(flow.log_prob(samples), log_prob, atol=1e-9, rtol=1e-9)


# -- the objectives ---------------------------------------------------------------------------


def hyvarinen_objective(flow: EnergyFlow, x: torch.Tensor) -> torch.Tensor:
    """Hyvärinen's E[0.5 |s|^2 + tr grad s], the trace from the full Jacobian of the score."""

    def log_density(point):
        return flow._unnormalized_log_prob(point.unsqueeze(0), None).squeeze(0)

    score = torch.func.vmap(torch.func.grad(log_density))(x)
    hessian = torch.func.vmap(torch.func.hessian(log_density))(x)
    trace = hessian.diagonal(dim1=1, dim2=2).sum(1)
    return (0.5 * score.square().sum(1) + trace).mean()


def replicate(estimate, draws: int) -> tuple[float, float]:
    """The mean of ``draws`` seeded estimates and its standard error."""
    values = []
    for seed in range(draws):
        torch.manual_seed(seed)
        values.append(float(estimate().detach()))
    tensor = torch.tensor(values, dtype=torch.float64)
    return tensor.mean().item(), tensor.std().item() / math.sqrt(draws)


def test_sliced_score_matching_of_a_gaussian_averages_to_its_closed_form():
    # One linear layer: s(x) = -W^T (W x + b), grad s = -W^T W.
    flow = model(3, transforms=0, scale=0.5)
    (layer,) = flow.layers()
    assert isinstance(layer, FullLinear)
    weight, bias = layer.weight.detach(), layer.bias.detach()
    x = torch.randn(50, 3, dtype=torch.float64)
    score = -(x @ weight.T + bias) @ weight
    closed_form = (0.5 * score.square().sum(1)).mean() - torch.trace(weight.T @ weight)
    mean, error = replicate(
        lambda: sliced_score_matching(flow._unnormalized_log_prob, x, projections=4), 400
    )
    assert error > 0
    assert abs(mean - closed_form.item()) < 4 * error


@pytest.mark.parametrize("projections", [1, 3])
def test_sliced_score_matching_averages_to_hyvarinens_objective(projections):
    flow = model(2, scale=0.4, slope=0.6)
    x = 1.5 * torch.randn(40, 2, dtype=torch.float64)
    exact = hyvarinen_objective(flow, x).item()
    if projections == 1:
        mean, error = replicate(lambda: flow._loss(x, None), 300)  # the model's own loss
    else:
        mean, error = replicate(
            lambda: sliced_score_matching(flow._unnormalized_log_prob, x, None, projections), 300
        )
    assert abs(mean - exact) < 4 * error


def test_finite_differences_average_to_hyvarinens_objective():
    flow = model(2, scale=0.4, slope=0.6)
    x = 1.5 * torch.randn(40, 2, dtype=torch.float64)
    exact = hyvarinen_objective(flow, x).item()
    mean, error = replicate(
        lambda: finite_difference_sliced_score_matching(
            flow._unnormalized_log_prob, x, None, projections=4, step=1e-3
        ),
        300,
    )
    # The O(h^2) bias at h = 1e-3 is far below the sampling error.
    assert abs(mean - exact) < 4 * error + 1e-4


def test_denoising_score_matching_fits_the_data_covariance_plus_sigma_squared():
    sigma = 0.5
    x, _, covariance = gaussian_data(20_000, seed=3)
    flow = ebflow(features=2, transforms=0, objective="dsm", sigma=sigma).double()
    optimizer = torch.optim.LBFGS(flow.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        torch.manual_seed(11)  # the same noise at every evaluation: a fixed objective
        loss = flow.loss(x)
        loss.backward()
        return loss

    optimizer.step(closure)
    empirical = torch.cov(x.T)
    expected = empirical + sigma**2 * torch.eye(2, dtype=torch.float64)
    fitted = model_covariance(flow)
    # Within the noise of 20,000 draws of the noise, and far from the covariance itself.
    torch.testing.assert_close(fitted, expected, atol=0.03, rtol=0.0)
    assert (fitted - covariance).abs().max() > 0.2


def test_a_short_run_of_sliced_score_matching_fits_a_gaussian():
    train, mean, covariance = gaussian_data(4096, seed=0)
    held_out, _, _ = gaussian_data(4096, seed=1)
    torch.manual_seed(0)
    flow = ebflow(features=2, transforms=1, objective="ssm", projections=2).double()
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-2)
    generator = torch.Generator().manual_seed(2)
    for _ in range(400):
        batch = train[torch.randint(0, train.shape[0], (256,), generator=generator)]
        optimizer.zero_grad()
        flow.loss(batch).backward()
        optimizer.step()
    with torch.no_grad():
        fitted = flow.log_prob(held_out).mean().item()
    true = gaussian_log_density(held_out, mean, covariance).mean().item()
    assert abs(fitted - true) < 0.05
    samples = flow.sample(20_000)
    torch.testing.assert_close(torch.cov(samples.T), covariance, atol=0.15, rtol=0.0)


@pytest.mark.parametrize("objective", ["ssm", "dsm", "fdssm"])
@pytest.mark.parametrize("context", [0, 2])
def test_score_matching_losses_and_gradients_compute_no_determinant(
    objective, context, no_determinants
):
    flow = model(4, context, objective=objective, projections=2)
    x = torch.randn(16, 4, dtype=torch.float64)
    c = torch.randn(16, context, dtype=torch.float64) if context else None
    loss = flow.loss(x, c)
    loss.backward()
    weights = [layer.weight for layer in flow.transform if isinstance(layer, FullLinear)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)


def test_maximum_likelihood_does_compute_them(no_determinants):
    # The same guard catches the likelihood's slogdet: the patch is in force.
    flow = model(2, objective="ml")
    with pytest.raises(AssertionError, match="determinant"):
        flow.loss(torch.randn(8, 2, dtype=torch.float64))


def test_maximum_likelihood_is_the_mean_negative_log_likelihood():
    flow = model(3, objective="ml")
    x = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(flow.loss(x), -flow.log_prob(x).mean())


def test_losses_work_under_no_grad_as_validation_runs_them():
    flow = model(2)
    x = torch.randn(8, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(0)
        quiet = flow.loss(x)
    torch.manual_seed(0)
    torch.testing.assert_close(quiet, flow.loss(x))


# -- building ---------------------------------------------------------------------------------


def test_build_registers_the_model_and_stores_its_options():
    flow = pushforward.build("ebflow", features=3, transforms=1, objective="dsm", sigma=0.2)
    assert isinstance(flow, EnergyFlow)
    assert flow.config["options"]["objective"] == "dsm"
    assert flow.objective.sigma == 0.2
    kinds = [type(layer) for layer in flow.transform]
    assert kinds == [FullLinear, SmoothLeakyReLU, FullLinear]


def test_unknown_objective_is_an_error_listing_the_valid_ones():
    with pytest.raises(ValueError) as error:
        ebflow(features=2, objective="nce")
    message = str(error.value)
    assert "'objective'" in message and "'nce'" in message
    assert all(repr(name) in message for name in OBJECTIVES)


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("base", "uniform", "'normal'"),
        ("sigma", 0.0, "'sigma' must be a positive number"),
        ("projections", 0, "'projections' must be an integer >= 1"),
        ("transforms", -1, "'transforms' must be an integer >= 0"),
        ("slope", -1.0, "'slope' must be a positive number"),
    ],
)
def test_bad_options_are_errors_naming_them(option, value, words):
    with pytest.raises(ValueError, match=words):
        ebflow(features=2, **{option: value})


@given(
    objective=st.sampled_from(["ssm", "dsm", "fdssm"]),
    magnitude=st.sampled_from([1e-3, 1.0, 1e2, 1e4]),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_losses_and_gradients_are_finite_far_from_the_data(objective, magnitude, double, seed):
    # Third derivatives of the log-derivative enter the sliced loss's gradient: they must
    # not turn into NaN where the sigmoid saturates.
    dtype = torch.float64 if double else torch.float32
    flow = model(3, objective=objective, seed=seed, scale=0.2).to(dtype)
    x = magnitude * torch.randn(8, 3, dtype=dtype)
    loss = flow.loss(x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)
