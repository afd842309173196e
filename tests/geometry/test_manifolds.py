"""Every manifold through one contract: exp and log are inverse, distances match closed
forms written here independently, projections are idempotent, geodesics start and end
where they should at the speed of their length, and values and gradients stay finite at
coincident and antipodal points, at tiny tangent vectors and across the torus seam."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.geometry import (
    SO3,
    Euclidean,
    FlatTorus,
    Manifold,
    Product,
    Sphere,
    canonical_quaternion,
    make_manifold,
    quaternion_multiply,
    quaternion_to_matrix,
    rotation_angle,
    wrap_angle,
)
from pushforward.geometry import manifold as manifold_module
from pushforward.geometry import names as names_module
from pushforward.geometry import so3 as so3_module
from pushforward.geometry import sphere as sphere_module
from pushforward.geometry import torus as torus_module

F64 = torch.float64
MANIFOLDS = {
    "euclidean:3": Euclidean(3),
    "sphere:1": Sphere(1),
    "sphere:2": Sphere(2),
    "sphere:4": Sphere(4),
    "torus:1": FlatTorus(1),
    "torus:3": FlatTorus(3),
    "so3": SO3(),
    "sphere:2*torus:1": make_manifold("sphere:2*torus:1"),
    "so3*euclidean:2": make_manifold("so3*euclidean:2"),
}
ALL = pytest.mark.parametrize("name", list(MANIFOLDS))


def pair(manifold: Manifold, seed: int, n: int = 32, dtype: torch.dtype = F64):
    generator = torch.Generator().manual_seed(seed)
    x = manifold.random(n, dtype=dtype, generator=generator)
    y = manifold.random(n, dtype=dtype, generator=generator)
    return x, y


@ALL
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_exp_inverts_log_and_the_log_has_the_distance_as_its_length(name, seed):
    manifold = MANIFOLDS[name]
    x, y = pair(manifold, seed)
    v = manifold.log(x, y)
    torch.testing.assert_close(manifold.tangent(x, v), v, atol=1e-10, rtol=0)
    reached = manifold.exp(x, v)
    assert float(manifold.distance(reached, y).max()) < 1e-7
    torch.testing.assert_close(manifold.inner(x, v, v).sqrt(), manifold.distance(x, y))
    # The distance is symmetric and zero from a point to itself.
    torch.testing.assert_close(manifold.distance(x, y), manifold.distance(y, x))
    assert float(manifold.distance(x, x).abs().max()) < 1e-7


def closed_form_distance(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each factor's distance by the textbook formula, combined as a product's."""
    manifold = MANIFOLDS[name]
    squares = []
    for factor, a, b in zip(manifold.factors, split(manifold, x), split(manifold, y), strict=True):
        if isinstance(factor, Sphere):
            d = torch.acos((a * b).sum(-1).clamp(-1, 1))
        elif isinstance(factor, SO3):
            d = torch.acos((a * b).sum(-1).abs().clamp(max=1))
        elif isinstance(factor, FlatTorus):
            gap = (a - b).abs() % (2 * math.pi)
            d = torch.minimum(gap, 2 * math.pi - gap).square().sum(-1).sqrt()
        else:
            d = (a - b).norm(dim=-1)
        squares.append(d.square())
    return torch.stack(squares, -1).sum(-1).sqrt()


def split(manifold: Manifold, x: torch.Tensor) -> list[torch.Tensor]:
    return manifold.split(x) if isinstance(manifold, Product) else [x]


@ALL
def test_distances_match_closed_forms(name):
    manifold = MANIFOLDS[name]
    x, y = pair(manifold, 3)
    torch.testing.assert_close(manifold.distance(x, y), closed_form_distance(name, x, y),
                               atol=1e-6, rtol=0)  # fmt: skip


@ALL
def test_projections_are_idempotent_and_random_points_lie_on_the_manifold(name):
    manifold = MANIFOLDS[name]
    generator = torch.Generator().manual_seed(0)
    raw = 3 * torch.randn(64, manifold.ambient, dtype=F64, generator=generator)
    once = manifold.project(raw)
    torch.testing.assert_close(manifold.project(once), once)
    manifold.check(once)
    v = torch.randn(64, manifold.ambient, dtype=F64, generator=generator)
    tangent = manifold.tangent(once, v)
    torch.testing.assert_close(manifold.tangent(once, tangent), tangent)
    points = manifold.random(64, dtype=F64, generator=generator)
    torch.testing.assert_close(manifold.check(points), points)


@ALL
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.0, 1.0))
def test_geodesics_run_from_x0_to_x1_at_the_speed_of_their_length(name, seed, t):
    manifold = MANIFOLDS[name]
    x0, x1 = pair(manifold, seed, n=8)
    times = torch.full((8,), t, dtype=F64)
    start = manifold.geodesic(x0, x1, torch.zeros_like(times)).x_t
    end = manifold.geodesic(x0, x1, torch.ones_like(times)).x_t
    assert float(manifold.distance(start, x0).max()) < 1e-8
    assert float(manifold.distance(end, x1).max()) < 1e-7
    point = manifold.geodesic(x0, x1, times)
    torch.testing.assert_close(point.dx_t.norm(dim=-1), manifold.distance(x0, x1))
    torch.testing.assert_close(manifold.tangent(point.x_t, point.dx_t), point.dx_t,
                               atol=1e-9, rtol=0)  # fmt: skip
    # The velocity is the derivative of the point: a central difference agrees.
    h = 1e-6
    ahead = manifold.geodesic(x0, x1, times + h).x_t
    behind = manifold.geodesic(x0, x1, times - h).x_t
    difference = manifold.log(behind, ahead) / (2 * h)
    torch.testing.assert_close(difference, point.dx_t, atol=1e-5, rtol=1e-5)


def test_volumes_are_the_closed_forms():
    assert Sphere(1).log_volume() == pytest.approx(math.log(2 * math.pi))
    assert Sphere(2).log_volume() == pytest.approx(math.log(4 * math.pi))
    assert Sphere(3).log_volume() == pytest.approx(math.log(2 * math.pi**2))
    assert FlatTorus(3).log_volume() == pytest.approx(3 * math.log(2 * math.pi))
    assert SO3().log_volume() == pytest.approx(math.log(2 * math.pi**2))
    product = make_manifold("sphere:2*torus:1")
    x = product.random(5, generator=torch.Generator().manual_seed(0))
    expected = torch.full((5,), -math.log(4 * math.pi) - math.log(2 * math.pi), dtype=F64)
    torch.testing.assert_close(product.uniform_log_prob(x), expected)
    with pytest.raises(ValueError, match="infinite volume"):
        Euclidean(2).log_volume()
    # The Euclidean reference is the standard normal.
    z = torch.zeros(1, 2, dtype=F64)
    assert float(Euclidean(2).reference_log_prob(z)) == pytest.approx(-math.log(2 * math.pi))


def test_the_uniform_sphere_is_uniform():
    # Archimedes: the height of a uniform point of S^2 is uniform on [-1, 1].
    x = Sphere(2).random(200_000, generator=torch.Generator().manual_seed(1))
    counts = torch.histc(x[:, 2], bins=10, min=-1, max=1)
    assert float((counts / 20_000 - 1).abs().max()) < 0.03


CORNER_DTYPES = pytest.mark.parametrize("dtype", [torch.float32, F64])


def finite_gradients(*tensors: torch.Tensor) -> bool:
    return all(t.grad is not None and bool(torch.isfinite(t.grad).all()) for t in tensors)


@CORNER_DTYPES
@pytest.mark.parametrize("name", ["sphere:2", "so3", "sphere:2*torus:1"])
def test_coincident_and_antipodal_points_give_finite_values_and_gradients(name, dtype):
    manifold = MANIFOLDS[name]
    x = manifold.random(4, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for y in (x.clone(), -x.clone()):
        a = x.clone().requires_grad_(True)
        b = y.clone().requires_grad_(True)
        total = manifold.log(a, b).sum() + manifold.distance(a, b).sum()
        total = total + manifold.geodesic(a, b, torch.full((4,), 0.3, dtype=dtype)).dx_t.sum()
        total.backward()
        assert bool(torch.isfinite(total))
        assert finite_gradients(a, b)


@CORNER_DTYPES
@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_tiny_and_zero_tangent_vectors_give_finite_values_and_gradients(name, dtype):
    manifold = MANIFOLDS[name]
    x = manifold.random(3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for scale in (0.0, 1e-30, 1e-12, 1e-5):
        raw = torch.randn(3, manifold.ambient, dtype=dtype, generator=torch.Generator())
        v = (scale * manifold.tangent(x, raw)).requires_grad_(True)
        point = x.clone().requires_grad_(True)
        y = manifold.exp(point, v)
        assert float(manifold.distance(y.detach(), x).max()) <= max(10 * scale, 1e-6)
        y.sum().backward()
        assert finite_gradients(point, v)


@CORNER_DTYPES
def test_the_torus_seam_is_crossed_the_short_way_with_finite_gradients(dtype):
    torus = FlatTorus(1)
    a = torch.tensor([[math.pi - 1e-3]], dtype=dtype, requires_grad=True)
    b = torch.tensor([[-math.pi + 1e-3]], dtype=dtype, requires_grad=True)
    v = torus.log(a, b)
    assert float(v.detach()) == pytest.approx(2e-3, abs=1e-5)
    distance = torus.distance(a, b)
    (v.sum() + distance.sum()).backward()
    assert finite_gradients(a, b)
    assert float(distance.detach()) == pytest.approx(2e-3, abs=1e-5)
    # Exactly opposite angles and points on the seam itself stay finite too.
    c = torch.tensor([[math.pi]], dtype=dtype, requires_grad=True)
    d = torch.tensor([[0.0]], dtype=dtype, requires_grad=True)
    torus.distance(c, d).sum().backward()
    assert finite_gradients(c, d)
    assert float(torus.project(c.detach())) == pytest.approx(-math.pi)


@settings(max_examples=50, deadline=None)
@given(st.floats(-1e4, 1e4, allow_nan=False))
def test_wrapped_angles_are_in_the_half_open_interval_and_name_the_same_point(angle):
    for dtype in (torch.float32, F64):
        x = torch.tensor([angle], dtype=dtype)
        wrapped = wrap_angle(x)
        assert -math.pi <= float(wrapped) < math.pi
        # Same point of the circle: equal cosine and sine.
        tolerance = 1e-3 if dtype == torch.float32 else 1e-9
        assert float(torch.cos(wrapped)) == pytest.approx(float(torch.cos(x)), abs=tolerance)
        assert float(torch.sin(wrapped)) == pytest.approx(float(torch.sin(x)), abs=tolerance)


def test_quaternions_compose_like_rotation_matrices():
    rotations = SO3()
    p, q = pair(rotations, 7, n=16)
    product = quaternion_multiply(p, q)
    torch.testing.assert_close(quaternion_to_matrix(product),
                               quaternion_to_matrix(p) @ quaternion_to_matrix(q))  # fmt: skip
    matrix = quaternion_to_matrix(p)
    identity = torch.eye(3, dtype=F64).expand(16, 3, 3)
    torch.testing.assert_close(matrix @ matrix.transpose(-1, -2), identity)
    # The distance is half the angle of the relative rotation.
    inverse_p = p * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64)
    relative = quaternion_multiply(inverse_p, q)
    torch.testing.assert_close(2 * rotations.distance(p, q), rotation_angle(relative))


def test_rotations_do_not_tell_q_from_minus_q():
    rotations = SO3()
    q, other = pair(rotations, 11, n=16)
    torch.testing.assert_close(rotations.features(-q), rotations.features(q))
    assert bool((canonical_quaternion(-q) == canonical_quaternion(q)).all())
    torch.testing.assert_close(rotations.distance(-q, other), rotations.distance(q, other))
    assert float(rotations.distance(q, -q).max()) < 1e-7
    omega = torch.randn(16, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    v = rotations.vector_field(q, omega)
    # Tangent at q, odd in q: a flow of this field commutes with q -> -q.
    torch.testing.assert_close((v * q).sum(-1), torch.zeros(16, dtype=F64), atol=1e-12, rtol=0)
    assert bool((rotations.vector_field(-q, omega) == -v).all())
    torch.testing.assert_close(v.norm(dim=-1), omega.norm(dim=-1) / 2)


@pytest.mark.parametrize("name", ["sphere:2", "sphere:2*torus:1"])
def test_network_outputs_become_tangent_vectors(name):
    manifold = MANIFOLDS[name]
    x = manifold.random(8, generator=torch.Generator().manual_seed(2))
    raw = torch.randn(8, manifold.output_size, dtype=F64)
    v = manifold.vector_field(x, raw)
    torch.testing.assert_close(manifold.tangent(x, v), v)
    assert manifold.features(x).shape == (8, manifold.feature_size)


def test_sphere_rows_are_checked_and_normalised_on_request():
    sphere = Sphere(2)
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"row 1 has norm 2.*unit vectors"):
        sphere.check(rows)
    normalised = sphere.check(rows, normalize=True)
    torch.testing.assert_close(normalised.norm(dim=-1), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="row 0 is zero"):
        sphere.check(torch.zeros(1, 3, dtype=F64), normalize=True)
    with pytest.raises(ValueError, match=r"shape \(3, 2\).*3 coordinates"):
        sphere.check(rows[:, :2])
    with pytest.raises(ValueError, match="row 2 holds a NaN"):
        sphere.check(torch.cat([rows[:2] / rows[:2].norm(dim=-1, keepdim=True),
                                torch.full((1, 3), math.nan, dtype=F64)]))  # fmt: skip
    with pytest.raises(ValueError, match="unit quaternions"):
        SO3().check(torch.ones(2, 3, dtype=F64))
    angles = FlatTorus(2).check(torch.tensor([[4.0, -10.0]], dtype=F64))
    torch.testing.assert_close(angles, wrap_angle(torch.tensor([[4.0, -10.0]], dtype=F64)))
    product = make_manifold("sphere:2*torus:1")
    with pytest.raises(ValueError, match=r"\(sphere:2 columns\) row 0 has norm"):
        product.check(torch.tensor([[2.0, 0.0, 0.0, 1.0]], dtype=F64))


def test_manifolds_are_built_by_name():
    assert make_manifold("sphere", columns=3) == Sphere(2)
    assert make_manifold("Sphere:2") == Sphere(2)
    assert make_manifold("torus", columns=4) == FlatTorus(4)
    assert make_manifold("so3") == SO3()
    product = make_manifold("sphere*torus:2", columns=5)
    assert product.spec() == "sphere:2*torus:2"
    assert make_manifold(product.spec()) == product
    assert make_manifold("so3*torus", columns=6).spec() == "so3*torus:2"
    nested = Product([make_manifold("sphere:2*torus:1"), SO3()])
    assert nested.spec() == "sphere:2*torus:1*so3"
    with pytest.raises(ValueError, match=r"unknown manifold 'spere'.*did you mean 'sphere'"):
        make_manifold("spere")
    with pytest.raises(ValueError, match=r"3 coordinates.*data has 4 columns"):
        make_manifold("sphere:2", columns=4)
    with pytest.raises(ValueError, match="all but one factor"):
        make_manifold("sphere*torus", columns=5)
    with pytest.raises(ValueError, match="give its dimension"):
        make_manifold("torus")
    with pytest.raises(ValueError, match="positive integer"):
        make_manifold("torus:0")
    with pytest.raises(ValueError, match="so3 has dimension 3"):
        make_manifold("so3:2")


@pytest.mark.parametrize(
    "module", [manifold_module, names_module, so3_module, sphere_module, torus_module]
)
def test_the_examples_in_the_docstrings_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
