"""Every concrete transform through one contract, driven by ``tests.contract.TRANSFORMS``.

A transform joins by an entry in the catalogue alone; a subclass of ``Transform``
in the package without one (or a reason in ``TRANSFORM_EXCLUSIONS``) fails the
completeness test, naming it. Checked for every case and feature count: the round
trip both ways and through ``Inverse`` (float64 and float32), the log-determinant
against the autograd Jacobian in both directions, float64 end to end and the
dtype following the inputs, the shapes of the outputs and log-determinants,
context handling (read where the transform is conditional, ignored where not)
and the density of base + transform integrating to one on a 1-D or 2-D grid.
Tests specific to one layer (closed forms, errors, special behaviours) stay in
that layer's file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.transforms.base import Inverse, Transform
from tests.contract import (
    TRANSFORM_EXCLUSIONS,
    TRANSFORMS,
    assert_invertible,
    assert_logdet_matches_jacobian,
    flow_log_density,
    grid_integral_1d,
    grid_integral_2d,
    randomize_,
)

FEATURES = [1, 2, 3, 5, 8]
CONTEXT = 3
CASES = list(TRANSFORMS)
GRID_CASES = [name for name in CASES if TRANSFORMS[name].grid is not None]


def contexts_of(name: str) -> tuple[int, ...]:
    """The context widths a case is built with: none, and ``CONTEXT`` where it reads one."""
    return (0, CONTEXT) if TRANSFORMS[name].conditional else (0,)


def variants(names: Iterable[str], features: Iterable[int]) -> list:
    return [
        pytest.param(name, f, context, id=f"{name}-{f}-{context}")
        for name in names
        for f in features
        for context in contexts_of(name)
    ]


def inputs(
    name: str, batch: int, features: int, context: int, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor | None]:
    generator = torch.Generator().manual_seed(1)
    x = TRANSFORMS[name].inputs(batch, features, dtype, generator)
    c = torch.randn(batch, context, generator=generator, dtype=dtype) if context else None
    return x, c


# -- completeness ------------------------------------------------------------------------


def _subclasses(cls: type) -> Iterator[type]:
    subclasses: list[type] = cls.__subclasses__()
    for subclass in subclasses:
        yield subclass
        yield from _subclasses(subclass)


def package_transforms() -> set[type]:
    """Every subclass of ``Transform`` defined in the package, every module imported first.

    ``import pushforward`` alone does not import every transform module, and a
    subclass that is never imported is not found by the walk.
    """
    for module in pkgutil.walk_packages(pushforward.__path__, "pushforward."):
        if module.name.rsplit(".", 1)[-1] != "__main__":  # running it starts the CLI
            importlib.import_module(module.name)
    return {cls for cls in _subclasses(Transform) if cls.__module__.startswith("pushforward.")}


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def catalogued() -> set[type]:
    """The classes the catalogue builds (the outermost one of each case)."""
    return {type(case.build(2, 0, torch.float64)) for case in TRANSFORMS.values()}


def uncatalogued(classes: Iterable[type]) -> list[str]:
    """The classes with neither a case in ``TRANSFORMS`` nor an entry in the exclusions."""
    covered = catalogued()
    return sorted(
        qualified_name(cls)
        for cls in classes
        if cls not in covered and qualified_name(cls) not in TRANSFORM_EXCLUSIONS
    )


def test_every_transform_has_a_case_or_a_reason():
    classes = package_transforms()
    missing = uncatalogued(classes)
    assert not missing, (
        f"transforms without a case in tests.contract.TRANSFORMS (add a factory, or a "
        f"reason in TRANSFORM_EXCLUSIONS): {missing}"
    )
    # An exclusion names a transform of the package that has no case.
    excludable = {qualified_name(cls) for cls in classes - catalogued()}
    stale = sorted(set(TRANSFORM_EXCLUSIONS) - excludable)
    assert not stale, f"TRANSFORM_EXCLUSIONS entries for no transform without a case: {stale}"


def test_a_transform_without_a_case_is_named():
    class Unlisted(Transform):
        pass

    assert uncatalogued([Unlisted, *package_transforms()]) == [qualified_name(Unlisted)]


# -- invertibility and the Jacobian ------------------------------------------------------


@pytest.mark.parametrize(("name", "features", "context"), variants(CASES, FEATURES))
def test_invertible_float64(name, features, context):
    transform = TRANSFORMS[name].build(features, context, torch.float64)
    x, c = inputs(name, 16, features, context)
    assert_invertible(transform, x, c, atol=1e-10)
    # The wrapper swaps the directions: its inputs live where forward's outputs do.
    with torch.no_grad():
        y, _ = transform(x, c)
    assert_invertible(Inverse(transform), y, c, atol=1e-10)


@pytest.mark.parametrize(("name", "features", "context"), variants(CASES, FEATURES))
def test_invertible_float32(name, features, context):
    transform = TRANSFORMS[name].build(features, context, torch.float32)
    x, c = inputs(name, 16, features, context, torch.float32)
    assert_invertible(transform, x, c, atol=1e-4)


@pytest.mark.parametrize(("name", "features", "context"), variants(CASES, FEATURES))
def test_logdet_matches_jacobian(name, features, context):
    transform = TRANSFORMS[name].build(features, context, torch.float64)
    # Larger weights than the round trips' (about 0.3 in all): the Jacobian needs no
    # well-conditioned inverse.
    randomize_(transform, 0.25, torch.Generator().manual_seed(features))
    x, c = inputs(name, 4, features, context)
    assert_logdet_matches_jacobian(transform, x, c, atol=1e-6)


# -- dtype, shapes, context --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "features", "context"), variants(CASES, [3]))
def test_dtype_end_to_end(name, features, context, dtype):
    transform = TRANSFORMS[name].build(features, context, dtype)
    for key, tensor in [*transform.named_parameters(), *transform.named_buffers()]:
        assert not tensor.is_floating_point() or tensor.dtype == dtype, key
    x, c = inputs(name, 6, features, context, dtype)
    x.requires_grad_(True)
    for direction in (transform.forward, transform.inverse):
        transform.zero_grad()
        y, logabsdet = direction(x, c)
        assert y.dtype == dtype and logabsdet.dtype == dtype
        (x_grad,) = torch.autograd.grad(y.sum() + logabsdet.sum(), x, retain_graph=True)
        assert x_grad.dtype == dtype and torch.isfinite(x_grad).all()
        (y.sum() + logabsdet.sum()).backward()
        for key, parameter in transform.named_parameters():
            if parameter.grad is not None:
                assert parameter.grad.dtype == dtype, key
                assert torch.isfinite(parameter.grad).all(), key
        # Forward's outputs live in the inverse's domain.
        x = y.detach().requires_grad_(True)


@pytest.mark.parametrize(("name", "features", "context"), variants(CASES, [1, 4]))
def test_shapes(name, features, context):
    transform = TRANSFORMS[name].build(features, context, torch.float64)
    assert isinstance(transform.cheap_forward, bool)
    assert isinstance(transform.cheap_inverse, bool)
    assert isinstance(transform.conditional, bool)
    for batch in (1, 7):
        x, c = inputs(name, batch, features, context)
        with torch.no_grad():
            y, logabsdet = transform(x, c)
            x_back, inverse_logabsdet = transform.inverse(y, c)
        assert y.shape == x.shape and x_back.shape == x.shape
        assert logabsdet.shape == (batch,) and inverse_logabsdet.shape == (batch,)
        assert torch.isfinite(logabsdet).all() and torch.isfinite(inverse_logabsdet).all()


@pytest.mark.parametrize("name", CASES)
def test_context_is_read_where_conditional_and_ignored_elsewhere(name):
    features, batch = 3, 6
    x, c = inputs(name, batch, features, CONTEXT)
    plain = TRANSFORMS[name].build(features, 0, torch.float64)
    assert not plain.conditional
    with torch.no_grad():
        y, _ = plain(x)
        for direction, points in ((plain.forward, x), (plain.inverse, y)):
            torch.testing.assert_close(direction(points, c), direction(points), atol=0, rtol=0)
    if not TRANSFORMS[name].conditional:
        return
    transform = TRANSFORMS[name].build(features, CONTEXT, torch.float64)
    assert transform.conditional
    with torch.no_grad():
        y, _ = transform(x, c)
        for direction, points in ((transform.forward, x), (transform.inverse, y)):
            # Another context, another map; one context row is broadcast to the batch.
            assert not torch.allclose(direction(points, c)[0], direction(points, c.flip(0))[0])
            torch.testing.assert_close(
                direction(points, c[:1]), direction(points, c[:1].expand(batch, CONTEXT))
            )
            with pytest.raises(ValueError, match="pass context"):
                direction(points)


# -- normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize("name", GRID_CASES)
def test_density_integrates_to_one(name):
    # log p(x) = log p_base(f(x)) + log|det df/dx|, on the grid of the data's domain;
    # a conditional case is conditioned on one context row.
    grid = TRANSFORMS[name].grid
    assert grid is not None
    context = CONTEXT if TRANSFORMS[name].conditional else 0
    transform = TRANSFORMS[name].build(grid.dimension, context, torch.float64)
    generator = torch.Generator().manual_seed(2)
    c = torch.randn(1, context, generator=generator, dtype=torch.float64) if context else None
    log_density = flow_log_density(transform, grid.base(grid.dimension), c)
    integrate = grid_integral_1d if grid.dimension == 1 else grid_integral_2d
    total = integrate(log_density, grid.low, grid.high, grid.points)
    assert abs(total - 1.0) < 1e-3
