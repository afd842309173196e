"""The rational-quadratic spline kernel: against zuko, closed forms, autograd and edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from zuko.transforms import MonotonicRQSTransform

from pushforward.transforms.functional.spline import (
    packed_rational_quadratic_spline,
    rational_quadratic_spline,
)
from pushforward.transforms.functional.spline_parameterization import (
    SPLINE_PARAMETERIZATIONS,
    soft_clip,
    spline_knots,
)
from pushforward.transforms.functional.spline_table import knots_from_probabilities
from pushforward.transforms.maps import RationalQuadraticSplineMap
from tests.contract import (
    LOG_2PI,
    assert_elementwise_round_trip,
    assert_log_derivative,
    grid_integral_1d,
)

BOUND = 3.0
PARAMETERIZATIONS = list(SPLINE_PARAMETERIZATIONS)


def raw_params(shape, bins, dtype=torch.float64, scale=1.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, 3 * bins - 1, generator=generator, dtype=dtype)


def spline(x, params, inverse=False, bound=BOUND, **kwargs):
    return packed_rational_quadratic_spline(x, params, inverse=inverse, tail_bound=bound, **kwargs)


def zuko_transform(params, bins, bound=BOUND):
    """zuko's spline from the same raw parameters: its own parameterisation, our "soft-clip"."""
    widths, heights, derivatives = params.split([bins, bins, bins - 1], dim=-1)
    return MonotonicRQSTransform(widths, heights, derivatives, bound=bound)


def zuko_with_our_knots(params, bins, bound=BOUND, parameterization="minimum"):
    """zuko's transform with its knots overwritten by ours (same boundary slopes and tails)."""
    widths, heights, derivatives = params.split([bins, bins, bins - 1], dim=-1)
    transform = MonotonicRQSTransform(widths, heights, derivatives, bound=bound)
    knots_x, knots_y, knot_derivatives = spline_knots(
        widths, heights, derivatives, bound, parameterization=parameterization
    )
    transform.horizontal, transform.vertical, transform.derivatives = (
        knots_x,
        knots_y,
        knot_derivatives,
    )
    return transform


def make_inputs(n=400, seed=1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = 2 * BOUND * torch.randn(n, generator=generator, dtype=dtype)  # ~1/3 outside
    return x


@pytest.mark.parametrize("bins", [1, 2, 5, 8])
@pytest.mark.parametrize("scale", [1.5, 30.0])
def test_soft_clip_is_zukos_spline_from_the_same_raw_parameters(bins, scale):
    # No knots copied across: zuko's MonotonicRQSTransform parameterises its spline
    # itself, from the same raw values; scale 30 reaches deep into the soft clip.
    x = make_inputs()
    params = raw_params(x.shape, bins, scale=scale, seed=bins)
    reference = zuko_transform(params, bins)
    y, logabsdet = spline(x, params, parameterization="soft-clip")
    y_ref, logabsdet_ref = reference.call_and_ladj(x)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(logabsdet, logabsdet_ref, atol=1e-6, rtol=0)
    x_back, inverse_logabsdet = spline(y, params, inverse=True, parameterization="soft-clip")
    x_ref, inverse_logabsdet_ref = reference.inv.call_and_ladj(y_ref)
    torch.testing.assert_close(x_back, x_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(inverse_logabsdet, inverse_logabsdet_ref, atol=1e-6, rtol=0)
    # And our reference knots are zuko's knots.
    knots = spline_knots(
        *params.split([bins, bins, bins - 1], dim=-1), BOUND, parameterization="soft-clip"
    )
    zukos = (reference.horizontal, reference.vertical, reference.derivatives)
    for ours, theirs in zip(knots, zukos, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bins", [1, 2, 5, 8])
def test_matches_zuko_forward_and_inverse(bins):
    # "minimum" is not zuko's parameterisation: zuko evaluates our knots.
    x = make_inputs()
    params = raw_params(x.shape, bins)
    reference = zuko_with_our_knots(params, bins)
    y, logabsdet = spline(x, params)
    y_ref, logabsdet_ref = reference.call_and_ladj(x)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(logabsdet, logabsdet_ref, atol=1e-6, rtol=0)
    x_back, inverse_logabsdet = spline(y, params, inverse=True)
    x_ref, inverse_logabsdet_ref = reference.inv.call_and_ladj(y_ref)
    torch.testing.assert_close(x_back, x_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(inverse_logabsdet, inverse_logabsdet_ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_autograd_through_zuko(inverse, parameterization):
    # The kernel's closed-form backward against autograd through zuko's formulas:
    # with "soft-clip", zuko's own parameterisation end to end; with "minimum", knots
    # built by our differentiable reference spline_knots.
    bins = 6
    x = make_inputs(n=200, seed=2)
    params = raw_params(x.shape, bins, seed=3, scale=4.0)
    upstream = torch.randn(2, *x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)

    def gradients(function):
        xg = x.clone().requires_grad_(True)
        pg = params.clone().requires_grad_(True)
        out, logabsdet = function(xg, pg)
        loss = (upstream[0] * out).sum() + (upstream[1] * logabsdet).sum()
        return torch.autograd.grad(loss, (xg, pg))

    def ours(xg, pg):
        return spline(xg, pg, inverse=inverse, parameterization=parameterization)

    def zukos(xg, pg):
        if parameterization == "soft-clip":
            transform = zuko_transform(pg, bins)
        else:
            transform = zuko_with_our_knots(pg, bins)
        return (transform.inv if inverse else transform).call_and_ladj(xg)

    for got, expected in zip(gradients(ours), gradients(zukos), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck_and_gradgradcheck(inverse, parameterization):
    # Inside, near the bound and outside; few points keep gradgradcheck quick. Raw
    # values of both signs up to ~3 exercise the soft clip's |v| on either side.
    x = torch.tensor([-2.9, 0.7, 1.9, 3.5], dtype=torch.float64, requires_grad=True)
    params = raw_params(x.shape, 3, scale=1.5).requires_grad_(True)

    def function(x, params):
        return spline(x, params, inverse=inverse, parameterization=parameterization)

    assert torch.autograd.gradcheck(function, (x, params))
    assert torch.autograd.gradgradcheck(function, (x, params))


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("inverse", [False, True])
def test_logabsdet_is_the_autograd_derivative(inverse, parameterization):
    x = make_inputs(seed=5)
    params = raw_params(x.shape, 8, seed=6)
    assert_log_derivative(
        lambda v: spline(v, params, inverse=inverse, parameterization=parameterization),
        x,
        atol=1e-10,
    )


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("transform", ["jacrev", "jacfwd"])
def test_logabsdet_matches_torch_func_jacobian(transform, parameterization):
    # torch.func transforms run the kernel as plain differentiable ops; include the
    # bounds themselves, where the last knot may round to one ulp below B.
    x = torch.cat([make_inputs(n=6, seed=7), torch.tensor([-BOUND, BOUND], dtype=torch.float64)])
    params = raw_params(x.shape, 5, seed=8)
    jacobian_of = getattr(torch.func, transform)
    options = {"parameterization": parameterization}
    for inverse in (False, True):
        jacobian = jacobian_of(
            lambda v, inverse=inverse: spline(v, params, inverse=inverse, **options)[0]
        )(x)
        _, logabsdet = spline(x, params, inverse=inverse, **options)
        torch.testing.assert_close(jacobian, torch.diag(logabsdet.exp()), atol=1e-12, rtol=0)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_parameter_jacobian_under_torch_func_matches_autograd(parameterization):
    # jacrev w.r.t. the raw parameters takes the plain-ops path; the Function's
    # closed-form backward must agree with it.
    x = make_inputs(n=5, seed=24)
    params = raw_params(x.shape, 4, seed=25, scale=2.0)
    options = {"parameterization": parameterization}
    for inverse in (False, True):
        jacobian = torch.func.jacrev(
            lambda p, inverse=inverse: spline(x, p, inverse=inverse, **options)[0].sum()
        )(params)
        pg = params.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(spline(x, pg, inverse=inverse, **options)[0].sum(), pg)
        torch.testing.assert_close(jacobian, gradient, atol=1e-12, rtol=0)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_vmap_matches_batched_call(parameterization):
    x = make_inputs(n=12, seed=22).view(3, 4)
    params = raw_params(x.shape, 4, seed=23)
    options = {"parameterization": parameterization}
    for inverse in (False, True):
        mapped = torch.func.vmap(
            lambda a, b, inverse=inverse: spline(a, b, inverse=inverse, **options)
        )(x, params)
        expected = spline(x, params, inverse=inverse, **options)
        for got, want in zip(mapped, expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-14, rtol=0)


def knots_of(params, bins, bound=BOUND, parameterization="minimum"):
    """Knot positions of one element's spline on both axes."""
    knots_x, knots_y, _ = spline_knots(
        *params.split([bins, bins, bins - 1], dim=-1), bound, parameterization=parameterization
    )
    return knots_x, knots_y


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_invertible_including_knots_and_tails(dtype, atol, parameterization):
    bins = 8
    x = make_inputs(n=300, seed=9, dtype=dtype)
    x = torch.cat([x, torch.tensor([-1e4, -50.0, -BOUND, BOUND, 7.0, 1e4], dtype=dtype)])
    params = raw_params(x.shape, bins, dtype=dtype, scale=1.0, seed=10)
    options = {"parameterization": parameterization}
    assert_elementwise_round_trip(
        lambda v: spline(v, params, **options),
        lambda v: spline(v, params, inverse=True, **options),
        x,
        atol=atol,
        logdet_atol=10 * atol,
    )
    # Exactly at the knots, in both directions.
    row_params = params[:1].expand(bins + 1, -1)
    knots_x, knots_y = knots_of(params[0], bins, parameterization=parameterization)
    at_knots, _ = spline(knots_x, row_params, **options)
    torch.testing.assert_close(at_knots, knots_y, atol=atol, rtol=0)
    back, _ = spline(knots_y, row_params, inverse=True, **options)
    torch.testing.assert_close(back, knots_x, atol=atol, rtol=0)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_tails_are_the_identity(parameterization):
    x = torch.tensor([-1e4, -10.0, -3.0001, 3.0001, 10.0, 1e4], dtype=torch.float64)
    params = raw_params(x.shape, 8, seed=11)
    for inverse in (False, True):
        y, logabsdet = spline(x, params, inverse=inverse, parameterization=parameterization)
        assert torch.equal(y, x)
        assert torch.equal(logabsdet, torch.zeros_like(x))


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_monotonic(parameterization):
    x = torch.linspace(-2 * BOUND, 2 * BOUND, 2001, dtype=torch.float64)
    params = raw_params((), 8, seed=12).expand(*x.shape, -1)
    y, _ = spline(x, params, parameterization=parameterization)
    assert (y.diff() > 0).all()
    x_back, _ = spline(y, params, inverse=True, parameterization=parameterization)
    assert (x_back.diff() > 0).all()


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_params_are_the_identity(dtype, parameterization):
    x = make_inputs(seed=13, dtype=dtype)
    params = torch.zeros(*x.shape, 23, dtype=dtype)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for inverse in (False, True):
        y, logabsdet = spline(x, params, inverse=inverse, parameterization=parameterization)
        torch.testing.assert_close(y, x, atol=tolerance, rtol=0)
        torch.testing.assert_close(logabsdet, torch.zeros_like(x), atol=tolerance, rtol=0)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_density_of_pushed_normal_integrates_to_one(parameterization):
    # y = f(x), x ~ N(0, 1): log p(y) = log N(f^{-1}(y)) + log|d f^{-1}/dy|.
    # Moderate parameters: with extreme ones a bin's density spike is narrower than the grid.
    params = raw_params((), 8, seed=14, scale=1.0)

    def log_density(y):
        y = y.squeeze(1)
        x, logabsdet = spline(
            y, params.expand(*y.shape, -1), inverse=True, parameterization=parameterization
        )
        return -0.5 * (x.square() + LOG_2PI) + logabsdet

    assert abs(grid_integral_1d(log_density, -12.0, 12.0, 24000) - 1.0) < 1e-3


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_separate_and_packed_signatures_agree(parameterization):
    x = make_inputs(seed=15)
    params = raw_params(x.shape, 4, seed=16)
    widths, heights, derivatives = params.split([4, 4, 3], dim=-1)
    options = {"parameterization": parameterization}
    for inverse in (False, True):
        expected = spline(x, params, inverse=inverse, **options)
        got = rational_quadratic_spline(
            x, widths, heights, derivatives, inverse=inverse, tail_bound=BOUND, **options
        )
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_broadcast_params_and_other_shapes():
    x = make_inputs(n=60, seed=17).view(3, 4, 5)
    params = raw_params((5,), 3, seed=18)  # one spline per last-dim feature
    y, logabsdet = spline(x, params)
    expected, expected_logabsdet = spline(x, params.expand(3, 4, 5, -1).contiguous())
    assert y.shape == logabsdet.shape == (3, 4, 5)
    torch.testing.assert_close(y, expected, atol=0, rtol=0)
    torch.testing.assert_close(logabsdet, expected_logabsdet, atol=0, rtol=0)


def test_different_minimum_widths_and_heights():
    x = make_inputs(seed=19)
    params = raw_params(x.shape, 5, seed=20)
    options = {"min_bin_width": 1e-2, "min_bin_height": 1e-4, "min_derivative": 1e-2}
    reference = zuko_with_our_knots(params, 5)
    knots = spline_knots(*params.split([5, 5, 4], dim=-1), BOUND, 1e-2, 1e-4, 1e-2)
    reference.horizontal, reference.vertical, reference.derivatives = knots
    y, logabsdet = spline(x, params, **options)
    y_ref, logabsdet_ref = reference.call_and_ladj(x)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(logabsdet, logabsdet_ref, atol=1e-10, rtol=0)
    x_back, _ = spline(y, params, inverse=True, **options)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    xg = x.clone().requires_grad_(True)
    pg = params.clone().requires_grad_(True)
    function = lambda a, b: spline(a, b, **options)  # noqa: E731
    assert torch.autograd.gradcheck(function, (xg[:4], pg[:4]))


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_gradients_finite_outside_bounds(parameterization):
    x = torch.tensor([-1e4, -100.0, -3.0, 3.0, 100.0, 1e4], dtype=torch.float32, requires_grad=True)
    generator = torch.Generator().manual_seed(26)
    params = 10 * torch.randn(6, 23, generator=generator)  # extreme raw parameters
    params.requires_grad_(True)
    for inverse in (False, True):
        y, logabsdet = spline(x, params, inverse=inverse, parameterization=parameterization)
        grad_x, grad_params = torch.autograd.grad(y.sum() + logabsdet.sum(), (x, params))
        assert torch.isfinite(grad_x).all() and torch.isfinite(grad_params).all()
        # Outside the bounds the map is the identity: unit slope, no parameter gradient.
        outside = x.detach().abs() > BOUND
        assert torch.equal(grad_x[outside], torch.ones_like(grad_x[outside]))
        assert torch.equal(grad_params[outside], torch.zeros_like(grad_params[outside]))


def test_bad_parameter_count_is_an_error():
    with pytest.raises(ValueError, match="3K - 1"):
        spline(torch.zeros(3), torch.zeros(3, 7))


@given(
    batch=st.integers(1, 6),
    features=st.integers(1, 4),
    bins=st.integers(1, 10),
    bound=st.floats(0.5, 10.0),
    magnitude=st.sampled_from([1e-3, 1.0, 10.0, 1e2, 1e4]),
    param_scale=st.sampled_from([0.0, 1.0, 5.0, 30.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    inverse=st.booleans(),
    parameterization=st.sampled_from(PARAMETERIZATIONS),
    seed=st.integers(0, 2**16),
)
def test_property_finite_outputs_and_gradients(
    batch, features, bins, bound, magnitude, param_scale, dtype, inverse, parameterization, seed
):
    generator = torch.Generator().manual_seed(seed)
    x = magnitude * torch.randn(batch, features, generator=generator, dtype=dtype)
    x.view(-1)[0] = bound  # exactly at the boundary knot
    x.requires_grad_(True)
    params = param_scale * torch.randn(
        batch, features, 3 * bins - 1, generator=generator, dtype=dtype
    )
    params.requires_grad_(True)
    options = {"bound": bound, "parameterization": parameterization}
    y, logabsdet = spline(x, params, inverse=inverse, **options)
    assert y.shape == logabsdet.shape == x.shape
    assert y.dtype == logabsdet.dtype == dtype
    assert torch.isfinite(y).all() and torch.isfinite(logabsdet).all()
    grad_x, grad_params = torch.autograd.grad(y.sum() + logabsdet.sum(), (x, params))
    assert torch.isfinite(grad_x).all() and torch.isfinite(grad_params).all()
    # Round trip, where float32 conditioning allows it (moderate parameters).
    if param_scale <= 1.0:
        back, _ = spline(y.detach(), params.detach(), inverse=not inverse, **options)
        atol = 1e-4 * max(1.0, bound) if dtype == torch.float32 else 1e-10 * max(1.0, bound)
        torch.testing.assert_close(back, x.detach(), atol=atol, rtol=0)
    outside = x.detach().abs() > bound
    assert torch.equal(y.detach()[outside], x.detach()[outside])


def test_float32_constants_follow_the_input():
    x = make_inputs(n=50, dtype=torch.float32)
    params = raw_params(x.shape, 8, dtype=torch.float32)
    y, logabsdet = spline(x, params)
    assert y.dtype == logabsdet.dtype == torch.float32
    y64, logabsdet64 = spline(x.double(), params.double())
    torch.testing.assert_close(y.double(), y64, atol=1e-5, rtol=0)
    torch.testing.assert_close(logabsdet.double(), logabsdet64, atol=1e-4, rtol=0)
    assert math.isfinite(logabsdet.sum().item())


@pytest.mark.parametrize("minimums", [(1e-3, 1e-3), (1e-2, 1e-4), (0.0, 0.0)])
def test_fast_and_exact_knot_paths_agree(minimums):
    # The CPU path folds the offset into a matrix product; accelerators take the
    # exact cumulative sum. Both must give the same knots, with the ends at -B, B.
    generator = torch.Generator().manual_seed(21)
    probabilities = torch.softmax(
        3 * torch.randn(2, 7, 50, generator=generator, dtype=torch.float64), 1
    )
    fast = knots_from_probabilities(probabilities, BOUND, *minimums, exact=False)
    exact = knots_from_probabilities(probabilities, BOUND, *minimums, exact=True)
    torch.testing.assert_close(fast, exact, atol=1e-13, rtol=0)
    torch.testing.assert_close(exact[:, 0], torch.full_like(exact[:, 0], -BOUND), atol=0, rtol=0)
    torch.testing.assert_close(
        exact[:, -1], torch.full_like(exact[:, -1], BOUND), atol=1e-13, rtol=0
    )


def test_soft_clip_closed_form():
    v = torch.tensor([-1e6, -7.0, -1.0, 0.0, 0.5, 3.0, 1e6], dtype=torch.float64)
    expected = torch.tensor(
        [-2.0, -7 / 4.5, -1 / 1.5, 0.0, 0.5 / 1.25, 3 / 2.5, 2.0], dtype=torch.float64
    )
    torch.testing.assert_close(soft_clip(v, 2.0), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(soft_clip(v, 2.0)[1:-1], expected[1:-1], atol=1e-15, rtol=0)
    # Slope 1 / (1 + |v| / a)^2, 1 at the origin.
    vg = v[1:-1].clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(soft_clip(vg, 2.0).sum(), vg)
    torch.testing.assert_close(slope, (1 + v[1:-1].abs() / 2.0) ** -2, atol=1e-15, rtol=0)


@pytest.mark.parametrize("min_derivative", [1e-3, 1e-2])
def test_soft_clip_bounds_derivatives_and_bin_ratios(min_derivative):
    # exp(clip(v, L)) lies in (s, 1/s) and softmax(clip(v, L/2)) ratios within 1/s,
    # whatever the raw values: the minimum bin size is s / (s + K - 1) of 2B.
    bins = 8
    params = torch.tensor([-1e8, 1e8], dtype=torch.float64).repeat(3 * bins)[: 3 * bins - 1]
    widths, heights, derivatives = params.split([bins, bins, bins - 1])
    knots_x, knots_y, knot_derivatives = spline_knots(
        widths,
        heights,
        derivatives,
        BOUND,
        min_derivative=min_derivative,
        parameterization="soft-clip",
    )
    s = min_derivative
    assert knot_derivatives.min() >= s * (1 - 1e-6) and knot_derivatives.max() <= (1 + 1e-6) / s
    smallest = s / (s + (bins - 1)) * 2 * BOUND
    assert knots_x.diff().min() >= smallest * (1 - 1e-6)
    assert knots_y.diff().min() >= smallest * (1 - 1e-6)
    # The kernel still inverts there (float64).
    x = torch.linspace(-BOUND, BOUND, 101, dtype=torch.float64)
    options = {"min_derivative": min_derivative, "parameterization": "soft-clip"}
    y, logabsdet = spline(x, params.expand(101, -1), **options)
    back, inverse_logabsdet = spline(y, params.expand(101, -1), inverse=True, **options)
    torch.testing.assert_close(back, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(
        logabsdet + inverse_logabsdet, torch.zeros_like(x), atol=1e-9, rtol=0
    )


def test_parameterizations_differ_away_from_zero():
    # Guards the parametrised tests against both names running the same maths.
    x = make_inputs(n=50, seed=27)
    params = raw_params(x.shape, 8, seed=28)
    minimum, _ = spline(x, params, parameterization="minimum")
    clipped, _ = spline(x, params, parameterization="soft-clip")
    inside = x.abs() < BOUND
    assert (minimum - clipped)[inside].abs().max() > 1e-2


def test_bad_parameterization_and_options_are_errors():
    with pytest.raises(ValueError, match=r"unknown spline parameterization 'soft'.*'soft-clip'"):
        spline(torch.zeros(3), torch.zeros(3, 23), parameterization="soft")
    with pytest.raises(ValueError, match=r"min_derivative .* \(0, 1\)"):
        spline(torch.zeros(3), torch.zeros(3, 23), parameterization="soft-clip", min_derivative=1.0)
    with pytest.raises(ValueError, match="no minimum bin width"):
        RationalQuadraticSplineMap(8, 3.0, min_bin_width=1e-2, parameterization="soft-clip")
    with pytest.raises(ValueError, match="unknown spline parameterization"):
        RationalQuadraticSplineMap(8, 3.0, parameterization="zuko")
    with pytest.raises(ValueError, match="min_derivative"):
        RationalQuadraticSplineMap(8, 3.0, min_derivative=0.0, parameterization="soft-clip")
    assert "soft-clip" in repr(RationalQuadraticSplineMap(parameterization="soft-clip"))
