"""Checks every transform and model goes through, the transforms' catalogue, the models' options.

Invertibility, log-determinants against the autograd Jacobian, normalisation on a
grid; ``TRANSFORMS`` holds one small, randomised case per concrete transform, which
the transform sweep (``tests/transforms/test_transform_contract.py``) requires;
``SMALL_OPTIONS`` holds one entry per registered model, which the model contract
sweep (``tests/test_model_contract.py``) requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from pushforward.distributions.base import Distribution
from pushforward.distributions.normal import StandardNormal
from pushforward.distributions.uniform import BoxUniform
from pushforward.nn.kernel import KernelConditioner
from pushforward.paired import PairedBatch
from pushforward.sampling.targets.gaussian_mixture import GaussianMixtureTarget
from pushforward.transforms.autoregressive import MaskedAutoregressive
from pushforward.transforms.base import Compose, Inverse, Transform
from pushforward.transforms.box_logit import BoxLogitStandardize
from pushforward.transforms.circular import CircularAutoregressive, CircularCoupling
from pushforward.transforms.coupling import Coupling, alternating_mask, random_mask
from pushforward.transforms.elementwise import ElementwiseAffine, ElementwiseSpline, Logit, Sigmoid
from pushforward.transforms.energy import FullLinear, SmoothLeakyReLU
from pushforward.transforms.linear import LULinear
from pushforward.transforms.maps import (
    AffineMap,
    CircularRationalQuadraticSplineMap,
    ElementwiseMap,
    IntervalRationalQuadraticSplineMap,
    RationalQuadraticSplineMap,
)
from pushforward.transforms.normalization import ActNorm, BatchNorm
from pushforward.transforms.permutation import Permutation
from pushforward.transforms.residual import ResidualBlock
from pushforward.transforms.standardize import Standardize
from pushforward.transforms.variational import Planar, Radial, Sylvester


def randomize_(
    module: nn.Module, scale: float = 0.3, generator: torch.Generator | None = None
) -> None:
    """Adds noise to every parameter, so zero-initialised layers stop being the identity."""
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise.to(parameter.device))


def assert_invertible(
    transform: Transform, x: Tensor, context: Tensor | None = None, atol: float = 1e-10
) -> None:
    """``inverse(forward(x)) == x`` and the two log-determinants cancel."""
    y, forward_logdet = transform(x, context)
    x_back, inverse_logdet = transform.inverse(y, context)
    assert y.shape == x.shape and x_back.shape == x.shape
    assert forward_logdet.shape == (x.shape[0],)
    assert inverse_logdet.shape == (x.shape[0],)
    torch.testing.assert_close(x_back, x, atol=atol, rtol=0)
    scale = 1.0 + forward_logdet.abs().max().item()
    torch.testing.assert_close(
        forward_logdet + inverse_logdet,
        torch.zeros_like(forward_logdet),
        atol=atol * 100 * scale,
        rtol=0,
    )
    # And the other way round: forward(inverse(y)) == y.
    x2, _ = transform.inverse(y, context)
    y2, _ = transform(x2, context)
    torch.testing.assert_close(y2, y, atol=atol * 10 * (1 + y.abs().max().item()), rtol=0)


def jacobian_logabsdet(function, x: Tensor, context: Tensor | None) -> Tensor:
    """``log|det J|`` of ``function`` at every row of ``x``, from torch.func's Jacobian.

    One Jacobian of the whole batch (a loop over rows costs four times as much); its
    blocks across rows must vanish, since a transform maps every row on its own.
    """
    batch, size = x.shape[0], x[0].numel()
    jacobian = torch.func.jacrev(lambda points: function(points, context))(x)
    jacobian = jacobian.reshape(batch, size, batch, size).permute(0, 2, 1, 3)
    rows = torch.arange(batch, device=x.device)
    blocks = jacobian[rows, rows]
    across = jacobian.clone()
    across[rows, rows] = 0
    assert not across.any(), "the Jacobian couples different rows of the batch"
    return torch.linalg.slogdet(blocks)[1]


def assert_logdet_matches_jacobian(
    transform: Transform, x: Tensor, context: Tensor | None = None, atol: float = 1e-6
) -> None:
    """Both directions' log-determinants equal ``log|det|`` of the autograd Jacobian."""
    _, logdet = transform(x, context)
    expected = jacobian_logabsdet(lambda v, c: transform(v, c)[0], x, context)
    torch.testing.assert_close(logdet, expected, atol=atol, rtol=1e-6)
    y, _ = transform(x, context)
    _, inverse_logdet = transform.inverse(y, context)
    expected_inverse = jacobian_logabsdet(lambda v, c: transform.inverse(v, c)[0], y, context)
    torch.testing.assert_close(inverse_logdet, expected_inverse, atol=atol, rtol=1e-6)


def assert_log_derivative(function, x: Tensor, atol: float) -> None:
    """An increasing elementwise map's per-element ``log|det|`` is ``log f'(x)`` by autograd.

    ``function(x) -> (y, logabsdet)`` acts element by element (``y``, ``logabsdet``
    shaped like ``x``), as the pure functions of ``transforms.functional`` do; a
    derivative that is not positive fails (its log is NaN).
    """
    x = x.detach().requires_grad_(True)
    y, logabsdet = function(x)
    (derivative,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(logabsdet, derivative.log(), atol=atol, rtol=0)


def assert_elementwise_round_trip(
    forward,
    inverse,
    x: Tensor,
    atol: float,
    rtol: float = 0.0,
    logdet_atol: float | None = None,
) -> None:
    """``inverse(forward(x)) == x`` for an elementwise pair, and the log-determinants cancel.

    ``forward``/``inverse`` map a tensor to ``(values, logabsdet)`` of its shape.
    """
    y, logabsdet = forward(x)
    x_back, inverse_logabsdet = inverse(y)
    torch.testing.assert_close(x_back, x, atol=atol, rtol=rtol)
    torch.testing.assert_close(
        logabsdet + inverse_logabsdet,
        torch.zeros_like(x),
        atol=atol if logdet_atol is None else logdet_atol,
        rtol=0,
    )


def flow_log_density(transform: Transform, base: Distribution, context: Tensor | None = None):
    r"""The density ``log p_base(f(x)) + log|det df/dx|`` of ``f = transform`` (data to base).

    A ``context`` of one row conditions every point on it.
    """

    def log_density(points: Tensor) -> Tensor:
        with torch.no_grad():
            z, logabsdet = transform(points, context)
            return base.log_prob(z) + logabsdet

    return log_density


def grid_integral_2d(
    log_density, low: float, high: float, points: int, dtype=torch.float64
) -> float:
    """Integrates ``exp(log_density)`` over the square ``[low, high]^2`` with the midpoint rule."""
    width = (high - low) / points
    centres = low + width * (torch.arange(points, dtype=dtype) + 0.5)
    xx, yy = torch.meshgrid(centres, centres, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    total = 0.0
    for chunk in grid.split(65536):
        total += torch.exp(log_density(chunk)).sum().item()
    return total * width * width


def grid_integral_1d(
    log_density, low: float, high: float, points: int, dtype=torch.float64
) -> float:
    """Integrates ``exp(log_density)`` over ``[low, high]`` with the midpoint rule."""
    width = (high - low) / points
    centres = low + width * (torch.arange(points, dtype=dtype) + 0.5)
    return torch.exp(log_density(centres.unsqueeze(1))).sum().item() * width


LOG_2PI = math.log(2 * math.pi)


# -- the transforms' catalogue ---------------------------------------------------------

TransformFactory = Callable[[int, int, torch.dtype], Transform]
"""``(features, context_features, dtype) -> Transform``: a small, seeded, non-trivial layer."""


def real_inputs(
    batch: int, features: int, dtype: torch.dtype, generator: torch.Generator
) -> Tensor:
    """Standard normal rows, the second half scaled by 10: far outside a spline's bounds."""
    x = torch.randn(batch, features, generator=generator, dtype=dtype)
    x[batch // 2 :] *= 10
    return x


def normal_inputs(
    batch: int, features: int, dtype: torch.dtype, generator: torch.Generator
) -> Tensor:
    """Standard normal rows."""
    return torch.randn(batch, features, generator=generator, dtype=dtype)


def sigmoid_inputs(
    batch: int, features: int, dtype: torch.dtype, generator: torch.Generator
) -> Tensor:
    """Real rows within ``[-8, 8]``, where the sigmoid stays far enough from 1 to invert exactly."""
    return (3 * torch.randn(batch, features, generator=generator, dtype=dtype)).clamp(-8, 8)


def unit_inputs(
    batch: int, features: int, dtype: torch.dtype, generator: torch.Generator
) -> Tensor:
    """Uniform rows inside ``[0.02, 0.98]``, the logit's domain."""
    return torch.rand(batch, features, generator=generator, dtype=dtype).clamp(0.02, 0.98)


def angle_inputs(
    batch: int, features: int, dtype: torch.dtype, generator: torch.Generator
) -> Tensor:
    """Uniform angles in ``[-pi, pi)``, the torus's coordinates."""
    return (2 * torch.rand(batch, features, generator=generator, dtype=dtype) - 1) * math.pi


def interval_inputs(
    batch: int, features: int, dtype: torch.dtype, generator: torch.Generator
) -> Tensor:
    """Uniform rows in ``[-1, 1]``, an interval spline's domain."""
    return 2 * torch.rand(batch, features, generator=generator, dtype=dtype) - 1


def unstandardized(
    batch: int,
    features: int,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Rows far from standardised (shifts -3..2, scales 0.5..4), for data-dependent layers."""
    scale = torch.linspace(0.5, 4.0, features, dtype=dtype)
    shift = torch.linspace(-3.0, 2.0, features, dtype=dtype)
    return shift + scale * torch.randn(batch, features, generator=generator, dtype=dtype)


def standard_normal(dimension: int) -> Distribution:
    return StandardNormal((dimension,)).double()


def unit_box(dimension: int) -> Distribution:
    return BoxUniform((dimension,), 0.0, 1.0).double()


def torus_box(dimension: int) -> Distribution:
    return BoxUniform((dimension,), -math.pi, math.pi).double()


def symmetric_box(dimension: int) -> Distribution:
    return BoxUniform((dimension,), -1.0, 1.0).double()


@dataclass(frozen=True)
class Grid:
    """A midpoint-rule grid on which ``base`` pulled back through the transform integrates to 1.

    ``dimension`` (1 or 2) is also the number of features the case is built with.
    """

    dimension: int
    low: float
    high: float
    points: int
    base: Callable[[int], Distribution] = standard_normal


REAL_LINE = Grid(1, -60.0, 60.0, 60_000)
PLANE = Grid(2, -7.0, 7.0, 300)


@dataclass(frozen=True)
class TransformCase:
    """One entry of the catalogue: how to build the transform and where its inputs live.

    Attributes:
        build: the factory, ``(features, context_features, dtype) -> Transform``.
        inputs: ``(batch, features, dtype, generator) -> x`` inside ``forward``'s domain.
        conditional: whether the transform reads a context when built with one.
        grid: where its density integrates to one, or ``None`` (with a reason in the entry).
    """

    build: TransformFactory
    inputs: Callable[[int, int, torch.dtype, torch.Generator], Tensor] = real_inputs
    conditional: bool = False
    grid: Grid | None = REAL_LINE


def _generator(features: int, context: int) -> torch.Generator:
    """A generator seeded by the sizes, so a case does not depend on the order tests run in."""
    return torch.Generator().manual_seed(31 * features + context)


def _randomized(
    transform: Transform, dtype: torch.dtype, scale: float, generator: torch.Generator
) -> Transform:
    transform = transform.to(dtype)
    randomize_(transform, scale, generator)
    return transform


def _elementwise_scale(dtype: torch.dtype) -> float:
    # A nearly flat bin (slope ~1e-3) makes y -> x too ill-conditioned for float32.
    return 1.0 if dtype == torch.float64 else 0.5


def _conditioner_scale(dtype: torch.dtype) -> float:
    # Inputs 10x outside the bounds drive larger conditioner outputs to the spline's
    # minimum bins, where y -> x is ill-conditioned (|dx/dy| ~ 1e5) and no inverse meets
    # 1e-10 (float64) or 1e-4 (float32): the map's conditioning, not the code's.
    return 0.15 if dtype == torch.float64 else 0.1


def _spline_map(parameterization: str = "minimum") -> RationalQuadraticSplineMap:
    return RationalQuadraticSplineMap(bins=6, tail_bound=4.0, parameterization=parameterization)


MAPS: dict[str, Callable[[], ElementwiseMap]] = {
    "affine": AffineMap,
    "spline": _spline_map,
    "spline-soft-clip": partial(_spline_map, "soft-clip"),
}
"""The element-wise maps of coupling and autoregressive layers, by name."""


def _elementwise_affine(features: int, context: int, dtype: torch.dtype) -> Transform:
    layer = ElementwiseAffine(features)
    return _randomized(layer, dtype, _elementwise_scale(dtype), _generator(features, context))


def _elementwise_spline(features: int, context: int, dtype: torch.dtype) -> Transform:
    layer = ElementwiseSpline(features, bins=6, tail_bound=3.0)
    return _randomized(layer, dtype, _elementwise_scale(dtype), _generator(features, context))


def _full_linear(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    layer = FullLinear(features, context, hidden=(8,), identity_init=False, generator=generator)
    return _randomized(layer, dtype, 0.3, generator)


def _smooth_leaky_relu(features: int, context: int, dtype: torch.dtype) -> Transform:
    # Slopes around 0.7 (0.3 to 1.6 after the noise): clearly not the identity.
    layer = SmoothLeakyReLU(features, slope=0.7)
    return _randomized(layer, dtype, 0.5, _generator(features, context))


def _kernel_coupling(
    features: int, context: int, dtype: torch.dtype, *, map: str, kernel: str
) -> Transform:
    generator = _generator(features, context)
    mask = random_mask(features, generator) if map == "affine" else alternating_mask(features)
    conditioner = partial(KernelConditioner, inducing=8, kernel=kernel)
    layer = Coupling(features, MAPS[map](), mask, context=context, conditioner=conditioner)
    return _randomized(layer, dtype, _conditioner_scale(dtype), generator)


def _residual(features: int, context: int, dtype: torch.dtype, *, activation: str) -> Transform:
    generator = _generator(features, context)
    # Its power-iteration vectors start from torch's global stream: seeded here, so the
    # case does not depend on the order the tests run in.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(31 * features + context)
        hidden = (16, 16) if activation == "lipswish" else (16,)
        layer = ResidualBlock(features, hidden, context=context, activation=activation)
    # Evaluation mode: a pass refines the spectral norms from the stored vectors without
    # writing them, so forward, inverse and the autograd Jacobian see one map.
    return _randomized(layer, dtype, 0.3, generator).eval()


def _lu_linear(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    return _randomized(
        LULinear(features, identity_init=False, generator=generator), dtype, 0.3, generator
    )


def _actnorm(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    layer = ActNorm(features).to(dtype)
    layer.initialize(unstandardized(64, features, dtype, generator))
    return _randomized(layer, dtype, 0.3, generator)


def _batchnorm(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    layer = BatchNorm(features).to(dtype)
    layer(unstandardized(64, features, dtype, generator))  # running statistics from one batch
    return _randomized(layer, dtype, 0.3, generator).eval()


def _standardize(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    mean = torch.randn(features, generator=generator, dtype=dtype)
    std = torch.exp(0.5 * torch.randn(features, generator=generator, dtype=dtype))
    return Standardize(mean, std)


def _coupling(
    features: int, context: int, dtype: torch.dtype, *, map: str, random: bool
) -> Transform:
    generator = _generator(features, context)
    mask = random_mask(features, generator) if random else alternating_mask(features)
    layer = Coupling(features, MAPS[map](), mask, hidden=(16, 16), context=context)
    return _randomized(layer, dtype, _conditioner_scale(dtype), generator)


def _autoregressive(
    features: int, context: int, dtype: torch.dtype, *, map: str, residual: bool = False
) -> Transform:
    generator = _generator(features, context)
    order = torch.randperm(features, generator=generator)
    layer = MaskedAutoregressive(
        features, MAPS[map](), hidden=(16, 16), context=context, order=order, residual=residual
    )
    # Residual blocks add their outputs to their inputs: the same weights give larger
    # conditioner outputs, so they are drawn half as large.
    scale = _conditioner_scale(dtype) * (0.5 if residual else 1.0)
    return _randomized(layer, dtype, scale, generator)


def _circular_coupling(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    layer = CircularCoupling(
        features,
        CircularRationalQuadraticSplineMap(bins=5),
        random_mask(features, generator),
        hidden=(16, 16),
        context=context,
    )
    return _randomized(layer, dtype, _conditioner_scale(dtype), generator)


def _circular_autoregressive(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    order = torch.randperm(features, generator=generator)
    map = CircularRationalQuadraticSplineMap(bins=5, parameterization="soft-clip")
    layer = CircularAutoregressive(features, map, hidden=(16, 16), context=context, order=order)
    return _randomized(layer, dtype, _conditioner_scale(dtype), generator)


def _interval_coupling(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    map = IntervalRationalQuadraticSplineMap(bins=5, bound=1.0)
    layer = Coupling(features, map, alternating_mask(features), hidden=(16, 16), context=context)
    return _randomized(layer, dtype, _conditioner_scale(dtype), generator)


def _inverse_autoregressive(features: int, context: int, dtype: torch.dtype) -> Transform:
    return Inverse(_autoregressive(features, context, dtype, map="spline"))


def _composition(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    layers = [
        Coupling(
            features, _spline_map(), alternating_mask(features), hidden=(16,), context=context
        ),
        Permutation.reverse(features),
        MaskedAutoregressive(features, AffineMap(), hidden=(16,), context=context),
        LULinear(features, identity_init=False, generator=generator),
    ]
    return _randomized(Compose(layers), dtype, _conditioner_scale(dtype), generator)


def _box_logit(features: int, context: int, dtype: torch.dtype) -> Transform:
    generator = _generator(features, context)
    mean = 0.5 * torch.randn(features, generator=generator, dtype=dtype)
    std = torch.exp(0.3 * torch.randn(features, generator=generator, dtype=dtype))
    low, high = -torch.ones(features, dtype=dtype), torch.ones(features, dtype=dtype)
    return BoxLogitStandardize(low, high, mean, std).to(dtype)


def inside_square(
    batch: int, features: int, dtype: torch.dtype, generator: torch.Generator
) -> Tensor:
    """Uniform rows inside ``[-0.98, 0.98]``, inside the box of a box logit."""
    return interval_inputs(batch, features, dtype, generator).clamp(-0.98, 0.98)


def _sigmoid(features: int, context: int, dtype: torch.dtype, *, alpha: float) -> Transform:
    return Sigmoid(alpha).to(dtype)


def _logit(features: int, context: int, dtype: torch.dtype, *, alpha: float) -> Transform:
    return Logit(alpha).to(dtype)


def _planar(features: int, context: int, dtype: torch.dtype) -> Transform:
    layer = Planar(features, context=context, hidden=(16,))
    return _randomized(layer, dtype, 0.5, _generator(features, context))


def _radial(features: int, context: int, dtype: torch.dtype) -> Transform:
    layer = Radial(features, context=context, hidden=(16,))
    return _randomized(layer, dtype, 0.5, _generator(features, context))


def _sylvester(features: int, context: int, dtype: torch.dtype, *, full: bool) -> Transform:
    columns = features if full else (features + 1) // 2
    layer = Sylvester(features, columns, context=context, hidden=(16,))
    return _randomized(layer, dtype, 0.5, _generator(features, context))


def _reverse_permutation(features: int, context: int, dtype: torch.dtype) -> Transform:
    return Permutation.reverse(features).to(dtype)


def _random_permutation(features: int, context: int, dtype: torch.dtype) -> Transform:
    return Permutation.random(features, generator=_generator(features, context)).to(dtype)


# Circle diffeomorphisms keep the torus, where the base is uniform; interval splines
# keep [-1, 1]^d.
TORUS = Grid(2, -math.pi, math.pi, 200, base=torus_box)
SQUARE = Grid(2, -1.0, 1.0, 300, base=symmetric_box)
SQUARE_NORMAL = Grid(2, -1.0, 1.0, 400)
# Sigmoid's forward squashes the real line into [0, 1], where its base is uniform.
SQUASHED_LINE = Grid(1, -60.0, 60.0, 60_000, base=unit_box)
UNIT_INTERVAL = Grid(1, 0.0, 1.0, 20_000)

TRANSFORMS: dict[str, TransformCase] = {
    "elementwise-affine": TransformCase(_elementwise_affine),
    "elementwise-spline": TransformCase(_elementwise_spline),
    "sigmoid": TransformCase(partial(_sigmoid, alpha=0.0), sigmoid_inputs, grid=SQUASHED_LINE),
    "sigmoid-alpha": TransformCase(
        partial(_sigmoid, alpha=0.05), sigmoid_inputs, grid=SQUASHED_LINE
    ),
    "logit": TransformCase(partial(_logit, alpha=0.0), unit_inputs, grid=UNIT_INTERVAL),
    # With alpha > 0 the image of [0, 1] is a bounded interval, which a normal base
    # does not fill: no base makes a cheap grid check of it.
    "logit-alpha": TransformCase(partial(_logit, alpha=0.05), unit_inputs, grid=None),
    "lu-linear": TransformCase(_lu_linear, grid=PLANE),
    # An unconstrained weight, shifted by an MLP of the context.
    "full-linear": TransformCase(_full_linear, conditional=True, grid=PLANE),
    "smooth-leaky-relu": TransformCase(_smooth_leaky_relu),
    "permutation-reverse": TransformCase(_reverse_permutation, grid=PLANE),
    "permutation-random": TransformCase(_random_permutation, grid=PLANE),
    "actnorm": TransformCase(_actnorm),
    "batchnorm": TransformCase(_batchnorm),
    "standardize": TransformCase(_standardize),
    # The box [-1, 1]^d onto the plane; a normal base pulled back integrates over the box.
    "box-logit-standardize": TransformCase(_box_logit, inside_square, grid=SQUARE_NORMAL),
    # The spline coupling with a random mask, the other two with the alternating one.
    **{
        f"coupling-{map}": TransformCase(
            partial(_coupling, map=map, random=random), conditional=True, grid=PLANE
        )
        for map, random in (("affine", False), ("spline", True), ("spline-soft-clip", False))
    },
    # Invertible residual blocks in exact mode (the full Jacobian); the unbiased
    # estimator is random and is tested in tests/transforms/test_residual.py.
    **{
        f"residual-{activation}": TransformCase(
            partial(_residual, activation=activation), conditional=True, grid=PLANE
        )
        for activation in ("lipswish", "elu")
    },
    # Couplings whose conditioner is a kernel expansion over inducing points.
    **{
        f"kernel-coupling-{map}-{kernel}": TransformCase(
            partial(_kernel_coupling, map=map, kernel=kernel), conditional=True, grid=PLANE
        )
        for map, kernel in (("affine", "rbf"), ("spline", "matern52"))
    },
    **{
        f"masked-autoregressive-{map}": TransformCase(
            partial(_autoregressive, map=map), conditional=True, grid=PLANE
        )
        for map in MAPS
    },
    "masked-autoregressive-spline-residual": TransformCase(
        partial(_autoregressive, map="spline", residual=True), conditional=True, grid=PLANE
    ),
    "inverse-autoregressive-spline": TransformCase(
        _inverse_autoregressive, conditional=True, grid=PLANE
    ),
    # Angles in [-pi, pi); the autoregressive case with the soft-clipped knots.
    "circular-coupling": TransformCase(
        _circular_coupling, angle_inputs, conditional=True, grid=TORUS
    ),
    "circular-autoregressive": TransformCase(
        _circular_autoregressive, angle_inputs, conditional=True, grid=TORUS
    ),
    "coupling-interval-spline": TransformCase(
        _interval_coupling, interval_inputs, conditional=True, grid=SQUARE
    ),
    # Each layer's tails are swept on its own; stacked, rows 10x outside the bounds
    # would compound the layers' conditioning.
    "compose": TransformCase(_composition, normal_inputs, conditional=True, grid=PLANE),
    # The flows of variational inference; Sylvester with Q square and with fewer columns.
    "planar": TransformCase(_planar, conditional=True, grid=PLANE),
    "radial": TransformCase(_radial, conditional=True, grid=PLANE),
    "sylvester": TransformCase(partial(_sylvester, full=True), conditional=True, grid=PLANE),
    "sylvester-fewer-columns": TransformCase(
        partial(_sylvester, full=False), conditional=True, grid=PLANE
    ),
}
"""One case per concrete transform (and its variants), swept by the transform contract.

A new subclass of :class:`~pushforward.transforms.base.Transform` joins the sweep by
an entry here; without one (or a reason in ``TRANSFORM_EXCLUSIONS``) the
completeness test fails, naming it.
"""

TRANSFORM_EXCLUSIONS: dict[str, str] = {}
"""Transforms the sweep cannot build, by qualified class name, each with the reason.

Empty: the wrappers ``Compose`` and ``Inverse`` have cases of their own, and
``Transform`` itself, the root of the walk, is not one of its subclasses. An
abstract base or a wrapper that cannot stand alone belongs here, with why.
"""


# -- the models' small options ---------------------------------------------------------

# Small, cheap options per registered name (features and context are the sweep's, but
# for a model of one size only, which names its features).
# The ODE family scores with a fixed-step solver here, so a density costs a few
# network passes per point; ``sample_and_log_prob`` and ``log_prob`` share it.
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "dfm": {"vocab": 3, "hidden": [16], "steps": 8, "draws": 4},
    "simplex-fm": {"vocab": 3, "hidden": [16], "steps": 8},
    "rfm": {
        "manifold": "sphere",
        "hidden": [16],
        "time_embedding": 8,
        "likelihood_solver": "rk4",
        "steps": 8,
    },
    "nsf": {"transforms": 3, "hidden": [16, 16]},
    "circular-nsf": {"transforms": 3, "hidden": [16], "bins": 4},
    # S^2 only: its features are its own, not the sweep's.
    "sphere-nsf": {"features": 3, "transforms": 4, "hidden": [16], "bins": 4},
    "nsf-ar": {"transforms": 3, "hidden": [16, 16]},
    "maf": {"transforms": 3, "hidden": [16, 16]},
    "iaf": {"transforms": 3, "hidden": [16, 16]},
    "realnvp": {"transforms": 3, "hidden": [16, 16]},
    "fm": {"hidden": [16], "time_embedding": 8, "likelihood_solver": "rk4", "steps": 8},
    "kernel-flow": {"transforms": 3, "inducing": 8},
    # features=2: logdet="auto" is the exact log-determinant, so log_prob is deterministic.
    "resflow": {"transforms": 2, "hidden": [8]},
    "ebflow": {"transforms": 2, "hidden": [16]},
    "ffjord": {
        "hidden": [16],
        "time_embedding": 8,
        "training_solver": "rk4",
        "training_steps": 4,
        "solver": "rk4",
        "likelihood_solver": "rk4",
        "steps": 8,
    },
    "reflected-fm": {
        "hidden": [16],
        "time_embedding": 8,
        "likelihood_solver": "rk4",
        "steps": 8,
        "low": -1.0,
        "high": 2.0,
    },
    "meanflow": {
        "hidden": [16],
        "time_embedding": 8,
        "likelihood_solver": "rk4",
        "likelihood_steps": 8,
    },
    # The shortcut's fixed-step likelihood needs steps from every call, which
    # sample_and_log_prob cannot pass: it keeps dopri5 (see LOG_PROB_OPTIONS).
    "shortcut": {"hidden": [16], "time_embedding": 8, "max_steps": 8},
    "consistency-fm": {"hidden": [16], "time_embedding": 8},
    "planar": {"transforms": 3, "hidden": [16]},
    "radial": {"transforms": 3, "hidden": [16]},
    "sylvester": {"transforms": 2, "hidden": [16]},
    "distilled": {"hidden": [16], "time_embedding": 8},
    # One stochastic layer of each kind, the first before any coupling layer.
    "snf": {
        "transforms": 2,
        "hidden": [16],
        "bins": 4,
        "stochastic": ["langevin", "metropolis", "hmc"],
        "leapfrog_steps": 2,
    },
}
# The same names again with other options, as cases of their own.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    f"{name}:soft-clip,random": (
        name,
        {
            **SMALL_OPTIONS[name],
            "spline_parameterization": "soft-clip",
            "last_layer_init": "random",
        },
    )
    for name in ("nsf", "nsf-ar")
}
VARIANTS["fm:cosine"] = ("fm", {**SMALL_OPTIONS["fm"], "path": "cosine"})
# Marginal tail-adaptive flows (mTAF): a Student-t base marginal beside a Gaussian one.
# df = 8 keeps the Student-t's mass beyond the density grid's [-9, 9] below 1e-4 (the
# sweep's normalisation tolerance is 1e-3; a t_3 would leave 3e-3 outside it).
for _name in ("nsf", "nsf-ar"):
    VARIANTS[f"{_name}:tails"] = (
        _name,
        {**SMALL_OPTIONS[_name], "tails": "adaptive", "tail_df": [8.0, None]},
    )
VARIANTS["ebflow:dsm"] = ("ebflow", {**SMALL_OPTIONS["ebflow"], "objective": "dsm"})
VARIANTS["ebflow:fdssm"] = ("ebflow", {**SMALL_OPTIONS["ebflow"], "objective": "fdssm"})
# Keyword options of log_prob for the density grid, where the defaults are costly.
LOG_PROB_OPTIONS: dict[str, dict[str, Any]] = {"shortcut": {"solver": "rk4", "steps": 8}}


# What ``loss`` takes beyond the data, for models not trained from data alone.
def _pairs_loss(model: Any, x: Tensor, context: Tensor | None) -> Tensor:
    # A distilled model learns from (source, end point) pairs, not from data alone;
    # the pairs' checks are the protocol's, as for any loss.
    x = model.check_input(x)
    context = model.check_context(context, x.shape[0])
    return model.regression_loss(PairedBatch(torch.zeros_like(x), x, context))


# A stochastic normalizing flow samples towards a target given at sampling time.
SWEEP_TARGET = GaussianMixtureTarget(torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), 0.8, name="sweep")


def _path_weight_loss(model: Any, x: Tensor, context: Tensor | None) -> Tensor:
    # An SNF is fitted to a target, not to data: its loss is the reverse KL of its path
    # weights against SWEEP_TARGET, with the checks a data batch gets (shape, dtype, context).
    x = model.check_input(x)
    context = model.check_context(context, x.shape[0])
    _, log_w = model.rsample_and_log_weight(x.shape[0], SWEEP_TARGET, context=context)
    return -log_w.mean()


LOSS_FUNCTIONS: dict[str, Callable[[Any, Tensor, Tensor | None], Tensor]] = {
    "distilled": _pairs_loss,
    "snf": _path_weight_loss,
}
"""How the sweep computes a model's training loss where it is not ``model.loss(x, c)``."""

SAMPLE_OPTIONS: dict[str, dict[str, Any]] = {"snf": {"target": SWEEP_TARGET}}
"""Keyword options of ``sample`` and ``rsample`` a model needs (an SNF's target), by name."""


def sample_options(case: str) -> dict[str, Any]:
    """The keywords the sweep passes to the case's ``sample`` and ``rsample``."""
    return dict(SAMPLE_OPTIONS.get(registered_name(case), {}))


def registered_name(case: str) -> str:
    """The registered name of a sweep case (a name, or a variant's ``name:options``)."""
    return VARIANTS[case][0] if case in VARIANTS else case


def small_options(case: str, features: int | None = None) -> dict[str, Any]:
    """The case's build options; a registered name without an entry fails, naming it.

    With ``features``, options of one value per feature (a tail-adaptive flow's
    ``tail_df``: a Student-t first marginal, Gaussian others) are sized to it.
    """
    if case in VARIANTS:
        options = dict(VARIANTS[case][1])
        if features is not None and "tail_df" in options:
            options["tail_df"] = [options["tail_df"][0]] + [None] * (features - 1)
        return options
    if case not in SMALL_OPTIONS:
        pytest.fail(
            f"model {case!r} is registered but has no entry in SMALL_OPTIONS of "
            f"{__name__}: add its small options so the contract sweep covers it"
        )
    return dict(SMALL_OPTIONS[case])
