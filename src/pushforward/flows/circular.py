"""The registered ``circular-nsf``: neural circular spline flows on the torus :math:`T^d`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pushforward.flows.manifold import ManifoldFlow
from pushforward.flows.options import last_layer_initialization
from pushforward.geometry import FlatTorus, make_manifold
from pushforward.options import choice, hidden_widths, positive_int, sizes
from pushforward.registry import register
from pushforward.transforms.base import Compose, Transform
from pushforward.transforms.circular import CircularAutoregressive, CircularCoupling
from pushforward.transforms.coupling import alternating_mask
from pushforward.transforms.functional.spline_parameterization import SPLINE_PARAMETERIZATIONS
from pushforward.transforms.maps import CircularRationalQuadraticSplineMap

CIRCULAR_LAYERS = ("coupling", "autoregressive")
CIRCULAR_NSF_TRAIN_DEFAULTS = {"lr": 2e-3}
"""The peak learning rate ``pushforward train`` uses for ``circular-nsf``."""


def _torus(manifold: str, features: int) -> FlatTorus:
    space = make_manifold(manifold, columns=features)
    if not isinstance(space, FlatTorus):
        raise ValueError(
            f"circular-nsf models points of a torus (angles), not of the {space.spec()} "
            "manifold; use sphere-nsf for S^2, or rfm"
        )
    return space


@register("circular-nsf", train=CIRCULAR_NSF_TRAIN_DEFAULTS, data="points")
def circular_nsf(
    features: int,
    context: int = 0,
    manifold: str = "torus",
    transforms: int = 4,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    layers: str = "coupling",
    rotation: bool = True,
    activation: str = "relu",
    spline_parameterization: str = "minimum",
    last_layer_init: str = "zero",
) -> ManifoldFlow:
    r"""Neural circular spline flow on the torus :math:`T^d = [-\pi, \pi)^d`.

    The uniform distribution of the torus, :math:`\log p = -d \log 2\pi`, pushed through
    ``transforms`` layers of circle diffeomorphisms: each angle goes through a
    rational-quadratic spline on :math:`[-\pi, \pi]` whose end derivatives agree (so the
    map and its derivative are continuous across the seam) and a rotation, both given
    by a conditioner that sees the other angles as their cosines and sines. The density
    is exact, w.r.t. Lebesgue measure on :math:`[-\pi, \pi)^d`, and continuous across
    every seam; inputs may be any reals (they are wrapped) and samples lie in
    :math:`[-\pi, \pi)`. For :math:`d = 1` each layer's spline is a learned constant (or
    a function of the context).

    References:
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
        Durkan et al. (2019), Neural Spline Flows.

    Args:
        features: the number of angles ``d``.
        context: context size (0 for unconditional).
        manifold: ``torus`` (its dimension comes from ``features``); given so a run on a
            built-in set on another manifold is refused by name.
        transforms: number of layers.
        hidden: conditioner hidden widths.
        bins: spline bins ``K``.
        layers: ``coupling`` (half the angles given the others, alternating; density and
            sampling in one pass) or ``autoregressive`` (each angle given the earlier
            ones, orders alternating; sampling in ``d`` passes).
        rotation: follow every spline by a learned rotation (the spline alone fixes
            :math:`\pm\pi`).
        activation: hidden nonlinearity.
        spline_parameterization: ``minimum`` or ``soft-clip`` (as in ``nsf``).
        last_layer_init: ``zero`` (start at the identity) or ``random``.

    Example:
        >>> import math, torch, pushforward
        >>> model = pushforward.build("circular-nsf", features=2, hidden=[16])
        >>> x = model.sample(4)
        >>> bool(x.min() >= -math.pi and x.max() < math.pi)
        True
        >>> model.log_prob(x).detach()  # the identity at the start: the uniform density
        tensor([-3.6758, -3.6758, -3.6758, -3.6758])
    """
    features, context = sizes(features, context)
    torus = _torus(manifold, features)
    transforms = positive_int("transforms", transforms)
    hidden = hidden_widths(hidden)
    layers = choice("layers", layers, CIRCULAR_LAYERS)
    initialization = last_layer_initialization(last_layer_init)
    bins = positive_int("bins", bins)
    parameterization = choice(
        "spline_parameterization", spline_parameterization, SPLINE_PARAMETERIZATIONS
    )
    stack: list[Transform] = []
    for index in range(transforms):
        spline = CircularRationalQuadraticSplineMap(
            bins, rotation=bool(rotation), parameterization=parameterization
        )
        if layers == "coupling":
            coupling = CircularCoupling(
                features,
                spline,
                alternating_mask(features, parity=index % 2),
                hidden=hidden,
                context=context,
                activation=activation,
            )
            coupling.conditioner.initialize_last_layer(initialization)
            stack.append(coupling)
        else:
            order = torch.arange(features)
            autoregressive = CircularAutoregressive(
                features,
                spline,
                hidden=hidden,
                context=context,
                order=order.flip(0) if index % 2 else order,
                activation=activation,
            )
            autoregressive.made.initialize_last_layer(initialization)
            stack.append(autoregressive)
    return ManifoldFlow(Compose(stack), torus, context)
