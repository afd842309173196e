"""Planar, radial and Sylvester maths, with parameters up to their invertibility edges.

The layers also run through the transform sweep (``tests.contract.TRANSFORMS``);
here the pure functions meet random parameters drawn by hypothesis, including
ones where the Jacobian nearly vanishes (:math:`w^\\top \\hat u \\to -1`,
:math:`\\hat\\beta \\to -\\alpha`, :math:`R_{ii} \\tilde R_{ii} \\to -1`): the
log-determinants against the autograd Jacobian, the inverses' residuals and
errors, and the implicit-function gradients of the root-finds by finite differences.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from pushforward.transforms.functional.tanh_residual import (
    bisection_steps,
    tanh_residual_inverse,
)
from pushforward.transforms.functional.variational import (
    PLANAR_OFFSET,
    SylvesterParameters,
    orthonormal_apply,
    orthonormal_transpose_apply,
    planar,
    planar_constraint,
    planar_inverse,
    radial,
    radial_inverse,
    sylvester,
    sylvester_inverse,
)
from pushforward.transforms.variational import Planar, Radial, Sylvester

DOUBLE = torch.float64


def jacobian_logabsdet(function, x: Tensor) -> Tensor:
    """``log|det|`` of ``function``'s Jacobian at each row of ``x``, one row at a time."""
    rows = [torch.linalg.slogdet(torch.autograd.functional.jacobian(function, row))[1] for row in x]
    return torch.stack(rows)


def row_function(map, *parameters):
    """The map of one row ``(D,) -> (D,)`` from a batched map and its shared parameters."""
    return lambda row: map(row.unsqueeze(0), *parameters)[0].squeeze(0)


def inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


# -- the scalar root-find ------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**16),
    log_gap=st.floats(-7.0, 1.0),
    magnitude=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
)
def test_the_root_find_solves_its_equation_to_the_precision_of_the_dtype(seed, log_gap, magnitude):
    generator = torch.Generator().manual_seed(seed)
    n = 64
    # a s = -1 + 10^log_gap for half the rows (the edge), random positive for the rest.
    slope = torch.exp(torch.randn(n, generator=generator, dtype=DOUBLE))
    product = torch.full((n,), -1 + 10**log_gap, dtype=DOUBLE)
    product[n // 2 :] = 5 * torch.rand(n // 2, generator=generator, dtype=DOUBLE)
    weight = product / slope * magnitude
    slope = slope / magnitude
    shift = torch.randn(n, generator=generator, dtype=DOUBLE)
    target = magnitude * torch.randn(n, generator=generator, dtype=DOUBLE)
    # Rows aimed at the flat spot, where s x + c = 0.
    target[: n // 4] = (-shift / slope)[: n // 4]
    x = tanh_residual_inverse(target, weight, slope, shift, 1 + product)
    residual = x + weight * torch.tanh(slope * x + shift) - target
    scale = target.abs() + weight.abs()
    assert (residual.abs() <= 8 * torch.finfo(DOUBLE).eps * scale).all()
    # The forward error is the residual over g' >= min(1, 1 + a s).
    assert (x - target).abs().max() <= weight.abs().max() * (1 + 1e-12)


def test_the_root_find_needs_its_halvings():
    assert bisection_steps(torch.float64) == 56 and bisection_steps(torch.float32) == 27
    # Each halving is needed: a bracket of width 2|a| = 2e3 must shrink below 1e-13.
    assert 2e3 * 2.0 ** -bisection_steps(torch.float64) < 1e-13


def test_the_root_find_differentiates_by_the_implicit_function_theorem():
    generator = torch.Generator().manual_seed(3)
    target, shift = (torch.randn(5, generator=generator, dtype=DOUBLE) for _ in range(2))
    slope = torch.exp(torch.randn(5, generator=generator, dtype=DOUBLE))
    weight = (-0.9 + 3 * torch.rand(5, generator=generator, dtype=DOUBLE)) / slope
    leaves = [v.clone().requires_grad_(True) for v in (target, weight, slope, shift)]

    def solve(t: Tensor, a: Tensor, s: Tensor, c: Tensor) -> Tensor:
        return tanh_residual_inverse(t, a, s, c, 1 + a * s)

    assert torch.autograd.gradcheck(solve, leaves)


# -- planar ----------------------------------------------------------------------------------


def planar_parameters(seed: int, features: int, log_gap: float):
    """``u, w, b`` with ``1 + w^T u_hat = 10^log_gap``, and points aimed at the flat spot."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(1, features, generator=generator, dtype=DOUBLE)
    u = torch.randn(1, features, generator=generator, dtype=DOUBLE)
    wanted = inverse_softplus(10**log_gap) - PLANAR_OFFSET
    u = u + (wanted - (w * u).sum()) * w / w.square().sum()
    b = torch.randn(1, generator=generator, dtype=DOUBLE)
    z = 2 * torch.randn(8, features, generator=generator, dtype=DOUBLE)
    # Half the rows on the hyperplane w^T z + b = 0, where the derivative is smallest.
    z[:4] -= (((w * z[:4]).sum(1, keepdim=True) + b) / w.square().sum()) * w
    return z, u, w, b


@given(seed=st.integers(0, 2**16), features=st.integers(1, 5), log_gap=st.floats(-6.0, 1.5))
def test_planar_log_determinants_match_the_jacobian(seed, features, log_gap):
    z, u, w, b = planar_parameters(seed, features, log_gap)
    u_hat, m, one_plus_m = planar_constraint(u, w)
    torch.testing.assert_close((w * u_hat).sum(-1), m, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(1 + m, one_plus_m, atol=1e-12, rtol=1e-9)
    x, logabsdet = planar(z, u, w, b)
    expected = jacobian_logabsdet(row_function(planar, u, w, b), z)
    torch.testing.assert_close(logabsdet, expected, atol=1e-8, rtol=1e-8)
    _, inverse_logabsdet = planar_inverse(x, u, w, b)
    expected = jacobian_logabsdet(row_function(planar_inverse, u, w, b), x)
    torch.testing.assert_close(inverse_logabsdet, expected, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, atol=1e-8, rtol=1e-8)


@given(seed=st.integers(0, 2**16), features=st.integers(1, 5), log_gap=st.floats(-6.0, 1.5))
def test_planar_inverse_is_exact(seed, features, log_gap):
    z, u, w, b = planar_parameters(seed, features, log_gap)
    x, _ = planar(z, u, w, b)
    back, _ = planar_inverse(x, u, w, b)
    scale = 1 + x.abs().max().item() + u.abs().max().item()
    # Backward error at the dtype's precision; forward error that over the slope's floor.
    torch.testing.assert_close(planar(back, u, w, b)[0], x, atol=1e-13 * scale, rtol=0)
    torch.testing.assert_close(back, z, atol=1e-13 * scale / 10**log_gap, rtol=0)


def test_planar_gradients_through_the_root_find():
    z, u, w, b = planar_parameters(4, 3, -1.0)
    leaves = [v.clone().requires_grad_(True) for v in (z[:3], u, w, b)]
    assert torch.autograd.gradcheck(lambda *v: planar_inverse(*v), leaves)


def test_planar_starts_at_the_identity_and_a_vanishing_w_is_finite():
    layer = Planar(3).double()
    x = torch.randn(4, 3, dtype=DOUBLE)
    for direction in (layer.forward, layer.inverse):
        y, logabsdet = direction(x)
        assert torch.equal(y, x) and torch.equal(logabsdet, torch.zeros(4, dtype=DOUBLE))
    zero = torch.zeros(1, 3, dtype=DOUBLE)
    u, b = torch.randn(1, 3, dtype=DOUBLE), torch.ones(1, dtype=DOUBLE)
    y, logabsdet = planar(x, u, zero, b)
    torch.testing.assert_close(y, x + u * math.tanh(1.0))
    back, _ = planar_inverse(y, u, zero, b)
    torch.testing.assert_close(back, x)
    # A tiny w: the correction of u stays below |u| (its rounding is not divided by |w|).
    tiny = 1e-9 * torch.randn(1, 3, dtype=DOUBLE)
    u_hat, m, _ = planar_constraint(u, tiny)
    assert u_hat.norm() <= u.norm()
    torch.testing.assert_close((tiny * u_hat).sum(-1), m, atol=1e-24, rtol=1e-12)


def test_the_planar_constraint_is_the_shifted_softplus_of_the_paper():
    a = torch.linspace(-40.0, 40.0, 2001, dtype=DOUBLE)
    w = torch.ones(a.shape[0], 1, dtype=DOUBLE)
    _, m, one_plus_m = planar_constraint(a.unsqueeze(1), w)
    paper = -1 + torch.nn.functional.softplus(a + math.log(math.e - 1))
    torch.testing.assert_close(m, paper, atol=1e-14, rtol=1e-14)
    torch.testing.assert_close(one_plus_m, 1 + paper, atol=1e-14, rtol=1e-14)
    assert (one_plus_m > 0).all() and planar_constraint(a[:1, None] * 0, w[:1])[1] == 0


# -- radial ----------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**16),
    features=st.integers(1, 5),
    alpha=st.floats(-5.0, 4.0),
    beta=st.floats(-14.0, 5.0),
)
def test_radial_log_determinants_match_the_jacobian_and_it_inverts(seed, features, alpha, beta):
    generator = torch.Generator().manual_seed(seed)
    center = torch.randn(1, features, generator=generator, dtype=DOUBLE)
    alpha_, beta_ = torch.tensor([alpha], dtype=DOUBLE), torch.tensor([beta], dtype=DOUBLE)
    # Rows near the centre, at unit distance and far out.
    z = center + torch.randn(9, features, generator=generator, dtype=DOUBLE) * torch.tensor(
        [1e-3, 1e-2, 0.1, 1, 1, 3, 10, 30, 100], dtype=DOUBLE
    ).unsqueeze(1)
    x, logabsdet = radial(z, center, alpha_, beta_)
    expected = jacobian_logabsdet(row_function(radial, center, alpha_, beta_), z)
    torch.testing.assert_close(logabsdet, expected, atol=1e-8, rtol=1e-8)
    back, inverse_logabsdet = radial_inverse(x, center, alpha_, beta_)
    expected = jacobian_logabsdet(row_function(radial_inverse, center, alpha_, beta_), x)
    torch.testing.assert_close(inverse_logabsdet, expected, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, atol=1e-9, rtol=1e-9)
    # The radius map's slope is at least softplus(beta) / softplus(alpha) (at the centre).
    softplus = torch.nn.functional.softplus
    floor = min(1.0, float(softplus(beta_) / softplus(alpha_)))
    scale = 1 + x.abs().max().item() + center.abs().max().item()
    torch.testing.assert_close(
        radial(back, center, alpha_, beta_)[0], x, atol=1e-14 * scale, rtol=0
    )
    torch.testing.assert_close(back, z, atol=1e-13 * scale / floor, rtol=0)


def test_radial_contracts_and_expands_radially():
    center = torch.zeros(1, 2, dtype=DOUBLE)
    z = torch.tensor([[3.0, 4.0]], dtype=DOUBLE)
    zero = torch.zeros(1, dtype=DOUBLE)
    # alpha = log 2, beta_hat = softplus(2) - log 2, r = 5: z' = z (1 + beta_hat / (alpha + 5)).
    x, _ = radial(z, center, zero, torch.full((1,), 2.0, dtype=DOUBLE))
    beta_hat = math.log1p(math.exp(2.0)) - math.log(2.0)
    torch.testing.assert_close(x, z * (1 + beta_hat / (math.log(2.0) + 5)))
    # At the identity parameters nothing moves.
    assert torch.equal(radial(z, center, zero, zero)[0], z)


# -- Sylvester -------------------------------------------------------------------------------


def sylvester_parameters(
    seed: int, features: int, columns: int, edge: float, batch: int = 1
) -> SylvesterParameters:
    """Random parameters whose diagonals reach ``tanh(edge) tanh(-edge)`` on some rows."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, scale: float = 1.0) -> Tensor:
        return scale * torch.randn(batch, *shape, generator=generator, dtype=DOUBLE)

    r_diagonal = normal(columns, scale=2.0)
    r_tilde_diagonal = normal(columns, scale=2.0)
    r_diagonal[..., 0], r_tilde_diagonal[..., 0] = edge, -edge
    return SylvesterParameters(
        householder=normal(features, features),
        r=normal(columns, columns, scale=0.5),
        r_tilde=normal(columns, columns, scale=0.5),
        r_diagonal=r_diagonal,
        r_tilde_diagonal=r_tilde_diagonal,
        shift=normal(columns),
    )


def test_householder_columns_are_orthonormal():
    p = sylvester_parameters(0, 5, 3, 1.0)
    eye = torch.eye(3, dtype=DOUBLE)
    q = orthonormal_apply(eye, p.householder)  # rows: Q's columns
    torch.testing.assert_close(q @ q.T, eye, atol=1e-13, rtol=0)
    y = torch.randn(4, 3, dtype=DOUBLE)
    torch.testing.assert_close(
        orthonormal_transpose_apply(orthonormal_apply(y, p.householder), p.householder, 3), y
    )


def test_the_diagonal_product_keeps_its_digits_at_the_edge():
    p = sylvester_parameters(0, 2, 2, 30.0)
    exact = p.log_one_plus_diagonal_product()[0, 0]
    # 1 + tanh(30) tanh(-30) = sech(30)^2 = 4 e^-60 / (1 + e^-60)^2, which 1 + p rounds to 0.
    torch.testing.assert_close(exact, torch.tensor(math.log(4) - 60, dtype=DOUBLE))
    moderate = sylvester_parameters(1, 3, 3, 0.7)
    a, c = moderate.r_diagonal, moderate.r_tilde_diagonal
    torch.testing.assert_close(
        moderate.log_one_plus_diagonal_product(), torch.log1p(a.tanh() * c.tanh())
    )


@given(
    seed=st.integers(0, 2**16),
    features=st.integers(1, 5),
    fewer=st.integers(0, 4),
    edge=st.floats(0.0, 7.0),
)
def test_sylvester_log_determinants_match_the_jacobian_and_it_inverts(seed, features, fewer, edge):
    columns = max(1, features - fewer)
    p = sylvester_parameters(seed, features, columns, edge)
    generator = torch.Generator().manual_seed(seed + 1)
    z = 2 * torch.randn(6, features, generator=generator, dtype=DOUBLE)
    x, logabsdet = sylvester(z, p)
    expected = jacobian_logabsdet(row_function(sylvester, p), z)
    torch.testing.assert_close(logabsdet, expected, atol=1e-8, rtol=1e-8)
    back, inverse_logabsdet = sylvester_inverse(x, p)
    expected = jacobian_logabsdet(row_function(sylvester_inverse, p), x)
    torch.testing.assert_close(inverse_logabsdet, expected, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, atol=1e-8, rtol=1e-8)
    scale = 1 + x.abs().max().item()
    torch.testing.assert_close(sylvester(back, p)[0], x, atol=1e-12 * scale, rtol=0)
    # The smallest diagonal slope, 1 + R_11 R~_11 = sech(edge)^2, bounds the forward error.
    floor = 1 / math.cosh(edge) ** 2
    torch.testing.assert_close(back, z, atol=1e-12 * scale / floor, rtol=0)


def test_sylvester_gradients_through_the_back_substitution():
    p = sylvester_parameters(2, 3, 3, 1.5, batch=2)
    fields = ("householder", "r", "r_tilde", "r_diagonal", "r_tilde_diagonal", "shift")
    z = torch.randn(2, 3, dtype=DOUBLE, requires_grad=True)
    leaves = [getattr(p, name).clone().requires_grad_(True) for name in fields]

    def inverse(z: Tensor, *values: Tensor) -> tuple[Tensor, Tensor]:
        return sylvester_inverse(z, SylvesterParameters(**dict(zip(fields, values, strict=True))))

    assert torch.autograd.gradcheck(inverse, [z, *leaves])


# -- the layers --------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [Planar(3), Radial(3), Sylvester(3), Sylvester(3, columns=1)])
def test_layers_start_at_the_identity(layer):
    layer = layer.double()
    x = torch.randn(5, 3, dtype=DOUBLE)
    for direction in (layer.forward, layer.inverse):
        y, logabsdet = direction(x)
        torch.testing.assert_close(y, x, atol=1e-15, rtol=0)
        torch.testing.assert_close(logabsdet, torch.zeros(5, dtype=DOUBLE), atol=1e-15, rtol=0)


def test_which_direction_is_cheap():
    assert not Planar(2).cheap_forward and Planar(2).cheap_inverse
    assert Radial(2).cheap_forward and Radial(2).cheap_inverse
    assert not Sylvester(2).cheap_forward and Sylvester(2).cheap_inverse


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match="columns must be between 1 and features=3, got 4"):
        Sylvester(3, columns=4)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\)"):
        Planar(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="pass context"):
        Radial(3, context=2)(torch.randn(2, 3))
