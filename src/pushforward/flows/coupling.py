"""Ready-made coupling flows: the coupling neural spline flow and RealNVP."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pushforward.distributions import make_base
from pushforward.flows.flow import Flow
from pushforward.flows.options import last_layer_initialization, spline_options
from pushforward.flows.tails import tail_adaptive_base
from pushforward.options import choice, hidden_widths, positive_int, sizes
from pushforward.registry import register
from pushforward.transforms.base import Compose, Transform
from pushforward.transforms.coupling import (
    ConditionerFactory,
    Coupling,
    alternating_mask,
    random_mask,
)
from pushforward.transforms.linear import LULinear
from pushforward.transforms.maps import AffineMap, ElementwiseMap, RationalQuadraticSplineMap
from pushforward.transforms.normalization import ActNorm, BatchNorm

MASKS = ("alternate", "random")
LINEARS = ("none", "lu")
NORMALIZATIONS = ("none", "actnorm", "batchnorm")


def coupling_layers(
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    element_map: type[ElementwiseMap],
    map_options: dict,
    mask: str,
    linear: str,
    normalization: str,
    activation: str,
    last_layer: str = "zero",
    conditioner: ConditionerFactory | None = None,
) -> Transform:
    """The layers of a coupling flow: per layer an optional normalisation and LU-linear
    layer, then a coupling whose conditioner is an MLP of ``hidden`` widths, or the
    network ``conditioner`` builds (``hidden`` and ``activation`` then unused)."""
    transforms = positive_int("transforms", transforms)
    last_layer = last_layer_initialization(last_layer)
    hidden = hidden_widths(hidden) if conditioner is None else tuple(hidden)
    mask = choice("mask", mask, MASKS)
    linear = choice("linear", linear, LINEARS)
    normalization = choice("normalization", normalization, NORMALIZATIONS)
    generator = torch.Generator().manual_seed(features * 104729 + transforms)
    layers: list[Transform] = []
    for index in range(transforms):
        if normalization == "actnorm":
            layers.append(ActNorm(features))
        elif normalization == "batchnorm" and index > 0:
            layers.append(BatchNorm(features))
        if linear == "lu":
            layers.append(LULinear(features))
        if mask == "random":
            layer_mask = random_mask(features, generator=generator)
        else:
            layer_mask = alternating_mask(features, parity=index % 2)
        coupling = Coupling(
            features,
            element_map(**map_options),
            layer_mask,
            hidden=hidden,
            context=context,
            activation=activation,
            conditioner=conditioner,
        )
        coupling.conditioner.initialize_last_layer(last_layer)
        layers.append(coupling)
    return Compose(layers)


@register("nsf")
def nsf(
    features: int,
    context: int = 0,
    transforms: int = 5,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    tail_bound: float = 5.0,
    base: str = "normal",
    mask: str = "alternate",
    linear: str = "none",
    normalization: str = "none",
    activation: str = "relu",
    spline_parameterization: str = "minimum",
    last_layer_init: str = "zero",
    tails: str = "gaussian",
    tail_df: Sequence[float | None] | None = None,
) -> Flow:
    r"""Coupling neural spline flow: rational-quadratic spline coupling layers.

    Each layer leaves half of the features unchanged and maps the other half
    through monotonic rational-quadratic splines (identity outside
    ``[-tail_bound, tail_bound]``) whose knots are an MLP of the unchanged half
    and the context. Density and sampling both take one pass.

    References:
        Durkan et al. (2019), Neural Spline Flows;
        Dinh et al. (2017), Density estimation using Real NVP;
        Rozet et al. (2022), Zuko: Normalizing flows in PyTorch (``"soft-clip"``);
        Laszkiewicz, Lederer & Fischer (2022), Marginal Tail-Adaptive Normalizing
        Flows (``tails="adaptive"``).

    Args:
        features: event size ``D``.
        context: context size (0 for unconditional).
        transforms: number of coupling layers.
        hidden: conditioner hidden widths.
        bins: spline bins ``K``.
        tail_bound: the spline acts on ``[-B, B]``; data should be standardised.
        base: base distribution name.
        mask: ``alternate`` (even/odd features in turn) or ``random`` halves.
        linear: ``lu`` inserts an LU-decomposed invertible linear layer before each coupling.
        normalization: ``actnorm`` or ``batchnorm`` layers between couplings.
        activation: hidden nonlinearity.
        spline_parameterization: how the conditioner's raw outputs become knots:
            ``"minimum"`` (minimum bin sizes and derivative, Durkan et al. 2019) or
            ``"soft-clip"`` (soft-clipped, exponential derivatives, as in zuko); see
            :func:`pushforward.transforms.functional.spline_parameterization.spline_knots`.
        last_layer_init: the conditioners' output layers start at ``"zero"`` (the
            flow starts at the identity) or ``"random"`` (PyTorch's default, as in zuko).
        tails: ``"gaussian"`` (the ``base`` as it is) or ``"adaptive"`` (mTAF): the base
            is :class:`~pushforward.flows.tails.MarginalTailBase`, Student-t marginals
            with the tail indices of the heavy-tailed data marginals as degrees of
            freedom and Gaussian ones for the light-tailed. The splines keep each
            marginal's tail beyond ``tail_bound``, so the model's marginals get the
            data's tails. The indices are estimated, in the model's units, by the
            data-dependent initialisation (a Run's whole training split; before
            :func:`~pushforward.fit`, call ``model.initialize(data)`` so the estimate
            sees more than the first batch). Needs ``base="normal"`` and
            ``linear="none"``. A Run on unconditional vector data sets it when no
            ``tails``, ``base``, ``linear`` or ``tail_df`` is given
            (``bench/density_quality.py``).
        tail_df: with ``tails="adaptive"``, the degrees of freedom given instead of
            estimated: one per feature, ``None`` for a Gaussian marginal.
    """
    features, context = sizes(features, context)
    options = spline_options(bins, tail_bound, spline_parameterization)
    tail_base = tail_adaptive_base(tails, tail_df, features, base, linear)
    layers = coupling_layers(
        features,
        context,
        transforms,
        hidden,
        RationalQuadraticSplineMap,
        options,
        mask,
        linear,
        normalization,
        activation,
        last_layer_init,
    )
    return Flow(layers, make_base(base, (features,)) if tail_base is None else tail_base, context)


@register("realnvp")
def realnvp(
    features: int,
    context: int = 0,
    transforms: int = 8,
    hidden: Sequence[int] = (64, 64),
    base: str = "normal",
    mask: str = "alternate",
    linear: str = "none",
    normalization: str = "actnorm",
    activation: str = "relu",
) -> Flow:
    r"""RealNVP: affine coupling layers :math:`y_B = x_B e^{s(x_A)} + t(x_A)`, :math:`y_A = x_A`.

    References:
        Dinh et al. (2017), Density estimation using Real NVP;
        Kingma & Dhariwal (2018), Glow (ActNorm, invertible 1x1 / LU linear layers).

    Args: as :func:`nsf`, without spline options; ``normalization`` defaults to ActNorm.
    """
    features, context = sizes(features, context)
    layers = coupling_layers(
        features,
        context,
        transforms,
        hidden,
        AffineMap,
        {},
        mask,
        linear,
        normalization,
        activation,
    )
    return Flow(layers, make_base(base, (features,)), context)
