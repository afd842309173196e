"""The registered ``sphere-nsf``: a cylindrical neural spline flow on :math:`S^2`."""

from __future__ import annotations

from collections.abc import Sequence

from pushforward.flows.manifold import CylindricalSphereFlow
from pushforward.flows.options import last_layer_initialization
from pushforward.geometry import Sphere, make_manifold
from pushforward.options import choice, hidden_widths, positive_int, sizes
from pushforward.registry import register
from pushforward.transforms.base import Compose, Transform
from pushforward.transforms.circular import CircularCoupling
from pushforward.transforms.coupling import Coupling
from pushforward.transforms.functional.spline_parameterization import SPLINE_PARAMETERIZATIONS
from pushforward.transforms.maps import (
    CircularRationalQuadraticSplineMap,
    IntervalRationalQuadraticSplineMap,
)

SPHERE_NSF_TRAIN_DEFAULTS = {"lr": 2e-3}
"""The peak learning rate ``pushforward train`` uses for ``sphere-nsf``."""
# The cylindrical coordinates' columns: the height z, then the longitude phi.
HEIGHT_THEN_LONGITUDE = ([False, True], [True, False])


def _two_sphere(manifold: str, features: int) -> Sphere:
    space = make_manifold(manifold, columns=features)
    if not isinstance(space, Sphere) or space.dim != 2:
        raise ValueError(
            f"sphere-nsf models points of the sphere S^2 (unit vectors of R^3), not of the "
            f"{space.spec()} manifold; use circular-nsf for a torus, or rfm"
        )
    return space


@register("sphere-nsf", train=SPHERE_NSF_TRAIN_DEFAULTS, data="points")
def sphere_nsf(
    features: int,
    context: int = 0,
    manifold: str = "sphere",
    normalize: bool = False,
    transforms: int = 6,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    activation: str = "relu",
    spline_parameterization: str = "minimum",
    last_layer_init: str = "zero",
) -> CylindricalSphereFlow:
    r"""A neural spline flow on :math:`S^2` by the cylindrical construction of Rezende et
    al. (2020).

    A unit vector is its height and longitude, :math:`(z, \phi) = (x_3,
    \operatorname{atan2}(x_2, x_1))`, a map to the cylinder :math:`[-1, 1] \times [-\pi,
    \pi)` that preserves area (:math:`dA = dz\,d\phi`), so the uniform sphere is the
    uniform cylinder and ``log_prob`` is the cylinder flow's log-density with no
    Jacobian term for the coordinates (see
    :class:`~pushforward.flows.manifold.CylindricalSphereFlow`). The layers alternate: a
    circular rational-quadratic spline and rotation of :math:`\phi` given :math:`z` (and
    the context), then a rational-quadratic spline of :math:`[-1, 1]` onto itself, with
    learned end slopes, of :math:`z` given :math:`(\cos\phi, \sin\phi)`. The density is
    exact, w.r.t. the surface area (uniform: :math:`-\log 4\pi`), and continuous across
    the seam :math:`\phi = \pm\pi`; the poles, a set of measure zero, give finite values
    and gradients.

    References:
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
        Durkan et al. (2019), Neural Spline Flows.

    Args:
        features: 3 (unit vectors :math:`(x, y, z)` of :math:`S^2`).
        context: context size (0 for unconditional).
        manifold: ``sphere`` (given so a run on a built-in set elsewhere is refused).
        normalize: take the direction of rows that are not unit vectors instead of
            refusing them (rows must otherwise be unit vectors to 1e-4).
        transforms: number of layers, alternating longitude and height (even is best).
        hidden: conditioner hidden widths.
        bins: spline bins ``K``.
        activation: hidden nonlinearity.
        spline_parameterization: ``minimum`` or ``soft-clip`` (as in ``nsf``).
        last_layer_init: ``zero`` (start at the identity) or ``random``.

    Example:
        >>> import torch, pushforward
        >>> model = pushforward.build("sphere-nsf", features=3, hidden=[16])
        >>> x = model.sample(3)
        >>> bool(torch.allclose(x.norm(dim=1), torch.ones(3)))
        True
        >>> model.log_prob(x).detach()  # the identity at the start: the uniform density
        tensor([-2.5310, -2.5310, -2.5310])
    """
    features, context = sizes(features, context)
    _two_sphere(manifold, features)
    transforms = positive_int("transforms", transforms)
    hidden = hidden_widths(hidden)
    initialization = last_layer_initialization(last_layer_init)
    bins = positive_int("bins", bins)
    parameterization = choice(
        "spline_parameterization", spline_parameterization, SPLINE_PARAMETERIZATIONS
    )
    longitude_mask, height_mask = HEIGHT_THEN_LONGITUDE
    stack: list[Transform] = []
    for index in range(transforms):
        layer: Coupling
        if index % 2 == 0:
            # The longitude given the height: the conditioner reads z itself.
            layer = Coupling(
                2,
                CircularRationalQuadraticSplineMap(bins, parameterization=parameterization),
                longitude_mask,
                hidden=hidden,
                context=context,
                activation=activation,
            )
        else:
            # The height given the longitude, seen as (cos phi, sin phi).
            layer = CircularCoupling(
                2,
                IntervalRationalQuadraticSplineMap(
                    bins, bound=1.0, parameterization=parameterization
                ),
                height_mask,
                hidden=hidden,
                context=context,
                activation=activation,
            )
        layer.conditioner.initialize_last_layer(initialization)
        stack.append(layer)
    return CylindricalSphereFlow(Compose(stack), context, normalize=bool(normalize))
