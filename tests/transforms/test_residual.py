"""Invertible residual blocks: Lipschitz bounds, log-determinant estimators, inversion.

The contract sweep (``tests/transforms/test_transform_contract.py``) checks the round
trips and the exact log-determinant against the autograd Jacobian; here are the
checks particular to residual blocks: the spectral normalisation against the exact
spectral norm, the Russian-roulette estimate and the Neumann gradient unbiased
against the brute-force log-determinant, and the fixed-point inverse.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.transforms.lipschitz import LipSwish, SpectralNormLinear, lipschitz_coefficient
from pushforward.transforms.residual import LogDeterminantEstimator, ResidualBlock
from tests.contract import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


def block(
    features: int = 2,
    hidden: tuple[int, ...] = (16, 16),
    context: int = 0,
    coefficient: float = 0.9,
    scale: float = 0.5,
    seed: int = 0,
    **options,
) -> ResidualBlock:
    """A float64 block in evaluation mode, its weights perturbed so Lip(g) nears its bound."""
    torch.manual_seed(seed)
    layer = ResidualBlock(features, hidden, context, coefficient, **options).double()
    randomize_(layer, scale, torch.Generator().manual_seed(seed + 1))
    return layer.eval()


def aligned_block(features: int = 2, ratio: float = 0.75) -> ResidualBlock:
    """A block whose Jacobian is nearly ``0.9 ratio W^T W``: eigenvalues up to about 0.55.

    Biases of 4 put LipSwish in its near-linear range (slope about 0.96), and the second
    layer's weight is the first's transposed, so the eigenvalues are real, positive and
    large, and the log-determinant (about 0.6) needs many terms of its series.
    """
    layer = block(features, (16,), coefficient=0.95, scale=0.0)
    first, second = layer.network.linears
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(16, features, generator=generator).double()
    weight = 0.9 * weight / torch.linalg.matrix_norm(weight, 2)
    with torch.no_grad():
        first.weight.copy_(weight)
        first.bias.fill_(4.0)
        second.weight.copy_(ratio * weight.t())
    return layer


def rows(n: int, features: int = 2, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed)).double()


# -- spectral normalisation and the Lipschitz bound ---------------------------------------


def test_power_iteration_estimates_the_exact_spectral_norm():
    torch.manual_seed(0)
    layer = SpectralNormLinear(5, 7, coefficient=0.8).double()
    with torch.no_grad():
        layer.weight.mul_(3.0)  # far above the bound, so the rescaling acts
    exact = torch.linalg.matrix_norm(layer.weight.detach(), 2)
    torch.testing.assert_close(layer.spectral_norm_estimate(), exact, rtol=1e-8, atol=0)
    normalized = torch.linalg.matrix_norm(layer.normalized_weight().detach(), 2)
    assert abs(float(normalized) - 0.8) < 1e-8


def test_a_weight_inside_the_bound_is_left_as_it_is():
    torch.manual_seed(0)
    layer = SpectralNormLinear(4, 4, coefficient=0.9).double()
    with torch.no_grad():
        layer.weight.mul_(0.1 / torch.linalg.matrix_norm(layer.weight, 2))
    torch.testing.assert_close(layer.normalized_weight(), layer.weight, atol=0, rtol=0)


def test_training_passes_refine_the_stored_vectors_and_others_do_not():
    torch.manual_seed(0)
    layer = SpectralNormLinear(6, 6, iterations=1).double()
    with torch.no_grad():
        layer.weight.add_(torch.randn(6, 6).double())  # the stored vectors are now stale
    stored = layer.u.clone()
    layer.eval()
    layer.normalized_weight()
    assert torch.equal(layer.u, stored)
    layer.train()
    with torch.no_grad():
        layer.normalized_weight()
    assert torch.equal(layer.u, stored)
    for _ in range(200):
        layer.normalized_weight()
    assert not torch.equal(layer.u, stored)
    exact = torch.linalg.matrix_norm(layer.weight.detach(), 2)
    torch.testing.assert_close(layer.spectral_norm_estimate(), exact, rtol=1e-8, atol=0)


@pytest.mark.parametrize(("hidden", "context"), [((16, 16), 0), ((8,), 3)])
def test_every_block_is_lipschitz_below_its_coefficient(hidden, context):
    coefficient = 0.9
    layer = block(4, hidden, context, coefficient, scale=1.0)
    for linear in layer.network.linears:
        exact = torch.linalg.matrix_norm(linear.weight.detach(), 2)
        torch.testing.assert_close(linear.spectral_norm_estimate(), exact, rtol=1e-4, atol=0)
        normalized = torch.linalg.matrix_norm(linear.normalized_weight().detach(), 2)
        assert float(normalized) <= coefficient * (1 + 1e-6)
    bound = layer.network.lipschitz_bound()
    assert bound <= coefficient ** (len(hidden) + 1) * (1 + 1e-5) < coefficient
    # The bound holds for the Jacobian w.r.t. x at random points, and for differences.
    x = 3 * rows(64, 4)
    c = rows(64, context, seed=4) if context else None
    layers = layer.network.layers()

    def g_row(row, condition=None):
        return layer.network.evaluate(row, condition, layers)

    arguments = (x,) if c is None else (x, c)
    jacobians = torch.func.vmap(torch.func.jacrev(g_row))(*arguments)
    assert float(torch.linalg.matrix_norm(jacobians.detach(), 2).max()) <= bound * (1 + 1e-9)
    other = x + 0.5 * rows(64, 4, seed=5)
    with torch.no_grad():
        difference = layer.network.evaluate(x, c, layers) - layer.network.evaluate(other, c, layers)
    ratio = difference.norm(dim=1) / (x - other).norm(dim=1)
    assert float(ratio.max()) <= bound * (1 + 1e-9)


@pytest.mark.parametrize("value", [1.0, 1.5, 0.0, -0.2, True, "0.5"])
def test_a_coefficient_outside_the_unit_interval_is_an_error_naming_it(value):
    with pytest.raises(ValueError, match="option 'coefficient'") as error:
        lipschitz_coefficient(value)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="option 'coefficient'"):
        ResidualBlock(2, (8,), coefficient=value)


def test_lipswish_is_one_lipschitz_for_every_beta():
    activation = LipSwish(5).double()
    with torch.no_grad():
        activation.raw_beta.copy_(torch.tensor([-3.0, -1.0, 0.0, 2.0, 8.0]).double())
    x = torch.linspace(-20, 20, 20001).double().unsqueeze(1).expand(-1, 5).requires_grad_(True)
    (derivative,) = torch.autograd.grad(activation(x).sum(), x)
    assert float(derivative.abs().max()) <= 1.0
    assert float(derivative.abs().max()) > 0.99  # and the bound is nearly reached


# -- the log-determinant estimators ---------------------------------------------------------


def exact_logdet(layer: ResidualBlock, x: torch.Tensor) -> torch.Tensor:
    """Brute force: log|det| of I + the autograd Jacobian of g, row by row."""
    layers = layer.network.layers()
    jacobians = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda r: layer.network.evaluate(r, None, layers), row, create_graph=True
            )
            for row in x
        ]
    )
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.slogdet(eye + jacobians)[1]


@pytest.mark.parametrize(
    ("stopping", "exact_terms"), [("poisson", 1), ("geometric", 0), ("geometric", 2)]
)
def test_the_russian_roulette_estimate_is_unbiased(stopping, exact_terms):
    layer = aligned_block()
    x = rows(4)
    expected = exact_logdet(layer, x).detach()
    _, exact = layer.forward_with(x, None, LogDeterminantEstimator("exact"))
    torch.testing.assert_close(exact, expected, atol=1e-10, rtol=0)
    assert float(expected.min()) > 0.3  # a log-determinant worth estimating
    estimator = LogDeterminantEstimator(
        "estimate",
        exact_terms=exact_terms,
        stopping=stopping,
        roulette_mean=1.0,
        generator=torch.Generator().manual_seed(7),
    )
    with torch.no_grad():
        draws = torch.stack([layer.forward_with(x, None, estimator)[1] for _ in range(1000)])
    error = draws.std(dim=0) / draws.shape[0] ** 0.5
    assert ((draws.mean(dim=0) - expected).abs() < 3 * error).all()
    # Truncating the series after the expected number of terms would be biased by more.
    truncated = exact_terms + 1
    assert float(error.max()) < 0.2 * truncated_bias(layer, x, truncated)


def truncated_bias(layer: ResidualBlock, x: torch.Tensor, terms: int) -> float:
    """The smallest error over rows of the series cut after ``terms`` exact terms."""
    layers = layer.network.layers()
    jacobians = torch.func.vmap(
        torch.func.jacrev(lambda r: layer.network.evaluate(r, None, layers))
    )(x).detach()
    power, series = torch.eye(x.shape[1], dtype=x.dtype).expand_as(jacobians), 0.0
    for k in range(1, terms + 1):
        power = power @ jacobians
        series = series + (-1) ** (k + 1) / k * torch.diagonal(power, dim1=-2, dim2=-1).sum(-1)
    return float((series - exact_logdet(layer, x).detach()).abs().min())


def test_the_neumann_gradient_is_unbiased():
    layer = aligned_block(ratio=0.6)
    x = rows(3).requires_grad_(True)
    first, second = layer.network.linears
    parameters = [x, first.weight, second.weight, layer.network.activations[0].raw_beta]
    exact = torch.autograd.grad(exact_logdet(layer, x).sum(), parameters)
    estimator = LogDeterminantEstimator("estimate", generator=torch.Generator().manual_seed(8))
    draws = []
    for _ in range(1500):
        _, logdet = layer.forward_with(x, None, estimator)
        draws.append(
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(logdet.sum(), parameters)])
        )
    gradients = torch.stack(draws)
    expected = torch.cat([g.reshape(-1) for g in exact])
    error = gradients.std(dim=0) / gradients.shape[0] ** 0.5
    z = (gradients.mean(dim=0) - expected) / (error + 1e-12)
    # 86 components: each within 4 standard errors, and their spread that of N(0, 1).
    assert float(z.abs().max()) < 4
    assert float(z.square().mean()) < 2
    assert float(expected.abs().max()) > 0.1


def test_the_estimate_needs_no_graph_of_its_own_without_gradients():
    layer = block()
    estimator = LogDeterminantEstimator("estimate", generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, logdet = layer.forward_with(rows(5), None, estimator)
    assert not y.requires_grad and not logdet.requires_grad


# -- the inverse -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exact", "estimate"])
def test_inversion_recovers_x(mode):
    layer = block(3, coefficient=0.97, scale=1.0)
    x = 4 * rows(32, 3)
    estimator = dataclasses.replace(layer.estimator, mode=mode)
    with torch.no_grad():
        y, _ = layer(x)
        x_back, _ = layer.inverse_with(y, None, estimator)
    assert float((x_back - x).abs().max()) < 1e-5
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 30.0),
    coefficient=st.floats(0.1, 0.99),
)
def test_inversion_recovers_random_inputs(seed, scale, coefficient):
    layer = block(2, (8,), coefficient=coefficient, scale=0.5, seed=seed % 7)
    x = scale * rows(8, seed=seed)
    with torch.no_grad():
        y, logdet = layer(x)
        x_back, inverse_logdet = layer.inverse(y)
    torch.testing.assert_close(x_back, x, atol=1e-9 * (1 + scale), rtol=0)
    torch.testing.assert_close(inverse_logdet, -logdet, atol=1e-9, rtol=0)


def test_an_unconverged_inverse_names_both_settings():
    layer = block(max_iterations=2)
    y, _ = layer(rows(4))
    with pytest.raises(ValueError, match="max_iterations=2") as error:
        layer.inverse(y.detach())
    assert "tolerance=1e-13" in str(error.value) and "\n" not in str(error.value)


def test_the_implicit_gradient_of_the_estimate_mode_inverse_is_the_exact_one():
    layer = block(3, scale=1.0)
    y = rows(5, 3).requires_grad_(True)
    weight = layer.network.linears[0].weight
    estimate = dataclasses.replace(layer.estimator, mode="estimate")
    gradients = {}
    for name, estimator in (("exact", layer.estimator), ("estimate", estimate)):
        x = layer._solve(y, None, layer.network.layers(), estimator.mode)
        gradients[name] = torch.autograd.grad((x * torch.arange(3.0).double()).sum(), [y, weight])
    for exact, implicit in zip(gradients["exact"], gradients["estimate"], strict=True):
        torch.testing.assert_close(implicit, exact, atol=1e-9, rtol=1e-9)


def test_a_conditional_block_reads_its_context():
    layer = block(2, (8,), context=3, scale=1.0)
    x, c = rows(6), rows(6, 3, seed=9)
    with torch.no_grad():
        y, _ = layer(x, c)
        other, _ = layer(x, c.flip(0))
        x_back, _ = layer.inverse(y, c)
    assert not torch.allclose(y, other)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="pass context"):
        layer(x)
