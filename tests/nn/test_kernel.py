"""The kernel conditioner: its expansion against an explicit sum, its kernels, its start."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.nn.kernel import (
    KERNELS,
    KernelConditioner,
    kernel_matrix,
    scaled_squared_distance,
)


def explicit_kernel(kernel: str, x: torch.Tensor, z: torch.Tensor, ell: torch.Tensor) -> float:
    """``k(x, z)`` of one pair of points, written out from the textbook formulas."""
    r = math.sqrt(sum(((x[j] - z[j]) / ell[j]).item() ** 2 for j in range(x.numel())))
    if kernel == "rbf":
        return math.exp(-0.5 * r * r)
    if kernel == "matern32":
        return (1 + math.sqrt(3) * r) * math.exp(-math.sqrt(3) * r)
    if kernel == "matern52":
        return (1 + math.sqrt(5) * r + 5 * r * r / 3) * math.exp(-math.sqrt(5) * r)
    raise AssertionError(kernel)


def randomized(conditioner: KernelConditioner, seed: int = 0) -> KernelConditioner:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in conditioner.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    return conditioner


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_output_is_the_explicit_kernel_sum(kernel):
    torch.manual_seed(0)
    conditioner = randomized(KernelConditioner(3, 4, inducing=5, kernel=kernel)).double()
    h = torch.randn(6, 3, dtype=torch.float64)
    # One input on an inducing point: r = 0 exactly.
    h[0] = conditioner.inducing_points[2].detach()
    with torch.no_grad():
        output = conditioner(h)
    z, alpha = conditioner.inducing_points.detach(), conditioner.coefficients.detach()
    ell = conditioner.length_scale.detach()
    for b in range(h.shape[0]):
        for o in range(4):
            expected = sum(
                alpha[m, o].item() * explicit_kernel(kernel, h[b], z[m], ell) for m in range(5)
            )
            assert output[b, o].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_coefficients_start_at_zero_and_redraw():
    conditioner = KernelConditioner(2, 3, inducing=8)
    h = torch.randn(10, 2)
    assert torch.equal(conditioner(h), torch.zeros(10, 3))
    conditioner.initialize_last_layer("random")
    bound = 1 / math.sqrt(8)
    assert conditioner.coefficients.abs().max() <= bound
    assert conditioner(h).abs().max() > 0
    conditioner.initialize_last_layer("zero")
    assert torch.equal(conditioner(h), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="'zero', 'random'"):
        conditioner.initialize_last_layer("ones")


def test_unknown_kernel_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'rbf', 'matern32', 'matern52'"):
        KernelConditioner(2, 2, kernel="gaussian")
    with pytest.raises(ValueError, match="valid kernels"):
        kernel_matrix(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(2), "laplace")


def test_bad_sizes_and_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one inducing point"):
        KernelConditioner(2, 2, inducing=0)
    with pytest.raises(ValueError, match="length_scale"):
        KernelConditioner(2, 2, length_scale=0.0)
    with pytest.raises(ValueError, match="inducing_init"):
        KernelConditioner(2, 2, inducing_init="kmeans")
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        KernelConditioner(2, 2)(torch.zeros(4, 3))


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_gradient_is_finite_and_zero_on_an_inducing_point(kernel):
    # sqrt(r^2) has an infinite slope at 0: the Matérn kernels clamp before it.
    conditioner = randomized(KernelConditioner(2, 1, inducing=3, kernel=kernel)).double()
    h = conditioner.inducing_points[:1].detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(conditioner.gram(h)[0, 0], h)
    assert torch.equal(gradient, torch.zeros_like(gradient))
    # Near it the gradient is the closed form's: Matérn 3/2's is -3 e^{-sqrt3 r} (x - z) / l^2.
    z = conditioner.inducing_points[0].detach()
    ell = conditioner.length_scale.detach()
    h = (z + 1e-3).unsqueeze(0).requires_grad_(True)
    (gradient,) = torch.autograd.grad(conditioner.gram(h)[0, 0], h)
    assert torch.isfinite(gradient).all()
    if kernel == "matern32":
        r = math.sqrt(3) * torch.sqrt((((h.detach() - z) / ell) ** 2).sum())
        expected = -3 * torch.exp(-r) * (h.detach() - z) / ell**2
        torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(
    kernel=st.sampled_from(sorted(KERNELS)),
    points=st.integers(1, 12),
    dimension=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_gram_matrix_is_symmetric_positive_semidefinite(kernel, points, dimension, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(points, dimension, generator=generator, dtype=torch.float64)
    ell = torch.exp(torch.randn(dimension, generator=generator, dtype=torch.float64))
    gram = kernel_matrix(x, x, ell, kernel)
    torch.testing.assert_close(gram, gram.T, atol=1e-15, rtol=0)
    torch.testing.assert_close(gram.diagonal(), torch.ones(points, dtype=torch.float64))
    assert ((gram > 0) & (gram <= 1)).all()
    assert torch.linalg.eigvalsh(gram).min() > -1e-10


def test_scaled_distance_follows_the_length_scales():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    ell = torch.tensor([0.5, 4.0], dtype=torch.float64)
    expected = torch.tensor([[4.0 + 0.25, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(scaled_squared_distance(x, z, ell), expected)


def test_data_dependent_initialisation_takes_rows_of_the_first_batch():
    torch.manual_seed(0)
    conditioner = KernelConditioner(2, 2, inducing=5, inducing_init="data")
    assert conditioner.awaits_data
    assert not KernelConditioner(2, 2).awaits_data
    before = conditioner.inducing_points.detach().clone()
    h = 10 + torch.randn(3, 2)  # fewer rows than points: the rest stay normal draws
    conditioner(h)
    assert torch.equal(conditioner.inducing_points, before)  # not asked to initialise
    conditioner.initialize_on_next_forward()
    conditioner(h)
    assert not conditioner.awaits_data
    chosen = conditioner.inducing_points.detach()
    assert sorted(chosen[:3].tolist()) == sorted(h.tolist())
    assert chosen[3:].abs().max() < 6
    reloaded = KernelConditioner(2, 2, inducing=5, inducing_init="data")
    reloaded.load_state_dict(conditioner.state_dict())
    assert not reloaded.awaits_data


def test_dtype_follows_the_module():
    conditioner = randomized(KernelConditioner(3, 2, kernel="matern52")).double()
    output = conditioner(torch.randn(4, 3, dtype=torch.float64))
    assert output.dtype == torch.float64
    assert conditioner.initialized.dtype == torch.bool
